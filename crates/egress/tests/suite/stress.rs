//! Load and misbehaviour: many concurrent connections, slow clients, upstreams that never
//! answer, the connection limit and oversized heads. None of them may stall a parallel
//! fast request, in the same sandbox or another. (`heavy_` tests run one at a time under
//! nextest: their latency assertions should not compete with sandbox stress tests.)

use std::thread;

use super::*;

/// A fast upstream on loopback that answers every connection with a small response.
fn fast_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfast",
                );
            });
        }
    });
    port
}

#[test]
fn heavy_two_hundred_concurrent_requests_all_succeed() {
    let port = fast_upstream();
    let mut h = Harness::new(config(resolver(&[])));
    let sb = h.sandbox(rules(&[&format!("127.0.0.1:{port}")]));
    let request =
        format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let mut s = sb.connect();
            let request = request.clone();
            thread::spawn(move || {
                s.write_all(request.as_bytes()).unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap();
                answer
            })
        })
        .collect();
    for client in clients {
        let answer = client.join().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("fast"),
            "{answer}"
        );
    }
    // Past the limit of 128 open connections the rest waited in the kernel's queue, and
    // the pause is counted (not recorded per connection).
    let records: Vec<Decision> =
        std::iter::from_fn(|| sb.events.recv_timeout(Duration::from_millis(1500)).ok()).collect();
    assert_eq!(
        records
            .iter()
            .filter(|d| d.allowed && d.phase == Phase::Decided)
            .count(),
        200
    );
    assert_eq!(
        records.iter().filter(|d| d.phase == Phase::Closed).count(),
        200
    );
    assert!(
        records
            .iter()
            .filter(|d| !d.allowed)
            .all(|d| d.reason == "accepting paused: 128 connections open"),
        "{records:?}"
    );
}

#[test]
fn heavy_slow_clients_and_silent_upstreams_do_not_stall_a_fast_request() {
    let fast = fast_upstream();
    let silent = Upstream::silent(None, loopback());
    // More connections than the default limit are held here: this is about stalls.
    let mut h = Harness::new(ProxyConfig {
        max_connections_per_sandbox: 256,
        ..config(resolver(&[]))
    });
    let busy = h.sandbox(rules(&[
        &format!("127.0.0.1:{fast}"),
        &format!("127.0.0.1:{}", silent.port),
    ]));
    let other = h.sandbox(rules(&[&format!("127.0.0.1:{fast}")]));
    let fast_url = format!("http://127.0.0.1:{fast}/");
    let baseline = timed_get(&busy, &fast_url);

    // 100 connections that never send a byte.
    let idle: Vec<UnixStream> = (0..100).map(|_| busy.connect()).collect();
    // 20 clients sending their head one byte every 100 ms, past the 2 s header timeout.
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let mut s = busy.connect();
            thread::spawn(move || {
                let start = Instant::now();
                for b in b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: yes-very-slow\r\n\r\n" {
                    if s.write_all(&[*b]).is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                (answer, start.elapsed())
            })
        })
        .collect();
    // 20 requests to an upstream that accepts and never answers (3 s idle timeout).
    let stuck: Vec<_> = (0..20)
        .map(|_| {
            let mut s = busy.connect();
            let port = silent.port;
            thread::spawn(move || {
                let start = Instant::now();
                write!(s, "GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n").unwrap();
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer);
                (answer, start.elapsed())
            })
        })
        .collect();

    thread::sleep(Duration::from_millis(300));
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        worst = worst
            .max(timed_get(&busy, &fast_url))
            .max(timed_get(&other, &fast_url));
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        worst < baseline + Duration::from_secs(1),
        "a fast request took {worst:?} (alone: {baseline:?})"
    );

    for client in slow {
        let (answer, took) = client.join().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout"),
            "{answer}"
        );
        assert!(took < Duration::from_secs(4), "{took:?}");
    }
    for client in stuck {
        let (answer, took) = client.join().unwrap();
        assert!(answer.is_empty(), "{answer:?}");
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }
    drop(idle);
    // Refusals with one reason are aggregated: their counts add up.
    let mut reasons = Vec::new();
    while let Ok(d) = busy.events.recv_timeout(Duration::from_millis(1500)) {
        reasons.push((d.reason, d.count));
    }
    let count = |r: &str| -> u64 {
        reasons
            .iter()
            .filter(|(x, _)| x.as_str() == r)
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(count("idle timeout"), 20, "{reasons:?}");
    assert_eq!(
        count("request head not complete within the header timeout"),
        20
    );
    assert_eq!(count("no request within the header timeout"), 100);
}

#[test]
fn heavy_connections_over_the_limit_wait_unread_and_the_pause_is_recorded() {
    let port = fast_upstream();
    let mut h = Harness::new(ProxyConfig {
        max_connections_per_sandbox: 4,
        ..config(resolver(&[]))
    });
    let sb = h.sandbox(rules(&[&format!("127.0.0.1:{port}")]));
    let held: Vec<UnixStream> = (0..4).map(|_| sb.connect()).collect();
    thread::sleep(Duration::from_millis(100));
    let mut over = sb.connect();
    write!(
        over,
        "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    over.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let waited = over.read(&mut byte).unwrap_err();
    assert_eq!(waited.kind(), std::io::ErrorKind::WouldBlock);
    let d = sb.decided();
    assert!(
        !d.allowed && d.reason == "accepting paused: 4 connections open",
        "{d:?}"
    );
    drop(held);
    over.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = String::new();
    over.read_to_string(&mut answer).unwrap();
    assert!(answer.ends_with("fast"), "{answer}");
}

#[test]
fn heavy_the_accept_rate_is_bounded_and_a_flood_is_aggregated() {
    let mut h = Harness::new(ProxyConfig {
        accepts_per_second: 50,
        accept_burst: 10,
        ..config(resolver(&[]))
    });
    let sb = h.sandbox(rules(&["allowed.test:443"]));
    let start = Instant::now();
    for _ in 0..60 {
        let mut s = sb.connect();
        s.write_all(b"CONNECT refused.test:443 HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    }
    // A burst of 10, then 50 a second: the other 50 took about a second.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(800), "{took:?}");
    let mut records = Vec::new();
    while let Ok(d) = sb.events.recv_timeout(Duration::from_millis(1500)) {
        records.push(d);
    }
    let refused: u64 = records
        .iter()
        .filter(|d| d.host == "refused.test")
        .map(|d| d.count)
        .sum();
    assert_eq!(refused, 60, "{records:?}");
    assert!(records.len() < 10, "{records:?}");
    assert!(
        records
            .iter()
            .any(|d| d.reason == "accepting paused: over 50 new connections a second"),
        "{records:?}"
    );
}

#[test]
fn an_oversized_head_gets_431() {
    let mut h = Harness::new(config(resolver(&[])));
    let sb = h.sandbox(rules(&["api.test:80"]));
    let mut s = sb.connect();
    let big = format!(
        "GET http://api.test/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "x".repeat(20_000)
    );
    let _ = s.write_all(big.as_bytes());
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert_eq!(sb.decided().reason, "request head larger than 16384 bytes");
}
