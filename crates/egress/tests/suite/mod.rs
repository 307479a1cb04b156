//! Helpers that let each test read as a few lines about behaviour: a network namespace
//! holding upstreams at public-looking addresses, Python upstream servers, a proxy with
//! sandboxes whose sockets are bridged to loopback TCP ports (as the in-sandbox bridge
//! does), and real clients (curl, Python) pointed at them.

mod connect;
mod http;
mod isolation;
mod screening;
mod secrets;
mod socks;
mod stress;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nanoclaw_egress::{
    Decision, Phase, Policy, Proxy, ProxyConfig, Resolver, SandboxEndpoint, SecretSubstitution,
};
use nanoclaw_spec::EgressRule;

/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);

pub fn rules(list: &[&str]) -> Policy {
    let rules: Vec<EgressRule> = list
        .iter()
        .map(|r| {
            let (host, port) = r.rsplit_once(':').unwrap();
            EgressRule {
                host: host.into(),
                port: port.parse().unwrap(),
            }
        })
        .collect();
    Policy::new(&rules).unwrap()
}

pub fn resolver(entries: &[(&str, &[IpAddr])]) -> Resolver {
    Resolver::Static(
        entries
            .iter()
            .map(|(name, ips)| (name.to_string(), ips.to_vec()))
            .collect::<HashMap<_, _>>(),
    )
}

/// Short timeouts, so that the timeout tests are quick.
pub fn config(resolver: Resolver) -> ProxyConfig {
    ProxyConfig {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(3),
        header_timeout: Duration::from_secs(2),
        resolver,
        ..ProxyConfig::default()
    }
}

