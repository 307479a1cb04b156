//! HTTP CONNECT tunnels for TLS: allowed with real clients, and a TLS SNI or inner Host
//! header naming another host cannot change where the bytes go.

use nanoclaw_egress::Protocol;

use super::*;

#[test]
fn connect_tls_with_curl_and_python() {
    let net = TestNet::new();
    let cert = Cert::new();
    let up = Upstream::tls(Some(&net), "a", net.a, &cert);
    let mut h = Harness::new(config(resolver(&[("api.test", &[net.a])])));
    let sb = h.sandbox(rules(&[&format!("api.test:{}", up.port)]));
    let url = format!("https://api.test:{}/secure", up.port);

    let got = curl(
        &sb.proxy_url(),
        &url,
        &["--cacert", cert.cert.to_str().unwrap()],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert!(
        got.body.starts_with("upstream=a method=GET path=/secure"),
        "{got:?}"
    );
    assert!(got.body.contains("sni=api.test"), "{got:?}");
    let d = sb.decided();
    assert!(d.allowed, "{d:?}");
    assert_eq!(
        (d.protocol, d.resolved, d.method.clone()),
        (Protocol::Connect, Some(net.a), None)
    );
    let closed = sb.closed(d.connection);
    assert!(
        closed.bytes_up > 200 && closed.bytes_down > 200,
        "{closed:?}"
    );

    let out = python(
        "import ssl, sys, urllib.request as u\n\
         c = ssl.create_default_context(cafile=sys.argv[3])\n\
         o = u.build_opener(u.ProxyHandler({'https': sys.argv[1]}), u.HTTPSHandler(context=c))\n\
         print(o.open(sys.argv[2], timeout=10).read().decode(), end='')",
        &[&sb.proxy_url(), &url, cert.cert.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("upstream=a method=GET path=/secure"));
}

#[test]
fn sni_and_host_naming_another_host_reach_only_the_connect_target() {
    let net = TestNet::new();
    let cert = Cert::new();
    let a = Upstream::tls(Some(&net), "a", net.a, &cert);
    let b = Upstream::tls(Some(&net), "b", net.b, &cert);
    let mut h = Harness::new(config(resolver(&[
        ("api.test", &[net.a]),
        ("other.test", &[net.b]),
    ])));
    let sb = h.sandbox(rules(&[&format!("api.test:{}", a.port)]));

    // CONNECT to the allowed name, then speak TLS with SNI and Host for the other one.
    let out = python(
        "import socket, ssl, sys\n\
         proxy_port, connect, other, cafile = sys.argv[1:5]\n\
         s = socket.create_connection(('127.0.0.1', int(proxy_port)), timeout=10)\n\
         s.sendall(f'CONNECT {connect} HTTP/1.1\\r\\nHost: {other}\\r\\n\\r\\n'.encode())\n\
         head = b''\n\
         while not head.endswith(b'\\r\\n\\r\\n'): head += s.recv(1)\n\
         assert head.startswith(b'HTTP/1.1 200'), head\n\
         c = ssl.create_default_context(cafile=cafile)\n\
         t = c.wrap_socket(s, server_hostname=other.split(':')[0])\n\
         t.sendall(f'GET /x HTTP/1.1\\r\\nHost: {other}\\r\\nConnection: close\\r\\n\\r\\n'.encode())\n\
         data = b''\n\
         while chunk := t.recv(4096): data += chunk\n\
         print(data.decode())",
        &[
            &sb.port.to_string(),
            &format!("api.test:{}", a.port),
            &format!("other.test:{}", b.port),
            cert.cert.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("upstream=a "), "{stdout}");
    assert!(
        stdout.contains(&format!("host=other.test:{} sni=other.test", b.port)),
        "{stdout}"
    );
    assert!(b.seen().is_empty(), "{:?}", b.seen());
    let d = sb.decided();
    assert!(
        d.allowed && d.host == "api.test" && d.resolved == Some(net.a),
        "{d:?}"
    );

    // And CONNECT to the other name itself is refused.
    let got = curl(
        &sb.proxy_url(),
        &format!("https://other.test:{}/", b.port),
        &["--cacert", cert.cert.to_str().unwrap()],
    );
    assert_eq!(got.status, 403, "{got:?}");
    assert!(b.seen().is_empty(), "{:?}", b.seen());
}
