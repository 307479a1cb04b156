//! Egress through the docker backend: the container keeps `NetworkMode: none`, and its
//! only way out is the host proxy's socket, served inside by nanoclaw's static bridge in
//! front of the command, exactly as in a native sandbox.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use nanoclaw_egress::{Decision, Policy, Proxy, ProxyConfig};
use nanoclaw_spec::{EgressProxy, EgressRule, Network};

use super::support::{backend, scratch_dir, Sandbox};

/// A one-shot HTTP upstream on the host's loopback that answers "hello".
fn upstream() -> (u16, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = vec![0u8; 4096];
        let n = stream.read(&mut request).unwrap();
        stream
            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
            .unwrap();
        String::from_utf8_lossy(&request[..n]).into_owned()
    });
    (port, served)
}

/// Runs `command` in a container allowed to reach exactly `allowed`, and returns the run
/// and every decision the proxy made.
fn run_with_egress(allowed: u16, command: &[&str]) -> (super::support::Run, Vec<Decision>) {
    let proxy = Proxy::start(ProxyConfig::default()).unwrap();
    let dir = scratch_dir();
    let rules = vec![EgressRule {
        host: "127.0.0.1".into(),
        port: allowed,
    }];
    let (events, decisions) = mpsc::sync_channel(1024);
    let endpoint = proxy
        .add_sandbox(dir.path(), Policy::new(&rules).unwrap(), events)
        .unwrap();
    let path = EgressProxy {
        socket: endpoint.socket().to_path_buf(),
        port: EgressProxy::DEFAULT_PORT,
    };
    let mut sandbox = Sandbox::new();
    sandbox.spec(|spec| {
        for (key, value) in path.env() {
            spec.set_env(&key, &value);
        }
        spec.network = Network::Egress(rules.clone());
        spec.egress_proxy = Some(path.clone());
    });
    let run = sandbox.run_with(backend(), command);
    proxy.remove_sandbox(endpoint).unwrap();
    proxy.shutdown().unwrap();
    (run, decisions.try_iter().collect())
}

#[test]
fn an_allowed_destination_is_reached_through_the_bridge_and_the_proxy() {
    let (port, served) = upstream();
    let url = format!("http://127.0.0.1:{port}/through");
    let (run, decisions) = run_with_egress(port, &["busybox", "wget", "-q", "-O", "-", &url]);
    assert_eq!(run.outcome().exit_code, Some(0), "{}", run.context());
    assert_eq!(run.stdout(), "hello\n");
    assert!(served.join().unwrap().contains("GET /through"));
    assert!(
        decisions.iter().any(|d| d.allowed && d.port == port),
        "{decisions:?}"
    );
}

#[test]
fn an_unlisted_destination_and_a_direct_connection_are_refused() {
    let (port, _served) = upstream();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let script = format!(
        "busybox wget -q -O - http://127.0.0.1:{other_port}/ ; echo proxied=$?; \
         busybox wget -q -O - -Y off http://127.0.0.1:{port}/ ; echo direct=$?"
    );
    let (run, decisions) = run_with_egress(port, &["sh", "-c", &script]);
    let out = run.stdout();
    assert!(
        out.contains("proxied=1") && out.contains("direct=1"),
        "{}",
        run.context()
    );
    assert!(
        decisions.iter().any(|d| !d.allowed && d.port == other_port),
        "{decisions:?}"
    );
}

#[test]
fn egress_without_its_proxy_socket_is_refused_by_name() {
    let mut sandbox = Sandbox::new();
    sandbox.spec(|spec| {
        spec.network = Network::Egress(vec![EgressRule {
            host: "127.0.0.1".into(),
            port: 9,
        }]);
        spec.egress_proxy = Some(EgressProxy {
            socket: "/nonexistent.sock".into(),
            port: 3128,
        });
    });
    let run = sandbox.run(&["true"]);
    let error = run.result.as_ref().expect_err("no proxy socket: refused");
    assert!(error.to_string().contains("/nonexistent.sock"), "{error}");
}