/// A network namespace joined to this one by a veth pair, with addresses from TEST-NET-3
/// (203.0.113.0/24: not refused by the proxy, never routed anywhere). Each live TestNet
/// owns one /29 slot, claimed by locking a file, so parallel tests and test processes
/// never share addresses.
pub struct TestNet {
    name: String,
    veth: String,
    /// Held (locked) while the slot is in use.
    _slot: fs::File,
    /// Two addresses inside the namespace, for two distinct upstreams.
    pub a: IpAddr,
    pub b: IpAddr,
    /// The host's own end of the pair: an address of this host in a range the classifier
    /// passes.
    pub host: IpAddr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNet {
    pub fn new() -> TestNet {
        let dir = Path::new("/tmp/nanoclaw-egress-test-slots");
        fs::create_dir_all(dir).unwrap();
        let (slot, lock) = (0..32u8)
            .find_map(|slot| Some((slot, claim(&dir.join(slot.to_string()))?)))
            .expect("a free test network slot");
        let name = format!("nc-egress-{slot}");
        let veth = format!("ncegress{slot}h");
        // Whatever a killed test left in this slot goes first.
        let _ = Command::new("ip").args(["link", "del", &veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let octet = |n: u8| Ipv4Addr::new(203, 0, 113, slot * 8 + n);
        let net = TestNet {
            _slot: lock,
            a: IpAddr::V4(octet(2)),
            b: IpAddr::V4(octet(3)),
            host: IpAddr::V4(octet(1)),
            name,
            veth,
        };
        let inner = format!("ncegress{slot}n");
        ip(&["netns", "add", &net.name]);
        ip(&[
            "link", "add", &net.veth, "type", "veth", "peer", "name", &inner, "netns", &net.name,
        ]);
        ip(&["addr", "add", &format!("{}/29", net.host), "dev", &net.veth]);
        ip(&["link", "set", &net.veth, "up"]);
        for addr in [net.a, net.b] {
            ip(&[
                "-n",
                &net.name,
                "addr",
                "add",
                &format!("{addr}/29"),
                "dev",
                &inner,
            ]);
        }
        ip(&["-n", &net.name, "link", "set", &inner, "up"]);
        ip(&["-n", &net.name, "link", "set", "lo", "up"]);
        net
    }

    /// An address in the namespace's subnet that nobody holds: connects to it hang.
    pub fn nobody(&self) -> IpAddr {
        let IpAddr::V4(a) = self.a else {
            unreachable!()
        };
        IpAddr::V4(Ipv4Addr::from(u32::from(a) + 4))
    }
}

/// Claims a slot by locking its file; the lock ends with the file (or the process).
fn claim(path: &Path) -> Option<fs::File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
    Some(file)
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A Python upstream server (tests/upstream.py), killed on drop.
pub struct Upstream {
    child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub fn http(net: Option<&TestNet>, name: &str, bind: IpAddr) -> Upstream {
        Upstream::spawn(net, &["http", name, &bind.to_string()])
    }

    pub fn tls(net: Option<&TestNet>, name: &str, bind: IpAddr, cert: &Cert) -> Upstream {
        let (c, k) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
        Upstream::spawn(net, &["tls", name, &bind.to_string(), c, k])
    }

    pub fn silent(net: Option<&TestNet>, bind: IpAddr) -> Upstream {
        Upstream::spawn(net, &["silent", &bind.to_string()])
    }

    fn spawn(net: Option<&TestNet>, args: &[&str]) -> Upstream {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream.py");
        let mut command = match net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net.name, "python3"]);
                c
            }
            None => Command::new("python3"),
        };
        let mut child = command
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let seen = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                match line.strip_prefix("port ") {
                    Some(port) => port_tx.send(port.parse::<u16>().unwrap()).unwrap(),
                    None => seen.lock().unwrap().push(line),
                }
            }
        });
        // Generous: Python starts slowly on a loaded machine.
        let port = port_rx
            .recv_timeout(PATIENCE * 3)
            .expect("upstream started");
        Upstream { child, port, lines }
    }

    /// What the upstream has seen so far ("request ..." / "accepted" lines).
    pub fn seen(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// What the upstream has reported once it has reported at least `count` events (its
    /// lines arrive through a reader thread, after the answer the client already has), plus
    /// a short grace for any event that should not have happened.
    pub fn seen_at_least(&self, count: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.seen().len() < count && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        self.seen()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for api.test and other.test.
pub struct Cert {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    /// A certificate and key made elsewhere (kept alive by their owner).
    pub fn from_files(cert: PathBuf, key: PathBuf) -> Cert {
        Cert {
            _dir: tempfile::tempdir().unwrap(),
            cert,
            key,
        }
    }

    pub fn new() -> Cert {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=api.test"])
            .args(["-addext", "subjectAltName=DNS:api.test,DNS:other.test"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cert {
            _dir: dir,
            cert,
            key,
        }
    }
}

/// A proxy and the sandboxes added to it, each in its own directory.
pub struct Harness {
    pub proxy: Proxy,
    dir: tempfile::TempDir,
    count: usize,
}

impl Harness {
    pub fn new(config: ProxyConfig) -> Harness {
        Harness {
            proxy: Proxy::start(config).unwrap(),
            dir: tempfile::tempdir().unwrap(),
            count: 0,
        }
    }

    pub fn sandbox(&mut self, policy: Policy) -> Sandbox {
        self.count += 1;
        let dir = self.dir.path().join(format!("sandbox-{}", self.count));
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).unwrap();
        let (events_tx, events) = std::sync::mpsc::sync_channel(4096);
        let endpoint = self.proxy.add_sandbox(&dir, policy, events_tx).unwrap();
        let bridge = bridge(endpoint.socket());
        Sandbox {
            socket: endpoint.socket().to_path_buf(),
            endpoint: Some(endpoint),
            events,
            port: bridge,
        }
    }

    /// A sandbox whose requests get `secrets` substituted; also the CA PEM it trusts.
    pub fn sandbox_with_secrets(
        &mut self,
        policy: Policy,
        secrets: Vec<SecretSubstitution>,
    ) -> (Sandbox, Option<String>) {
        self.count += 1;
        let dir = self.dir.path().join(format!("sandbox-{}", self.count));
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).unwrap();
        let (events_tx, events) = std::sync::mpsc::sync_channel(4096);
        let (endpoint, ca) = self
            .proxy
            .add_sandbox_with_secrets(&dir, policy, events_tx, secrets)
            .unwrap();
        let bridge = bridge(endpoint.socket());
        let sandbox = Sandbox {
            socket: endpoint.socket().to_path_buf(),
            endpoint: Some(endpoint),
            events,
            port: bridge,
        };
        (sandbox, ca)
    }

    pub fn remove(&self, sandbox: &mut Sandbox) {
        let endpoint = sandbox.endpoint.take().unwrap();
        self.proxy.remove_sandbox(endpoint).unwrap();
    }
}

/// One sandbox's view: its socket, a loopback port bridged to it, and its records.
pub struct Sandbox {
    endpoint: Option<SandboxEndpoint>,
    pub socket: PathBuf,
    pub events: Receiver<Decision>,
    /// The loopback TCP port bridged to the socket.
    pub port: u16,
}

impl Sandbox {
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next record, which must come within PATIENCE.
    pub fn next(&self) -> Decision {
        self.events
            .recv_timeout(PATIENCE)
            .expect("a decision record")
    }

    /// The next `Decided` record (skipping `Closed` ones of earlier connections).
    pub fn decided(&self) -> Decision {
        loop {
            let d = self.next();
            if d.phase == Phase::Decided {
                return d;
            }
        }
    }

    /// Waits for the `Closed` record of `connection`, skipping others.
    pub fn closed(&self, connection: u64) -> Decision {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let d = self.events.recv_timeout(left).expect("a closed record");
            if d.phase == Phase::Closed && d.connection == connection {
                return d;
            }
        }
    }

    /// Asserts no record arrives for a moment.
    pub fn quiet(&self) {
        match self.events.recv_timeout(Duration::from_millis(300)) {
            Err(RecvTimeoutError::Timeout) => {}
            other => panic!("unexpected record: {other:?}"),
        }
    }

    /// A raw connection to the socket, as the bridge makes.
    pub fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    }
}

