//! Secret substitution with real clients: curl and Python urllib through the proxy to TLS
//! and plain-HTTP upstreams (tests/upstream.py) whose certificates a test CA signs; the
//! proxy verifies upstreams against that CA (`upstream_roots`), the clients trust only the
//! sandbox's own CA (the PEM `add_sandbox_with_secrets` returns). The upstreams report the
//! Authorization header and the body they received.

use std::time::{Duration, Instant};

use nanoclaw_egress::{Protocol, SecretEvent, SecretSubstitution, Zeroizing};
use nanoclaw_spec::EgressRule;

use super::*;

const PLACEHOLDER: &str = "nc-ph-TOKEN-8f3a9c2e71d4";
const VALUE: &str = "real-secret-VALUE-5b7e0d";

/// A test CA, and a leaf it signs for api.test and other.test (what the upstreams serve).
struct TestCa {
    dir: tempfile::TempDir,
    ca: PathBuf,
    leaf: Cert,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            &[
                &[
                    "req",
                    "-x509",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=nanoclaw test CA",
                ][..],
                &ec,
                &["-keyout", &p("ca.key"), "-out", &p("ca.pem")],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req", "-new", "-nodes", "-subj", "/CN=api.test"][..],
                &ec,
                &["-keyout", &p("leaf.key"), "-out", &p("leaf.csr")],
            ]
            .concat(),
        );
        fs::write(
            dir.path().join("leaf.ext"),
            "subjectAltName=DNS:api.test,DNS:other.test\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p("leaf.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("leaf.ext"),
            "-out",
            &p("leaf.pem"),
        ]);
        let leaf = Cert::from_files(dir.path().join("leaf.pem"), dir.path().join("leaf.key"));
        TestCa {
            ca: dir.path().join("ca.pem"),
            leaf,
            dir,
        }
    }

    /// Writes `pem` (a sandbox's CA) into a file and returns its path.
    fn write(&self, name: &str, pem: &str) -> String {
        let path = self.dir.path().join(name);
        fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_string()
    }
}

fn secret(hosts: &[String], body: bool, ttl: Duration) -> SecretSubstitution {
    SecretSubstitution {
        name: "API_TOKEN".into(),
        placeholder: PLACEHOLDER.into(),
        value: Zeroizing::new(VALUE.as_bytes().to_vec()),
        hosts: hosts
            .iter()
            .map(|h| {
                let (host, port) = h.rsplit_once(':').unwrap();
                EgressRule {
                    host: host.into(),
                    port: port.parse().unwrap(),
                }
            })
            .collect(),
        body,
        expires: Instant::now() + ttl,
    }
}

/// The records that arrive within a moment.
fn records(sb: &Sandbox) -> Vec<Decision> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(700);
    while let Ok(d) = sb
        .events
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        out.push(d);
    }
    out
}

fn secret_events(records: &[Decision]) -> Vec<(SecretEvent, String, u64)> {
    records
        .iter()
        .filter(|d| d.phase == Phase::Secret)
        .map(|d| {
            let s = d.secret.as_ref().unwrap();
            assert_eq!(s.name, "API_TOKEN");
            (s.event, d.host.clone(), d.count)
        })
        .collect()
}

