//! Throughput and added latency of the egress proxy against direct loopback TCP, in one
//! run (bench/egress.sh builds and runs this in release mode).
//!
//! A small upstream on 127.0.0.1 answers `GET /bytes/N` with N bytes. The proxy allows
//! exactly that `127.0.0.1:PORT` (an IP-literal rule). Measured: downloads direct, through
//! the proxy's Unix socket (absolute-form HTTP and a CONNECT tunnel), and through a
//! threaded loopback-TCP-to-Unix bridge like the in-sandbox one; then many small requests,
//! each on a new connection, direct and through the proxy.
//!
//!     egress_bench [BYTES] [REQUESTS] [ROUNDS]     defaults: 1 GiB, 1000, 3

use std::error::Error;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nanoclaw_egress::{Policy, Proxy, ProxyConfig};
use nanoclaw_spec::EgressRule;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let bytes: u64 = args.next().map_or(Ok(1 << 30), |a| a.parse())?;
    let requests: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(3), |a| a.parse())?;

    let upstream = upstream()?;
    let proxy = Proxy::start(ProxyConfig::default())?;
    let dir = tempfile::tempdir()?;
    let (records, received) = std::sync::mpsc::sync_channel(64);
    let rule = EgressRule {
        host: "127.0.0.1".into(),
        port: upstream,
    };
    let endpoint = proxy.add_sandbox(dir.path(), Policy::new(&[rule])?, records)?;
    let socket = endpoint.socket().to_path_buf();
    let counter = thread::spawn(move || received.iter().count());
    let bridge = bridge(&socket)?;

    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{upstream}\r\n\r\n");
    let absolute = |n: u64| get(&format!("http://127.0.0.1:{upstream}/bytes/{n}"));
    let origin = |n: u64| get(&format!("/bytes/{n}"));
    let connect = format!("CONNECT 127.0.0.1:{upstream} HTTP/1.1\r\n\r\n");

    println!(
        "download of {} MiB, best of {rounds} rounds (Gbit/s):",
        bytes >> 20
    );
    let mut best = [f64::MIN; 4];
    for _ in 0..rounds {
        let runs = [
            fetch(
                TcpStream::connect(("127.0.0.1", upstream))?,
                "",
                &origin(bytes),
                bytes,
            )?,
            fetch(UnixStream::connect(&socket)?, "", &absolute(bytes), bytes)?,
            fetch(
                UnixStream::connect(&socket)?,
                &connect,
                &origin(bytes),
                bytes,
            )?,
            fetch(
                TcpStream::connect(("127.0.0.1", bridge))?,
                "",
                &absolute(bytes),
                bytes,
            )?,
        ];
        for (best, took) in best.iter_mut().zip(runs) {
            *best = best.max(gbits(bytes, took));
        }
    }
    for (label, rate) in [
        "direct tcp",
        "proxy, absolute-form http",
        "proxy, connect tunnel",
        "proxy via tcp-to-unix bridge",
    ]
    .iter()
    .zip(best)
    {
        println!("  {label:<30} {rate:>6.2}");
    }

    println!("{requests} requests of 100 bytes, a new connection each (median / p99 ms):");
    let small = 100;
    let mut times: [Vec<Duration>; 3] = Default::default();
    for _ in 0..requests {
        // Interleaved, so that drift in machine load hits every path alike.
        times[0].push(fetch(
            TcpStream::connect(("127.0.0.1", upstream))?,
            "",
            &origin(small),
            small,
        )?);
        times[1].push(fetch(
            UnixStream::connect(&socket)?,
            "",
            &absolute(small),
            small,
        )?);
        times[2].push(fetch(
            TcpStream::connect(("127.0.0.1", bridge))?,
            "",
            &absolute(small),
            small,
        )?);
    }
    let mut medians = [0.0; 3];
    for ((label, samples), median) in ["direct tcp", "proxy", "proxy via tcp-to-unix bridge"]
        .iter()
        .zip(times.iter_mut())
        .zip(medians.iter_mut())
    {
        samples.sort();
        *median = ms(samples[samples.len() / 2]);
        let p99 = ms(samples[samples.len() * 99 / 100]);
        println!("  {label:<30} {median:>6.3} / {p99:.3}");
    }
    println!(
        "added per request (median): proxy {:.3} ms, proxy via bridge {:.3} ms",
        medians[1] - medians[0],
        medians[2] - medians[0]
    );

    proxy.remove_sandbox(endpoint)?;
    proxy.shutdown()?;
    let records = counter.join().map_err(|_| "record counter panicked")?;
    println!("records: {records} (a decided and a closed one per proxied connection)");
    Ok(())
}

