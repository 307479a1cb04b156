//! SOCKS5: host names resolved by the proxy, IP literals, and refusals with their reply
//! codes.

use nanoclaw_egress::Protocol;

use super::*;

/// Sends a SOCKS5 greeting and CONNECT for `address` (ATYP byte and address bytes) and
/// `port`; returns the reply code and the connection.
fn socks_connect(sb: &Sandbox, address: &[u8], port: u16) -> (u8, UnixStream) {
    let mut s = sb.connect();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).unwrap();
    assert_eq!(choice, [5, 0]);
    let mut request = vec![5, 1, 0];
    request.extend_from_slice(address);
    request.extend_from_slice(&port.to_be_bytes());
    s.write_all(&request).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[4..], [0; 6], "the bound address is never revealed");
    (reply[1], s)
}

fn name(host: &str) -> Vec<u8> {
    let mut v = vec![3, host.len() as u8];
    v.extend_from_slice(host.as_bytes());
    v
}

#[test]
fn socks5_with_host_names_through_curl() {
    let net = TestNet::new();
    let up = Upstream::http(Some(&net), "a", net.a);
    let mut h = Harness::new(config(resolver(&[("api.test", &[net.a])])));
    let sb = h.sandbox(rules(&[&format!("api.test:{}", up.port)]));
    let proxy = format!("socks5h://127.0.0.1:{}", sb.port);

    let got = curl(&proxy, &format!("http://api.test:{}/socks", up.port), &[]);
    assert_eq!(got.status, 200, "{got:?}");
    assert!(
        got.body.starts_with("upstream=a method=GET path=/socks"),
        "{got:?}"
    );
    let d = sb.decided();
    assert!(
        d.allowed && d.protocol == Protocol::Socks5 && d.resolved == Some(net.a),
        "{d:?}"
    );

    let got = curl(&proxy, &format!("http://other.test:{}/", up.port), &[]);
    assert_ne!(got.exit, 0, "{got:?}");
    let d = sb.decided();
    assert!(
        !d.allowed && d.reason.contains("not in the allow list"),
        "{d:?}"
    );
}

#[test]
fn socks5_refusals_have_their_reply_codes_and_literals_work() {
    let up = Upstream::http(None, "local", loopback());
    let mut h = Harness::new(config(resolver(&[])));
    let sb = h.sandbox(rules(&["gone.test:80", &format!("127.0.0.1:{}", up.port)]));

    assert_eq!(socks_connect(&sb, &name("other.test"), 80).0, 0x02);
    assert!(sb.decided().reason.contains("not in the allow list"));
    assert_eq!(socks_connect(&sb, &name("gone.test"), 80).0, 0x04);
    assert!(sb.decided().reason.contains("cannot resolve"));
    let mut v6 = vec![4];
    v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    assert_eq!(socks_connect(&sb, &v6, up.port).0, 0x02);
    assert_eq!(sb.decided().host, "::1");

    let (code, mut s) = socks_connect(&sb, &[1, 127, 0, 0, 1], up.port);
    assert_eq!(code, 0);
    s.write_all(b"GET /lit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.contains("upstream=local method=GET path=/lit"),
        "{answer}"
    );
    let d = sb.decided();
    assert!(d.allowed && d.protocol == Protocol::Socks5, "{d:?}");
}
