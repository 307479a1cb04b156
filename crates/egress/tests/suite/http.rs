//! Absolute-form plain HTTP: allowed, refused, Host header mismatches, body framing and
//! per-rule method and path limits.

use nanoclaw_egress::{HttpLimits, Protocol};
use nanoclaw_spec::EgressRule;

use super::*;

fn api_net() -> (TestNet, Upstream) {
    let net = TestNet::new();
    let upstream = Upstream::http(Some(&net), "a", net.a);
    (net, upstream)
}

#[test]
fn allowed_plain_http_reaches_the_named_upstream_and_is_recorded() {
    let (net, up) = api_net();
    let mut h = Harness::new(config(resolver(&[("api.test", &[net.a])])));
    let sb = h.sandbox(rules(&[&format!("api.test:{}", up.port)]));

    let got = curl(
        &sb.proxy_url(),
        &format!("http://API.test:{}/hello?x=1", up.port),
        &[],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert!(
        got.body
            .starts_with("upstream=a method=GET path=/hello?x=1 "),
        "{got:?}"
    );
    assert!(
        got.body.contains(&format!("host=api.test:{}", up.port)),
        "{got:?}"
    );

    let d = sb.decided();
    assert!(d.allowed, "{d:?}");
    assert_eq!(
        (d.protocol, d.host.as_str(), d.port),
        (Protocol::Http, "api.test", up.port)
    );
    assert_eq!(
        (d.resolved, d.method.as_deref()),
        (Some(net.a), Some("GET"))
    );
    assert_eq!(d.reason, format!("allowed by api.test:{}", up.port));
    let closed = sb.closed(d.connection);
    assert!(
        closed.bytes_up > 0 && closed.bytes_down > got.body.len() as u64,
        "{closed:?}"
    );
}

#[test]
fn python_urllib_gets_and_posts_through_the_proxy() {
    let (net, up) = api_net();
    let mut h = Harness::new(config(resolver(&[("api.test", &[net.a])])));
    let sb = h.sandbox(rules(&[&format!("api.test:{}", up.port)]));
    let out = python(
        "import sys, urllib.request as u\n\
         o = u.build_opener(u.ProxyHandler({'http': sys.argv[1]}))\n\
         print(o.open(sys.argv[2], timeout=10).read().decode(), end='')\n\
         print(o.open(u.Request(sys.argv[2], data=b'payload'), timeout=10).read().decode(), end='')",
        &[&sb.proxy_url(), &format!("http://api.test:{}/py", up.port)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("upstream=a method=GET path=/py"),
        "{stdout}"
    );
    assert!(stdout.contains("upstream=a method=POST path=/py") && stdout.contains("body=payload"));
}

#[test]
fn unlisted_hosts_and_ports_get_403_and_a_denied_record() {
    let (net, up) = api_net();
    let mut h = Harness::new(config(resolver(&[
        ("api.test", &[net.a]),
        ("other.test", &[net.b]),
    ])));
    let sb = h.sandbox(rules(&[&format!("api.test:{}", up.port)]));

    for authority in [
        format!("other.test:{}", up.port),
        format!("api.test:{}", up.port + 1),
    ] {
        let got = curl(&sb.proxy_url(), &format!("http://{authority}/"), &[]);
        assert_eq!(got.status, 403, "{got:?}");
        assert_eq!(
            got.body,
            format!("nanoclaw egress: {authority} is not in the allow list\n")
        );
        let d = sb.decided();
        assert!(!d.allowed);
        assert_eq!(format!("{}:{}", d.host, d.port), authority);
        assert_eq!(d.resolved, None);
        assert_eq!(d.reason, format!("{authority} is not in the allow list"));
    }
    sb.quiet();
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}

#[test]
fn a_host_header_naming_another_host_is_refused() {
    let (net, up) = api_net();
    let mut h = Harness::new(config(resolver(&[("api.test", &[net.a])])));
    let sb = h.sandbox(rules(&[&format!("api.test:{}", up.port)]));
    let url = format!("http://api.test:{}/", up.port);

    let got = curl(&sb.proxy_url(), &url, &["-H", "Host: other.test"]);
    assert_eq!(got.status, 403, "{got:?}");
    assert!(
        got.body
            .contains("host header other.test:80 does not match"),
        "{got:?}"
    );
    let d = sb.decided();
    assert!(!d.allowed && d.reason.contains("does not match"), "{d:?}");
    assert_eq!(d.host, "api.test");

    let raw = format!("GET {url} HTTP/1.1\r\nHost: other.test:{}\r\n\r\n", up.port);
    assert!(exchange(&sb, raw.as_bytes()).starts_with("HTTP/1.1 403 Forbidden\r\n"));
    assert!(!sb.decided().allowed);
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}

#[test]
fn only_the_framed_body_reaches_the_upstream() {
    let (net, up) = api_net();
    let mut h = Harness::new(config(resolver(&[("api.test", &[net.a])])));
    let sb = h.sandbox(rules(&[&format!("api.test:{}", up.port)]));
    let authority = format!("api.test:{}", up.port);
    // A pipelined second request after the body must not reach the upstream: each client
    // connection carries one request, which is the one that was checked.
    let raw = format!(
        "POST http://{authority}/one HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 5\r\n\r\n\
         helloDELETE http://{authority}/two HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    );
    let answer = exchange(&sb, raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("method=POST path=/one") && answer.contains("body=hello"));
    assert!(!answer.contains("/two"), "{answer}");
    let seen = up.seen_at_least(1);
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[test]
fn http_limits_restrict_methods_and_paths() {
    let (net, up) = api_net();
    let mut h = Harness::new(config(resolver(&[("api.test", &[net.a])])));
    let mut policy = Policy::deny_all();
    let limits = HttpLimits {
        methods: vec!["GET".into(), "HEAD".into()],
        path_prefixes: vec!["/simple/".into()],
    };
    let rule = EgressRule {
        host: "api.test".into(),
        port: up.port,
    };
    policy.allow_http(&rule, limits).unwrap();
    let sb = h.sandbox(policy);
    let base = format!("http://api.test:{}", up.port);
    let proxy = sb.proxy_url();

    assert_eq!(
        curl(&proxy, &format!("{base}/simple/requests/"), &[]).status,
        200
    );
    assert!(sb.decided().allowed);
    for (url, extra, why) in [
        (
            format!("{base}/simple/"),
            &["-X", "POST"][..],
            "method not allowed",
        ),
        (
            format!("{base}/admin"),
            &[][..],
            "not under an allowed prefix",
        ),
        (
            format!("{base}/simple/../admin"),
            &["--path-as-is"][..],
            "dot segments",
        ),
        (
            format!("https://api.test:{}/simple/", up.port),
            &[][..],
            "plain http only",
        ),
    ] {
        let got = curl(&proxy, &url, extra);
        assert_eq!(got.status, 403, "{url}: {got:?}");
        let d = sb.decided();
        assert!(!d.allowed && d.reason.contains(why), "{url}: {d:?}");
    }
    let seen = up.seen_at_least(1);
    assert_eq!(seen.len(), 1, "{seen:?}");
}
