//! Sandboxes are told apart by their socket alone: one sandbox's rules never serve
//! another's connections, and removing a sandbox ends everything it had open.

use std::os::unix::fs::FileTypeExt;

use super::*;

#[test]
fn a_sandbox_without_rules_cannot_use_another_sandbox_s_rules() {
    let net = TestNet::new();
    let up = Upstream::http(Some(&net), "a", net.a);
    let mut h = Harness::new(config(resolver(&[("api.test", &[net.a])])));
    let allowed = h.sandbox(rules(&[&format!("api.test:{}", up.port)]));
    let empty = h.sandbox(Policy::deny_all());
    let url = format!("http://api.test:{}/", up.port);

    assert_eq!(curl(&empty.proxy_url(), &url, &[]).status, 403);
    assert!(!empty.decided().allowed);
    allowed.quiet();

    assert_eq!(curl(&allowed.proxy_url(), &url, &[]).status, 200);
    assert!(allowed.decided().allowed);
    empty.quiet();

    for sb in [&allowed, &empty] {
        let meta = fs::metadata(&sb.socket).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o666);
        assert_eq!(sb.socket.file_name().unwrap(), nanoclaw_egress::SOCKET_NAME);
    }
    assert_ne!(allowed.socket, empty.socket);
}

#[test]
fn removing_a_sandbox_closes_its_connections_and_its_socket() {
    let silent = Upstream::silent(None, loopback());
    let mut h = Harness::new(config(resolver(&[])));
    let mut gone = h.sandbox(rules(&[&format!("127.0.0.1:{}", silent.port)]));
    let stays = h.sandbox(rules(&[&format!("127.0.0.1:{}", silent.port)]));

    let mut tunnels = Vec::new();
    for sb in [&gone, &stays] {
        let mut s = sb.connect();
        write!(s, "CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", silent.port).unwrap();
        let mut established = [0u8; 39];
        s.read_exact(&mut established).unwrap();
        assert!(established.starts_with(b"HTTP/1.1 200"));
        tunnels.push(s);
    }
    let opened = gone.decided();
    assert!(opened.allowed);
    assert!(stays.decided().allowed);

    let start = Instant::now();
    h.remove(&mut gone);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let closed = gone.next();
    assert_eq!(
        (closed.phase, closed.connection),
        (Phase::Closed, opened.connection)
    );
    assert_eq!(closed.reason, "sandbox removed");
    let mut rest = Vec::new();
    assert_eq!(
        tunnels[0].read_to_end(&mut rest).unwrap(),
        0,
        "the tunnel is closed"
    );
    assert!(!gone.socket.exists());

    // The other sandbox's tunnel is still open.
    tunnels[1]
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let err = tunnels[1].read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    stays.quiet();
}

#[test]
fn one_directory_holds_one_sandbox_socket() {
    let proxy = Proxy::start(config(resolver(&[]))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = std::sync::mpsc::sync_channel(16);
    let first = proxy
        .add_sandbox(dir.path(), Policy::deny_all(), tx.clone())
        .unwrap();
    let second = proxy.add_sandbox(dir.path(), Policy::deny_all(), tx);
    let message = second.unwrap_err().to_string();
    assert!(message.starts_with("bind the egress socket "), "{message}");
    assert!(
        first.socket().exists(),
        "a failed add leaves the first socket alone"
    );
    proxy.remove_sandbox(first).unwrap();
    proxy.shutdown().unwrap();
}