fn gbits(bytes: u64, took: Duration) -> f64 {
    bytes as f64 * 8.0 / took.as_secs_f64() / 1e9
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sends `preamble` (a CONNECT, whose answer is read) and `request`, reads the response to
/// the end and checks its body length; returns the time from connected to done.
fn fetch<S: Read + Write>(mut s: S, preamble: &str, request: &str, body: u64) -> Result<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    if !preamble.is_empty() {
        s.write_all(preamble.as_bytes())?;
        let (head, rest) = read_head(&mut s, &mut buf)?;
        if !head.starts_with("HTTP/1.1 200") || rest != 0 {
            return Err(format!("connect refused: {head}").into());
        }
    }
    s.write_all(request.as_bytes())?;
    let (head, got) = read_head(&mut s, &mut buf)?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("request refused: {head}").into());
    }
    let mut got = got as u64;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            n => got += n as u64,
        }
    }
    if got != body {
        return Err(format!("got {got} body bytes, expected {body}").into());
    }
    Ok(start.elapsed())
}

/// Reads a response head; returns it and how many body bytes came with it.
fn read_head<S: Read>(s: &mut S, buf: &mut [u8]) -> Result<(String, usize)> {
    let mut head = Vec::new();
    loop {
        let n = s.read(buf)?;
        if n == 0 {
            return Err("connection closed before a response".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = head.len() - end - 4;
            head.truncate(end);
            return Ok((String::from_utf8_lossy(&head).into_owned(), rest));
        }
    }
}

/// The upstream: answers `GET /bytes/N` with N zero bytes, one thread per connection.
fn upstream() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(std::result::Result::ok) {
            thread::spawn(move || {
                let _ = serve(stream);
            });
        }
    });
    Ok(port)
}

fn serve(mut s: TcpStream) -> Result<()> {
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; 1 << 20];
    let (head, _) = read_head(&mut s, &mut buf)?;
    let n: u64 = head
        .split(' ')
        .nth(1)
        .and_then(|path| path.strip_prefix("/bytes/"))
        .ok_or("bad request")?
        .parse()?;
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
    )?;
    buf.fill(0);
    let mut left = n;
    while left > 0 {
        let chunk = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..chunk])?;
        left -= chunk as u64;
    }
    s.shutdown(Shutdown::Write)?;
    Ok(())
}

/// A loopback TCP port relayed to `socket` by two threads per connection.
fn bridge(socket: &Path) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let socket = socket.to_path_buf();
    thread::spawn(move || {
        for tcp in listener.incoming().map_while(std::result::Result::ok) {
            let Ok(unix) = UnixStream::connect(&socket) else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (Ok(tcp_in), Ok(unix_out)) = (tcp.try_clone(), unix.try_clone()) else {
                continue;
            };
            thread::spawn(move || pipe(tcp_in, unix_out));
            thread::spawn(move || pipe(unix, tcp));
        }
    });
    Ok(port)
}

fn pipe<R: Read, W: Write + Shut>(mut from: R, mut to: W) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    to.shut();
}

trait Shut {
    fn shut(&self);
}

impl Shut for TcpStream {
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Shut for UnixStream {
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}
