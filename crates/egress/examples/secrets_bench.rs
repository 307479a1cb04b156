//! Per-request cost of TLS interception (secret substitution) against a plain CONNECT
//! tunnel, in one run (bench/secrets.sh builds and runs this in release mode).
//!
//! A small TLS upstream on 127.0.0.1 (its certificate signed by a CA made here, which the
//! proxy is told to trust: `upstream_roots`) answers every request with "ok", keep-alive.
//! Two sandboxes on one proxy: one with a secret listed for the upstream (its CONNECTs are
//! intercepted, the client trusts the sandbox's CA), one without (a plain tunnel, the
//! client trusts the upstream's CA). Measured, each way: a request on a new connection
//! (CONNECT, TLS handshake, GET with `Authorization: Bearer <placeholder>`, response), and
//! a request on an open keep-alive connection.
//!
//!     secrets_bench [REQUESTS] [ROUNDS]     defaults: 200, 3

use std::error::Error;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nanoclaw_egress::{Policy, Proxy, ProxyConfig, SecretSubstitution, Zeroizing};
use nanoclaw_spec::EgressRule;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const PLACEHOLDER: &str = "nc-ph-BENCH-0123456789abcdef";
const VALUE: &str = "bench-secret-value-fedcba9876543210";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(3), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let (ca_file, server) = upstream_tls(dir.path())?;
    let substituted = Arc::new(AtomicUsize::new(0));
    let port = upstream(server, Arc::clone(&substituted))?;
    let rule = EgressRule {
        host: "127.0.0.1".into(),
        port,
    };
    let proxy = Proxy::start(ProxyConfig {
        upstream_roots: Some(ca_file.clone()),
        ..ProxyConfig::default()
    })?;
    let (records, received) = std::sync::mpsc::sync_channel(1024);
    let drain = move || for _ in received {};
    thread::spawn(drain);

    let plain_dir = dir.path().join("plain");
    std::fs::create_dir(&plain_dir)?;
    let plain = proxy.add_sandbox(
        &plain_dir,
        Policy::new(std::slice::from_ref(&rule))?,
        records.clone(),
    )?;
    let secret_dir = dir.path().join("secret");
    std::fs::create_dir(&secret_dir)?;
    let secret = SecretSubstitution {
        name: "BENCH_TOKEN".into(),
        placeholder: PLACEHOLDER.into(),
        value: Zeroizing::new(VALUE.as_bytes().to_vec()),
        hosts: vec![rule.clone()],
        body: false,
        expires: Instant::now() + Duration::from_secs(3600),
    };
    let (intercepted, sandbox_ca) = proxy.add_sandbox_with_secrets(
        &secret_dir,
        Policy::new(std::slice::from_ref(&rule))?,
        records,
        vec![secret],
    )?;
    let sandbox_ca = sandbox_ca.ok_or("no sandbox CA")?;

    let tunnel_client = client_config(CertificateDer::pem_file_iter(&ca_file)?)?;
    let intercept_client = client_config(CertificateDer::pem_slice_iter(sandbox_ca.as_bytes()))?;

    println!(
        "{requests} sequential HTTPS requests through the proxy's socket, best of {rounds} rounds"
    );
    let mut results = Vec::new();
    for (label, socket, config) in [
        ("tunnel", plain.socket(), &tunnel_client),
        ("intercepted", intercepted.socket(), &intercept_client),
    ] {
        let mut fresh = Duration::MAX;
        let mut kept = Duration::MAX;
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..requests {
                let mut conn = open(socket, port, config)?;
                request(&mut conn, port)?;
            }
            fresh = fresh.min(start.elapsed() / requests as u32);
            let mut conn = open(socket, port, config)?;
            request(&mut conn, port)?;
            let start = Instant::now();
            for _ in 0..requests {
                request(&mut conn, port)?;
            }
            kept = kept.min(start.elapsed() / requests as u32);
        }
        println!(
            "  {label:<12} new connection each: {:>8.1} us/request   keep-alive: {:>7.1} us/request",
            micros(fresh),
            micros(kept)
        );
        results.push((fresh, kept));
    }
    let (tunnel, intercept) = (results[0], results[1]);
    println!(
        "interception vs tunnel: new connection x{:.2} (+{:.1} us), keep-alive x{:.2} (+{:.1} us)",
        intercept.0.as_secs_f64() / tunnel.0.as_secs_f64(),
        micros(intercept.0) - micros(tunnel.0),
        intercept.1.as_secs_f64() / tunnel.1.as_secs_f64(),
        micros(intercept.1) - micros(tunnel.1),
    );
    let expected = rounds * (2 * requests + 1);
    let got = substituted.load(Ordering::Relaxed);
    if got != expected {
        return Err(format!("the upstream saw the value {got} times, expected {expected}").into());
    }
    proxy.remove_sandbox(plain)?;
    proxy.remove_sandbox(intercepted)?;
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn client_config<'a>(
    certs: impl Iterator<Item = std::result::Result<CertificateDer<'a>, rustls::pki_types::pem::Error>>,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert?.into_owned())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type Client = rustls::StreamOwned<rustls::ClientConnection, UnixStream>;

/// CONNECT through the sandbox's socket, then TLS.
fn open(socket: &Path, port: u16, config: &Arc<rustls::ClientConfig>) -> Result<Client> {
    let mut sock = UnixStream::connect(socket)?;
    write!(
        sock,
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let head = read_head(&mut sock)?;
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(format!("CONNECT: {}", String::from_utf8_lossy(&head)).into());
    }
    let name = ServerName::try_from("127.0.0.1")?.to_owned();
    let conn = rustls::ClientConnection::new(Arc::clone(config), name)?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

fn request(conn: &mut Client, port: u16) -> Result<()> {
    write!(
        conn,
        "GET /ok HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {PLACEHOLDER}\r\n\r\n"
    )?;
    let head = read_head(conn)?;
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(format!("GET: {}", String::from_utf8_lossy(&head)).into());
    }
    let mut body = [0u8; 2];
    conn.read_exact(&mut body)?;
    Ok(())
}

/// Reads up to and including the blank line, byte by byte (nothing past it is consumed).
fn read_head(from: &mut impl Read) -> Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if from.read(&mut byte)? == 0 {
            return Err("closed before the end of a head".into());
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// A CA (written to `dir/ca.pem`) and a server config for 127.0.0.1 signed by it.
fn upstream_tls(dir: &Path) -> Result<(PathBuf, Arc<rustls::ServerConfig>)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem())?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&key, &issuer)?;
    let key = PrivateKeyDer::try_from(key.serialize_der())?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)?;
    Ok((ca_file, Arc::new(config)))
}

/// The upstream: answers every request "ok", keep-alive; counts requests that carry the
/// real value.
fn upstream(config: Arc<rustls::ServerConfig>, substituted: Arc<AtomicUsize>) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for tcp in listener.incoming().map_while(std::result::Result::ok) {
            let config = Arc::clone(&config);
            let substituted = Arc::clone(&substituted);
            thread::spawn(move || serve(tcp, config, &substituted));
        }
    });
    Ok(port)
}

fn serve(tcp: TcpStream, config: Arc<rustls::ServerConfig>, substituted: &AtomicUsize) {
    let _ = tcp.set_nodelay(true);
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while let Ok(head) = read_head(&mut tls) {
        let needle = format!("Bearer {VALUE}");
        if head.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            substituted.fetch_add(1, Ordering::Relaxed);
        }
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        if tls.write_all(answer).and_then(|()| tls.flush()).is_err() {
            return;
        }
    }
}