/// What `up` reported for the request to `path` (waiting for it).
fn received(up: &Upstream, path: &str) -> String {
    let needle = format!(" path={path} ");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = up.seen().into_iter().find(|l| l.contains(&needle)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no request to {path}: {:?}",
            up.seen()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The client got the upstream's echo with the placeholder where the value was.
fn echoed_as_placeholder(body: &str, prefix: &str) {
    assert!(!body.contains(VALUE), "{body}");
    assert!(body.contains(&format!("{prefix}{PLACEHOLDER}")), "{body}");
}

fn no_value_in(records: &[Decision]) {
    let all = format!("{records:?}");
    assert!(!all.contains(VALUE), "{all}");
    assert!(!all.contains(PLACEHOLDER), "{all}");
}

struct World {
    _net: TestNet,
    ca: TestCa,
    /// TLS upstream on api.test (listed for the secret).
    api: Upstream,
    /// Plain HTTP upstream on api.test (listed too).
    api_http: Upstream,
    /// TLS and plain HTTP upstreams on other.test (allowed, listed for no secret).
    other: Upstream,
    other_http: Upstream,
    h: Harness,
}

impl World {
    fn new() -> World {
        let net = TestNet::new();
        let ca = TestCa::new();
        let api = Upstream::tls(Some(&net), "api", net.a, &ca.leaf);
        let api_http = Upstream::http(Some(&net), "api-http", net.a);
        let other = Upstream::tls(Some(&net), "other", net.b, &ca.leaf);
        let other_http = Upstream::http(Some(&net), "other-http", net.b);
        let h = Harness::new(ProxyConfig {
            upstream_roots: Some(ca.ca.clone()),
            ..config(resolver(&[
                ("api.test", &[net.a]),
                ("other.test", &[net.b]),
            ]))
        });
        World {
            _net: net,
            ca,
            api,
            api_http,
            other,
            other_http,
            h,
        }
    }

    fn policy(&self) -> Policy {
        rules(&[
            &format!("api.test:{}", self.api.port),
            &format!("api.test:{}", self.api_http.port),
            &format!("other.test:{}", self.other.port),
            &format!("other.test:{}", self.other_http.port),
        ])
    }

    fn listed(&self) -> Vec<String> {
        vec![
            format!("api.test:{}", self.api.port),
            format!("api.test:{}", self.api_http.port),
        ]
    }

    fn sandbox(&mut self, secret: SecretSubstitution) -> (Sandbox, String) {
        let policy = self.policy();
        let (sb, pem) = self.h.sandbox_with_secrets(policy, vec![secret]);
        let pem = pem.expect("a CA for a sandbox with secrets");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        assert!(!pem.contains("PRIVATE"), "{pem}");
        let file = self.ca.write(&format!("sandbox-{}.pem", sb.port), &pem);
        (sb, file)
    }

    fn api_url(&self, path: &str) -> String {
        format!("https://api.test:{}{path}", self.api.port)
    }
}

fn bearer() -> String {
    format!("Authorization: Bearer {PLACEHOLDER}")
}

#[test]
fn intercepted_https_gets_the_real_value_with_curl_and_python() {
    let mut w = World::new();
    let secret = secret(&w.listed(), false, Duration::from_secs(60));
    let (sb, ca) = w.sandbox(secret);

    // Two requests on one connection (keep-alive through the interception).
    let got = curl(
        &sb.proxy_url(),
        &w.api_url("/one"),
        &["--cacert", &ca, "-H", &bearer(), &w.api_url("/two")],
    );
    assert_eq!((got.status, got.exit), (200, 0), "{got:?}");
    assert!(got.body.contains("path=/one"), "{got:?}");
    assert!(got.body.contains("path=/two"), "{got:?}");
    let seen = w.api.seen_at_least(2);
    assert_eq!(seen.len(), 2, "{seen:?}");
    for line in &seen {
        assert!(line.contains(&format!("auth=Bearer {VALUE}")), "{line}");
        assert!(line.contains("sni=api.test"), "{line}");
    }
    let recs = records(&sb);
    no_value_in(&recs);
    let connects: Vec<&Decision> = recs
        .iter()
        .filter(|d| d.phase == Phase::Decided && d.protocol == Protocol::Connect)
        .collect();
    assert_eq!(connects.len(), 1, "one connection for both: {recs:?}");
    assert!(
        connects[0].allowed && connects[0].reason.contains("intercepted"),
        "{recs:?}"
    );
    let events = secret_events(&recs);
    assert_eq!(events[0].0, SecretEvent::Substituted, "{recs:?}");
    assert_eq!(events[0].1, "api.test");
    // The upstream echoed the value back: the client got the placeholder.
    echoed_as_placeholder(&got.body, "auth=Bearer ");
    assert!(
        events.iter().any(|e| e.0 == SecretEvent::Reflected),
        "{recs:?}"
    );

    // Python's urllib, trusting the sandbox's CA.
    let out = python(
        "import ssl, sys, urllib.request as u\n\
         c = ssl.create_default_context(cafile=sys.argv[3])\n\
         o = u.build_opener(u.ProxyHandler({'https': sys.argv[1]}), u.HTTPSHandler(context=c))\n\
         r = u.Request(sys.argv[2], data=b'{\"k\": 1}', headers={'Authorization': 'token ' + sys.argv[4]})\n\
         print(o.open(r, timeout=10).read().decode(), end='')",
        &[&sb.proxy_url(), &w.api_url("/py"), &ca, PLACEHOLDER],
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("method=POST path=/py"), "{stdout}");
    echoed_as_placeholder(&stdout, "auth=token ");
    assert!(received(&w.api, "/py").contains(&format!("auth=token {VALUE}")));
    assert!(stdout.contains("body={\"k\": 1}"), "{stdout}");
}

#[test]
fn plain_http_to_a_listed_host_is_substituted_too() {
    let mut w = World::new();
    let secret = secret(&w.listed(), false, Duration::from_secs(60));
    let (sb, _ca) = w.sandbox(secret);
    let url = format!("http://api.test:{}/plain", w.api_http.port);
    let got = curl(&sb.proxy_url(), &url, &["-H", &bearer()]);
    assert_eq!(got.status, 200, "{got:?}");
    let line = received(&w.api_http, "/plain");
    assert!(line.contains(&format!("auth=Bearer {VALUE}")), "{line}");
    echoed_as_placeholder(&got.body, "auth=Bearer ");
    let recs = records(&sb);
    no_value_in(&recs);
    assert_eq!(
        secret_events(&recs),
        [
            (SecretEvent::Substituted, "api.test".to_string(), 1),
            (SecretEvent::Reflected, "api.test".to_string(), 1)
        ]
    );
}

#[test]
fn a_placeholder_sent_to_another_allowed_host_arrives_unreplaced_and_is_recorded() {
    let mut w = World::new();
    let secret = secret(&w.listed(), true, Duration::from_secs(60));
    let (sb, ca) = w.sandbox(secret);

    // Plain HTTP: the proxy sees it, leaves it, records it.
    let url = format!("http://other.test:{}/leak", w.other_http.port);
    let got = curl(
        &sb.proxy_url(),
        &url,
        &["-H", &bearer(), "--data", &format!("k={PLACEHOLDER}")],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert!(
        got.body.contains(&format!("auth=Bearer {PLACEHOLDER}")),
        "{got:?}"
    );
    assert!(!got.body.contains(VALUE), "{got:?}");
    let recs = records(&sb);
    no_value_in(&recs);
    assert_eq!(
        secret_events(&recs),
        [(SecretEvent::Misdirected, "other.test".to_string(), 1)]
    );

    // Only in the body (streamed, not buffered: the host is listed for no secret).
    let got = curl(
        &sb.proxy_url(),
        &url,
        &["--data", &format!("k={PLACEHOLDER}")],
    );
    assert!(
        got.body.contains(&format!("body=k={PLACEHOLDER}")),
        "{got:?}"
    );
    let recs = records(&sb);
    assert_eq!(
        secret_events(&recs),
        [(SecretEvent::Misdirected, "other.test".to_string(), 1)]
    );

    // HTTPS to a host no secret lists: a plain tunnel. The client sees the upstream's own
    // certificate (the sandbox's CA does not verify it, the test CA does), and the
    // placeholder goes through unseen (harmless: it is only a placeholder).
    let url = format!("https://other.test:{}/tunnel", w.other.port);
    let refused = curl(&sb.proxy_url(), &url, &["--cacert", &ca]);
    assert_ne!(refused.exit, 0, "{refused:?}");
    let test_ca = w.ca.ca.to_str().unwrap().to_string();
    let got = curl(
        &sb.proxy_url(),
        &url,
        &["--cacert", &test_ca, "-H", &bearer()],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert!(
        got.body.contains(&format!("auth=Bearer {PLACEHOLDER}")),
        "{got:?}"
    );
    let recs = records(&sb);
    assert!(secret_events(&recs).is_empty(), "{recs:?}");
    assert!(
        recs.iter()
            .filter(|d| d.phase == Phase::Decided)
            .all(|d| !d.reason.contains("intercepted")),
        "{recs:?}"
    );
}

#[test]
fn after_the_ttl_the_placeholder_is_sent_as_it_is_and_recorded_once() {
    let mut w = World::new();
    let secret = secret(&w.listed(), false, Duration::from_millis(1500));
    let (sb, ca) = w.sandbox(secret);
    let fetch = |path: &str| {
        curl(
            &sb.proxy_url(),
            &w.api_url(path),
            &["--cacert", &ca, "-H", &bearer()],
        )
    };
    let first = fetch("/before");
    assert_eq!(first.status, 200, "{first:?}");
    let line = received(&w.api, "/before");
    assert!(line.contains(&format!("auth=Bearer {VALUE}")), "{line}");
    std::thread::sleep(Duration::from_millis(1600));
    for path in ["/after", "/again"] {
        let got = fetch(path);
        assert_eq!(got.status, 200, "{got:?}");
        assert!(
            got.body.contains(&format!("auth=Bearer {PLACEHOLDER}")),
            "{got:?}"
        );
    }
    let recs = records(&sb);
    no_value_in(&recs);
    let events: Vec<SecretEvent> = secret_events(&recs).into_iter().map(|e| e.0).collect();
    assert_eq!(
        events,
        [
            SecretEvent::Substituted,
            SecretEvent::Reflected,
            SecretEvent::Expired
        ],
        "{recs:?}"
    );
}

#[test]
fn bodies_are_substituted_only_when_declared() {
    for body in [true, false] {
        let mut w = World::new();
        let secret = secret(&w.listed(), body, Duration::from_secs(60));
        let (sb, ca) = w.sandbox(secret);
        let data = format!("{{\"token\": \"{PLACEHOLDER}\", \"again\": \"{PLACEHOLDER}\"}}");
        let got = curl(
            &sb.proxy_url(),
            &w.api_url("/body"),
            &["--cacert", &ca, "-H", &bearer(), "--data-binary", &data],
        );
        assert_eq!(got.status, 200, "{got:?}");
        let expected = if body {
            format!("body={{\"token\": \"{VALUE}\", \"again\": \"{VALUE}\"}}")
        } else {
            format!("body={data}")
        };
        let line = received(&w.api, "/body");
        assert!(line.contains(&expected), "body={body}: {line}");
        assert!(line.contains(&format!("auth=Bearer {VALUE}")), "{line}");
        assert!(!got.body.contains(VALUE), "{got:?}");
        if body {
            // A chunked body is buffered, substituted and sent with a length.
            let got = curl(
                &sb.proxy_url(),
                &w.api_url("/chunked"),
                &[
                    "--cacert",
                    &ca,
                    "-H",
                    "Transfer-Encoding: chunked",
                    "--data-binary",
                    &data,
                ],
            );
            let line = received(&w.api, "/chunked");
            assert!(line.contains(&expected), "{line}");
            assert!(line.contains("te=None"), "{line}");
            assert!(!got.body.contains(VALUE), "{got:?}");
            // Plain HTTP too.
            let url = format!("http://api.test:{}/plain-body", w.api_http.port);
            let got = curl(&sb.proxy_url(), &url, &["--data-binary", &data]);
            assert!(received(&w.api_http, "/plain-body").contains(&expected));
            assert!(!got.body.contains(VALUE), "{got:?}");
        }
        no_value_in(&records(&sb));
    }
}

#[test]
fn an_upstream_that_does_not_verify_is_a_502_never_a_bypass() {
    let net = TestNet::new();
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let api = Upstream::tls(Some(&net), "api", net.a, &ca.leaf);
    let mut h = Harness::new(ProxyConfig {
        upstream_roots: Some(other_ca.ca.clone()),
        ..config(resolver(&[("api.test", &[net.a])]))
    });
    let rule = format!("api.test:{}", api.port);
    let (sb, pem) = h.sandbox_with_secrets(
        rules(&[&rule]),
        vec![secret(
            std::slice::from_ref(&rule),
            false,
            Duration::from_secs(60),
        )],
    );
    let pem = ca.write("sandbox.pem", &pem.unwrap());
    let url = format!("https://api.test:{}/x", api.port);
    let got = curl(&sb.proxy_url(), &url, &["--cacert", &pem, "-H", &bearer()]);
    assert_eq!(got.status, 502, "{got:?}");
    assert_ne!(got.exit, 0, "{got:?}");
    let d = sb.decided();
    assert!(!d.allowed, "{d:?}");
    assert!(d.reason.contains("TLS with the upstream"), "{d:?}");
    // The upstream saw no request (the handshake failed before any).
    assert!(
        api.seen().iter().all(|l| !l.starts_with("request")),
        "{:?}",
        api.seen()
    );
}

#[test]
fn a_body_over_the_bound_is_refused_with_413() {
    let mut w = World::new();
    let secret = secret(&w.listed(), true, Duration::from_secs(60));
    let (sb, ca) = w.sandbox(secret);
    let big = w.ca.dir.path().join("big");
    fs::write(
        &big,
        vec![b'x'; nanoclaw_egress::MAX_SUBSTITUTED_BODY + 100_000],
    )
    .unwrap();
    let data = format!("@{}", big.display());
    let got = curl(
        &sb.proxy_url(),
        &w.api_url("/big"),
        &["--cacert", &ca, "--data-binary", &data],
    );
    assert_eq!(got.status, 413, "{got:?}");
    assert!(w.api.seen().is_empty(), "{:?}", w.api.seen());
    let recs = records(&sb);
    assert!(
        secret_events(&recs)
            .iter()
            .any(|e| e.0 == SecretEvent::Refused),
        "{recs:?}"
    );
}

#[test]
fn a_sandbox_without_secrets_gets_no_ca() {
    let mut h = Harness::new(config(resolver(&[])));
    let (_sb, pem) = h.sandbox_with_secrets(rules(&["api.test:443"]), Vec::new());
    assert!(pem.is_none());
}

#[test]
fn each_sandbox_has_its_own_ca_and_only_its_own_secrets() {
    let mut w = World::new();
    let (one, ca_one) = w.sandbox(secret(&w.listed(), false, Duration::from_secs(60)));
    let mut other_secret = secret(&w.listed(), false, Duration::from_secs(60));
    other_secret.placeholder = "nc-ph-OTHER-000000000000".into();
    other_secret.value = Zeroizing::new(b"other-sandbox-value".to_vec());
    let (two, ca_two) = w.sandbox(other_secret);
    assert_ne!(
        fs::read_to_string(&ca_one).unwrap(),
        fs::read_to_string(&ca_two).unwrap()
    );
    // Sandbox one's CA does not verify sandbox two's interception.
    let got = curl(&two.proxy_url(), &w.api_url("/x"), &["--cacert", &ca_one]);
    assert_ne!(got.exit, 0, "{got:?}");
    // Sandbox one's placeholder means nothing to sandbox two's proxy.
    let got = curl(
        &two.proxy_url(),
        &w.api_url("/y"),
        &["--cacert", &ca_two, "-H", &bearer()],
    );
    assert!(
        got.body.contains(&format!("auth=Bearer {PLACEHOLDER}")),
        "{got:?}"
    );
    let got = curl(
        &one.proxy_url(),
        &w.api_url("/z"),
        &["--cacert", &ca_one, "-H", &bearer()],
    );
    assert_eq!(got.status, 200, "{got:?}");
    assert!(received(&w.api, "/z").contains(&format!("auth=Bearer {VALUE}")));
}

#[test]
fn socks5_to_a_listed_host_is_intercepted_too() {
    let mut w = World::new();
    let (sb, ca) = w.sandbox(secret(&w.listed(), false, Duration::from_secs(60)));
    let socks = format!("socks5h://127.0.0.1:{}", sb.port);
    let got = curl(
        &socks,
        &w.api_url("/socks"),
        &["--cacert", &ca, "-H", &bearer()],
    );
    assert_eq!((got.status, got.exit), (200, 0), "{got:?}");
    let line = received(&w.api, "/socks");
    assert!(line.contains(&format!("auth=Bearer {VALUE}")), "{line}");
    echoed_as_placeholder(&got.body, "auth=Bearer ");
    let recs = records(&sb);
    no_value_in(&recs);
    let d = recs.iter().find(|d| d.phase == Phase::Decided).unwrap();
    assert!(
        d.protocol == Protocol::Socks5 && d.reason.contains("intercepted"),
        "{d:?}"
    );
    assert!(
        secret_events(&recs).contains(&(SecretEvent::Substituted, "api.test".into(), 1)),
        "{recs:?}"
    );
}

#[test]
fn by_default_upstreams_are_verified_against_the_host_trust_store() {
    let net = TestNet::new();
    let ca = TestCa::new();
    let api = Upstream::tls(Some(&net), "api", net.a, &ca.leaf);
    // No upstream_roots: the test CA is not in the host's store.
    let mut h = Harness::new(config(resolver(&[("api.test", &[net.a])])));
    let rule = format!("api.test:{}", api.port);
    let (sb, pem) = h.sandbox_with_secrets(
        rules(&[&rule]),
        vec![secret(
            std::slice::from_ref(&rule),
            false,
            Duration::from_secs(60),
        )],
    );
    let pem = ca.write("sandbox.pem", &pem.unwrap());
    let url = format!("https://api.test:{}/x", api.port);
    let got = curl(&sb.proxy_url(), &url, &["--cacert", &pem, "-H", &bearer()]);
    assert_eq!(got.status, 502, "{got:?}");
    let d = sb.decided();
    assert!(!d.allowed && d.reason.contains("certificate"), "{d:?}");
}

#[test]
fn responses_of_every_framing_keep_an_intercepted_connection_usable() {
    let mut w = World::new();
    let (sb, ca) = w.sandbox(secret(&w.listed(), false, Duration::from_secs(60)));
    // One curl, one connection: a chunked response (with a trailer), a 204, a HEAD and a
    // plain one, each of which must end where its framing says for the next to work.
    let proxy = sb.proxy_url();
    let bearer = bearer();
    let common = [
        "-sS",
        "--max-time",
        "20",
        "-x",
        &proxy,
        "--cacert",
        &ca,
        "-H",
        &bearer,
        "-w",
        "[%{http_code} %{num_connects}]\n",
    ];
    let out = Command::new("curl")
        .args(common)
        .arg(w.api_url("/chunked-response"))
        .arg(w.api_url("/no-content"))
        .arg("--next")
        .args(common)
        .args(["--head", &w.api_url("/head")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("path=/chunked-response"), "{stdout}");
    assert!(stdout.contains("[204 0]"), "{stdout}");
    let codes: Vec<&str> = stdout.matches("[2").collect();
    assert_eq!(codes.len(), 3, "{stdout}");
    // Only the first transfer connected.
    assert_eq!(stdout.matches(" 1]").count(), 1, "{stdout}");
    assert!(!stdout.contains(VALUE), "{stdout}");
    for path in ["/chunked-response", "/no-content", "/head"] {
        let line = received(&w.api, path);
        assert!(line.contains(&format!("auth=Bearer {VALUE}")), "{line}");
    }
    let recs = records(&sb);
    no_value_in(&recs);
    let connects = recs
        .iter()
        .filter(|d| d.phase == Phase::Decided && d.allowed)
        .count();
    assert_eq!(connects, 1, "{recs:?}");
}

#[test]
fn the_sandbox_ca_is_constrained_to_the_secret_hosts_and_has_no_key() {
    let mut w = World::new();
    let (_sb, ca) = w.sandbox(secret(&w.listed(), false, Duration::from_secs(60)));
    let pem = fs::read_to_string(&ca).unwrap();
    assert_eq!(pem.matches("-----BEGIN").count(), 1, "{pem}");
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", &ca])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Name Constraints"), "{text}");
    assert!(text.contains("DNS:api.test"), "{text}");
    assert!(!text.contains("DNS:other.test"), "{text}");
    assert!(text.contains("IP:0.0.0.0/0.0.0.0"), "{text}");
    // The key is nowhere in what the sandbox gets.
    assert!(!pem.contains("PRIVATE KEY"));
}

/// An upstream that echoes the request's headers gzip'd (when asked, as `curl
/// --compressed` does) or in 7-byte chunks: the value it got never reaches the client,
/// over HTTPS or plain HTTP.
#[test]
fn an_echo_of_the_value_gzipped_or_in_small_chunks_never_reaches_the_client() {
    let mut w = World::new();
    let (sb, ca) = w.sandbox(secret(&w.listed(), false, Duration::from_secs(60)));
    let rid = format!("X-Request-Id: {PLACEHOLDER}");
    let https = |path: &str| w.api_url(path);
    let http = |path: &str| format!("http://api.test:{}{path}", w.api_http.port);
    for (url, up) in [
        (https("/echo-headers-gzip"), &w.api),
        (http("/echo-headers-gzip"), &w.api_http),
    ] {
        let got = curl(
            &sb.proxy_url(),
            &url,
            &["--cacert", &ca, "--compressed", "-H", &rid],
        );
        assert_eq!((got.status, got.exit), (200, 0), "{url}: {got:?}");
        // The upstream got the value, and was asked for no encoding.
        let line = received(up, "/echo-headers-gzip");
        assert!(line.contains(&format!("rid={VALUE}")), "{line}");
        assert!(line.contains("ae=identity"), "{line}");
        echoed_as_placeholder(&got.body, "X-Request-Id: ");
        assert!(got.body.contains("Accept-Encoding: identity"), "{got:?}");
    }
    for (url, up) in [
        (https("/echo-headers-chunk7"), &w.api),
        (http("/echo-headers-chunk7"), &w.api_http),
    ] {
        let got = curl(&sb.proxy_url(), &url, &["--cacert", &ca, "-H", &rid]);
        assert_eq!((got.status, got.exit), (200, 0), "{url}: {got:?}");
        assert!(received(up, "/echo-headers-chunk7").contains(&format!("rid={VALUE}")));
        echoed_as_placeholder(&got.body, "X-Request-Id: ");
    }
    // An upstream that encodes whatever was asked: refused, never passed.
    for (url, up) in [
        (https("/echo-headers-gzip-always"), &w.api),
        (http("/echo-headers-gzip-always"), &w.api_http),
    ] {
        for extra in [&["--compressed"][..], &[]] {
            let args = [&["--cacert", &ca, "-H", &rid][..], extra].concat();
            let got = curl(&sb.proxy_url(), &url, &args);
            assert_eq!(got.status, 502, "{url}: {got:?}");
            assert!(!got.body.contains(VALUE), "{got:?}");
            assert!(got.body.contains("encoded"), "{got:?}");
        }
        assert!(received(up, "/echo-headers-gzip-always").contains(&format!("rid={VALUE}")));
    }
    let recs = records(&sb);
    no_value_in(&recs);
    let events = secret_events(&recs);
    for event in [
        SecretEvent::Substituted,
        SecretEvent::Reflected,
        SecretEvent::Refused,
    ] {
        assert!(events.iter().any(|e| e.0 == event), "{event:?}: {recs:?}");
    }
    assert!(
        recs.iter()
            .any(|d| d.phase == Phase::Secret && d.reason.contains("encoded response")),
        "{recs:?}"
    );
    // A request that carries no value keeps its encoding (nothing to hide).
    let got = curl(
        &sb.proxy_url(),
        &https("/echo-headers-gzip-always?plain"),
        &["--cacert", &ca, "--compressed"],
    );
    assert_eq!((got.status, got.exit), (200, 0), "{got:?}");
    assert!(got.body.contains("Accept-Encoding: "), "{got:?}");
}

/// A placeholder of another length than the value: an echo in small chunks gets the
/// value masked (the length kept), never the value.
#[test]
fn an_echo_split_in_chunks_is_masked_when_the_placeholder_differs_in_length() {
    let mut w = World::new();
    let mut long = secret(&w.listed(), false, Duration::from_secs(60));
    let value = format!("{VALUE}-and-longer");
    long.value = Zeroizing::new(value.as_bytes().to_vec());
    let (sb, ca) = w.sandbox(long);
    let rid = format!("X-Request-Id: {PLACEHOLDER}");
    let got = curl(
        &sb.proxy_url(),
        &w.api_url("/echo-headers-chunk7"),
        &["--cacert", &ca, "-H", &rid],
    );
    assert_eq!((got.status, got.exit), (200, 0), "{got:?}");
    assert!(received(&w.api, "/echo-headers-chunk7").contains(&format!("rid={value}")));
    assert!(!got.body.contains(VALUE), "{got:?}");
    assert!(
        got.body
            .contains(&format!("X-Request-Id: {}", "*".repeat(value.len()))),
        "{got:?}"
    );
}

/// Plain HTTP to port 443 (the value would travel in cleartext where it is meant to go
/// inside TLS): never substituted, recorded as misdirected.
#[test]
fn plain_http_to_port_443_is_never_substituted() {
    let net = TestNet::new();
    let ca = TestCa::new();
    let api = Upstream::spawn(Some(&net), &["http", "api-443", &format!("{}#443", net.a)]);
    assert_eq!(api.port, 443);
    let mut h = Harness::new(ProxyConfig {
        upstream_roots: Some(ca.ca.clone()),
        ..config(resolver(&[("api.test", &[net.a])]))
    });
    let listed = vec!["api.test:443".to_string()];
    let (sb, _pem) = h.sandbox_with_secrets(
        rules(&["api.test:443"]),
        vec![secret(&listed, true, Duration::from_secs(60))],
    );
    let got = curl(
        &sb.proxy_url(),
        "http://api.test:443/clear",
        &["-H", &bearer(), "--data-binary", PLACEHOLDER],
    );
    assert_eq!(got.status, 200, "{got:?}");
    let line = received(&api, "/clear");
    assert!(
        line.contains(&format!("auth=Bearer {PLACEHOLDER}")),
        "{line}"
    );
    assert!(line.contains(&format!("body={PLACEHOLDER}")), "{line}");
    assert!(!line.contains(VALUE), "{line}");
    let recs = records(&sb);
    no_value_in(&recs);
    let events = secret_events(&recs);
    assert!(
        events
            .iter()
            .all(|e| e.0 == SecretEvent::Misdirected && e.1 == "api.test"),
        "{recs:?}"
    );
    assert!(!events.is_empty(), "{recs:?}");
    assert!(
        recs.iter()
            .any(|d| d.phase == Phase::Secret && d.reason.contains("cleartext")),
        "{recs:?}"
    );
}