/// A loopback TCP port whose every connection is relayed to `socket`: what nanoclaw's
/// in-sandbox bridge does. Lives as long as the test process.
pub fn bridge(socket: &Path) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        for tcp in listener.incoming().map_while(Result::ok) {
            let Ok(unix) = UnixStream::connect(&socket) else {
                continue;
            };
            let (mut tcp_r, mut unix_w) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
            let (mut unix_r, mut tcp_w) = (unix, tcp);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut tcp_r, &mut unix_w);
                let _ = unix_w.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut unix_r, &mut tcp_w);
                let _ = tcp_w.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// What curl got: the HTTP status (or CONNECT status when the tunnel failed), the body
/// and curl's exit code.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub body: String,
    pub exit: i32,
}

/// `curl` through `proxy` (`http://…` or `socks5h://…`), with extra arguments.
pub fn curl(proxy: &str, url: &str, extra: &[&str]) -> Fetched {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-x",
            proxy,
            "-w",
            "\n%{http_code} %{http_connect}",
        ])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, codes) = stdout.rsplit_once('\n').unwrap();
    let (code, connect) = codes.split_once(' ').unwrap();
    let status = match code.parse().unwrap() {
        0 => connect.parse().unwrap(),
        n => n,
    };
    Fetched {
        status,
        body: body.to_string(),
        exit: out.status.code().unwrap_or(-1),
    }
}

/// Runs a Python snippet with arguments; returns its output.
pub fn python(code: &str, args: &[&str]) -> Output {
    Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap()
}

/// Sends `request` on a raw connection to the sandbox's socket and reads the answer.
pub fn exchange(sandbox: &Sandbox, request: &[u8]) -> String {
    let mut s = sandbox.connect();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).to_string()
}

/// A plain fast request through `sandbox` to `url`; returns how long it took.
pub fn timed_get(sandbox: &Sandbox, url: &str) -> Duration {
    let start = Instant::now();
    let fetched = curl(&sandbox.proxy_url(), url, &[]);
    assert_eq!(fetched.status, 200, "{fetched:?}");
    start.elapsed()
}

pub fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}
