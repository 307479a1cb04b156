//! Address screening: names that resolve to loopback, private or metadata addresses, or
//! to any address of this host, are refused unless the rule is the exact IP literal; of several addresses only a screened
//! one is dialled; failures to resolve or connect are answered and recorded.

use std::time::Instant;

use super::*;

#[test]
fn a_name_resolving_to_loopback_is_refused_unless_the_ip_literal_is_the_rule() {
    let up = Upstream::http(None, "local", loopback());
    let p = up.port;
    // The system resolver: "localhost" comes from /etc/hosts.
    let mut h = Harness::new(config(Resolver::System));
    let sb = h.sandbox(rules(&[
        &format!("localhost:{p}"),
        &format!("127.0.0.1:{p}"),
    ]));

    let got = curl(&sb.proxy_url(), &format!("http://localhost:{p}/"), &[]);
    assert_eq!(got.status, 403, "{got:?}");
    // /etc/hosts may list ::1 too, and getaddrinfo may put it first.
    assert!(
        got.body
            .contains("localhost resolves only to refused addresses"),
        "{got:?}"
    );
    assert!(got.body.contains("127.0.0.1 (loopback)"), "{got:?}");
    assert!(!sb.decided().allowed);
    assert!(up.seen().is_empty());

    let got = curl(&sb.proxy_url(), &format!("http://127.0.0.1:{p}/ok"), &[]);
    assert_eq!(got.status, 200, "{got:?}");
    assert!(got.body.contains("upstream=local"));
    let d = sb.decided();
    assert!(d.allowed && d.resolved == Some(loopback()), "{d:?}");
    assert_eq!(d.reason, format!("allowed by 127.0.0.1:{p}"));

    // A static (or rebinding) answer pointing an allowed name at loopback: the same.
    let mut h = Harness::new(config(resolver(&[("sneaky.test", &[loopback()])])));
    let sb = h.sandbox(rules(&[&format!("sneaky.test:{p}")]));
    assert_eq!(
        curl(&sb.proxy_url(), &format!("http://sneaky.test:{p}/"), &[]).status,
        403
    );
    let seen = up.seen_at_least(1);
    assert!(seen.len() == 1, "{seen:?}");
}

#[test]
fn metadata_endpoints_are_refused() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut h = Harness::new(config(resolver(&[
        ("meta.test", &[ip("169.254.169.254")]),
        ("meta6.test", &[ip("fd00:ec2::254")]),
        ("mapped.test", &[ip("::ffff:169.254.169.254")]),
        ("nat64.test", &[ip("64:ff9b::a9fe:a9fe")]),
        (
            "private.test",
            &[
                ip("10.1.2.3"),
                ip("192.168.0.1"),
                ip("100.64.0.1"),
                ip("fe80::1"),
            ],
        ),
        ("metadata.google.internal", &[ip("203.0.113.250")]),
    ])));
    let sb = h.sandbox(rules(&[
        "meta.test:80",
        "meta6.test:80",
        "mapped.test:80",
        "nat64.test:80",
        "private.test:80",
        "metadata.google.internal:80",
    ]));
    for (host, why) in [
        ("meta.test", "169.254.169.254 (cloud metadata endpoint)"),
        ("meta6.test", "fd00:ec2::254 (cloud metadata endpoint)"),
        ("mapped.test", "(cloud metadata endpoint (ipv4-mapped))"),
        ("nat64.test", "(cloud metadata endpoint (nat64))"),
        (
            "private.test",
            "10.1.2.3 (private), 192.168.0.1 (private), 100.64.0.1 (shared address space (cgnat)), fe80::1 (link-local)",
        ),
        ("metadata.google.internal", "metadata.google.internal is a cloud metadata endpoint"),
    ] {
        let got = curl(&sb.proxy_url(), &format!("http://{host}/latest/meta-data/"), &[]);
        assert_eq!(got.status, 403, "{host}: {got:?}");
        let d = sb.decided();
        assert!(!d.allowed && d.reason.contains(why), "{host}: {d:?}");
    }
    // The literal address is refused as well: no rule names it.
    let got = curl(
        &sb.proxy_url(),
        "http://169.254.169.254/latest/meta-data/",
        &[],
    );
    assert_eq!(got.status, 403, "{got:?}");
    assert!(sb.decided().reason.contains("not in the allow list"));
}

#[test]
fn the_hosts_own_address_is_refused_unless_the_ip_literal_is_the_rule() {
    let net = TestNet::new();
    // Documentation space passes the range classifier; the veth end makes it the host's.
    let up = Upstream::http(None, "own", net.host);
    let p = up.port;
    let mut h = Harness::new(config(resolver(&[("own.test", &[net.host])])));
    let sb = h.sandbox(rules(&[
        &format!("own.test:{p}"),
        &format!("{}:{p}", net.host),
    ]));
    let by_name = curl(&sb.proxy_url(), &format!("http://own.test:{p}/"), &[]);
    assert_eq!(by_name.status, 403, "{by_name:?}");
    assert!(
        by_name
            .body
            .contains(&format!("{} (this host's own address)", net.host)),
        "{by_name:?}"
    );
    assert!(up.seen().is_empty());
    let got = curl(&sb.proxy_url(), &format!("http://{}:{p}/", net.host), &[]);
    assert_eq!(got.status, 200, "{got:?}");
}

#[test]
fn of_several_addresses_only_a_screened_one_is_dialled() {
    let net = TestNet::new();
    let up = Upstream::http(Some(&net), "a", net.a);
    let ips = [loopback(), "10.0.0.1".parse().unwrap(), net.a];
    let mut h = Harness::new(config(resolver(&[("mixed.test", &ips)])));
    let sb = h.sandbox(rules(&[&format!("mixed.test:{}", up.port)]));
    let got = curl(
        &sb.proxy_url(),
        &format!("http://mixed.test:{}/", up.port),
        &[],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(sb.decided().resolved, Some(net.a));
}

#[test]
fn unresolvable_and_unreachable_destinations_get_502_or_504() {
    let net = TestNet::new();
    let up = Upstream::http(Some(&net), "a", net.a);
    let closed_port = up.port.wrapping_add(1).max(1);
    let mut h = Harness::new(config(resolver(&[
        ("api.test", &[net.a]),
        ("nobody.test", &[net.nobody()]),
    ])));
    let sb = h.sandbox(rules(&[
        "gone.test:80",
        "nobody.test:80",
        &format!("api.test:{closed_port}"),
    ]));

    let got = curl(&sb.proxy_url(), "http://gone.test/", &[]);
    assert_eq!(got.status, 502, "{got:?}");
    assert!(sb.decided().reason.contains("cannot resolve gone.test"));

    let got = curl(
        &sb.proxy_url(),
        &format!("http://api.test:{closed_port}/"),
        &[],
    );
    assert_eq!(got.status, 502, "{got:?}");
    assert!(sb.decided().reason.contains("cannot connect to api.test"));

    // Nobody answers ARP for this address: the connect timeout (2 s) ends the wait.
    let start = Instant::now();
    let got = curl(&sb.proxy_url(), "http://nobody.test/", &[]);
    assert_eq!(got.status, 504, "{got:?}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(sb.decided().reason.contains("timed out"));
}
