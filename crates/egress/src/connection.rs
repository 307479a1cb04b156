//! One client connection on a sandbox's socket, from the first byte to the close: tell
//! SOCKS5 (first byte 0x05) from HTTP, read the request within the header timeout, decide,
//! connect, relay, and record every step on the sandbox's channel.
//!
//! The decision is, in this order: the request must match a rule of *this* sandbox's
//! policy (no lookup happens before that); a name must not be a metadata name; the name is
//! resolved once; every address is screened (`nanoclaw_spec::address`, then `local`: not
//! one of this host's own) unless the rule is the request's exact IP literal; the proxy
//! connects to the first address that passed, trying the next passed address only if that
//! connect fails. Refusals go to the sandbox's `Ledger` without waiting; an allowed
//! connection's records wait for room there. This module must never connect to an address
//! it did not screen, never resolve a name twice, and never let anything but the request
//! target choose the upstream.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nanoclaw_spec::address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};

use crate::decision::{Decision, Phase, Protocol};
use crate::http::{self, Request};
use crate::ledger::Ledger;
use crate::local;
use crate::policy::{Ask, Policy};
use crate::proxy::ProxyConfig;
use crate::relay::{self, End, Meter};
use crate::secrets::Secrets;
use crate::socks;
use crate::target::{Host, Target};
use crate::tls::Authority;

/// What every connection of one sandbox shares.
pub(crate) struct Sandbox {
    pub policy: Policy,
    pub config: Arc<ProxyConfig>,
    pub ledger: Ledger,
    /// Connection numbers, shared by every sandbox of one proxy.
    pub ids: Arc<AtomicU64>,
    /// What to substitute in its requests (none for most sandboxes).
    pub secrets: Secrets,
    /// Present when `secrets` has any: how its listed hosts are intercepted.
    pub intercept: Option<Intercept>,
}

/// The TLS material for intercepting one sandbox's listed hosts.
pub(crate) struct Intercept {
    pub authority: Authority,
    pub client: Arc<rustls::ClientConfig>,
}

/// What the record says about a request, as far as it was understood.
pub(crate) struct Asked<'a> {
    pub protocol: Protocol,
    pub target: Option<&'a Target>,
    pub method: Option<&'a str>,
}

/// A refused or failed request: the HTTP status and SOCKS5 reply code it gets.
struct Denial {
    status: u16,
    socks: u8,
    reason: String,
}

impl Denial {
    fn policy(reason: String) -> Denial {
        Denial {
            status: 403,
            socks: socks::NOT_ALLOWED,
            reason,
        }
    }
}

/// A connection being served: its number, its meter and, once allowed, its record.
pub(crate) struct Connection<'s> {
    pub sandbox: &'s Sandbox,
    pub id: u64,
    pub meter: Meter,
    opened: Mutex<Option<Decision>>,
}

impl Sandbox {
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a pause of the accept loop (over the connection or accept-rate limit): the
    /// connections it holds back wait in the kernel's queue, unread.
    pub(crate) fn throttled(&self, reason: String) {
        self.ledger.refuse(Decision {
            connection: self.next_id(),
            phase: Phase::Decided,
            allowed: false,
            protocol: Protocol::Unknown,
            host: String::new(),
            port: 0,
            resolved: None,
            method: None,
            reason,
            bytes_up: 0,
            bytes_down: 0,
            elapsed_ms: 0,
            count: 1,
            secret: None,
        });
    }
}

/// Serves one connection until it ends or the sandbox is removed (`cancel` turns true).
pub(crate) async fn serve(
    mut client: UnixStream,
    sandbox: Arc<Sandbox>,
    cancel: watch::Receiver<bool>,
) {
    let connection = Connection {
        sandbox: &sandbox,
        id: sandbox.next_id(),
        meter: Meter::new(),
        opened: Mutex::new(None),
    };
    let end = tokio::select! {
        end = connection.handle(&mut client) => end,
        () = cancelled(cancel) => "sandbox removed".to_string(),
    };
    let opened = connection
        .opened
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(mut record) = opened {
        record.phase = Phase::Closed;
        record.reason = end;
        record.bytes_up = connection.meter.up.load(Ordering::Relaxed);
        record.bytes_down = connection.meter.down.load(Ordering::Relaxed);
        record.elapsed_ms = connection.meter.elapsed_ms();
        sandbox.ledger.record(record).await;
    }
}

/// Returns once the sandbox is removed (or its proxy is gone).
pub(crate) async fn cancelled(mut cancel: watch::Receiver<bool>) {
    let _ = cancel.wait_for(|removed| *removed).await;
}

impl Connection<'_> {
    pub(crate) fn config(&self) -> &ProxyConfig {
        &self.sandbox.config
    }

    pub(crate) async fn record(
        &self,
        asked: &Asked<'_>,
        allowed: bool,
        resolved: Option<IpAddr>,
        reason: String,
    ) {
        let decision = Decision {
            connection: self.id,
            phase: Phase::Decided,
            allowed,
            protocol: asked.protocol,
            host: asked.target.map(|t| t.host.to_string()).unwrap_or_default(),
            port: asked.target.map_or(0, |t| t.port),
            resolved,
            method: asked.method.map(str::to_string),
            reason,
            bytes_up: 0,
            bytes_down: 0,
            elapsed_ms: self.meter.elapsed_ms(),
            count: 1,
            secret: None,
        };
        if allowed {
            *self.opened.lock().unwrap_or_else(PoisonError::into_inner) = Some(decision.clone());
            self.sandbox.ledger.record(decision).await;
        } else {
            self.sandbox.ledger.refuse(decision);
        }
    }

    /// Serves the connection; returns why it ended (used only for an allowed one).
    async fn handle(&self, client: &mut UnixStream) -> String {
        let deadline = Instant::now() + self.config().header_timeout;
        let mut first = [0u8; 1];
        match timeout_at(deadline, client.read(&mut first)).await {
            Ok(Ok(1)) => {}
            Ok(_) => return "client closed before a request".into(),
            Err(_) => {
                let asked = Asked {
                    protocol: Protocol::Unknown,
                    target: None,
                    method: None,
                };
                self.record(
                    &asked,
                    false,
                    None,
                    "no request within the header timeout".into(),
                )
                .await;
                return String::new();
            }
        }
        if first[0] == 0x05 {
            self.socks(client, deadline).await
        } else {
            self.http(client, first[0], deadline).await
        }
    }

    async fn socks(&self, client: &mut UnixStream, deadline: Instant) -> String {
        let mut asked = Asked {
            protocol: Protocol::Socks5,
            target: None,
            method: None,
        };
        let target = match timeout_at(deadline, socks::handshake(client)).await {
            Ok(Ok(target)) => target,
            Ok(Err(refused)) => {
                asked.target = refused.target.as_ref();
                self.record(&asked, false, None, refused.reason).await;
                return String::new();
            }
            Err(_) => {
                socks::reply(client, socks::GENERAL_FAILURE).await;
                self.record(
                    &asked,
                    false,
                    None,
                    "socks5 request not complete within the header timeout".into(),
                )
                .await;
                return String::new();
            }
        };
        asked.target = Some(&target);
        match self.open(&target, &Ask::Tunnel).await {
            Err(denial) => {
                socks::reply(client, denial.socks).await;
                self.record(&asked, false, None, denial.reason).await;
                String::new()
            }
            Ok((mut upstream, ip, rule)) => {
                self.record(&asked, true, Some(ip), format!("allowed by {rule}"))
                    .await;
                socks::reply(client, socks::SUCCEEDED).await;
                self.relay(client, &mut upstream, None).await
            }
        }
    }

    async fn http(&self, client: &mut UnixStream, first: u8, deadline: Instant) -> String {
        let unknown = Asked {
            protocol: Protocol::Http,
            target: None,
            method: None,
        };
        let limit = self.config().max_header_bytes;
        let mut buf = vec![first];
        let mut chunk = [0u8; 4096];
        let mut searched = 0;
        let head_len = loop {
            if let Some(end) = http::head_end(&buf, searched) {
                break end;
            }
            searched = buf.len();
            if buf.len() >= limit {
                let reason = format!("request head larger than {limit} bytes");
                return self.refuse(client, &unknown, 431, reason).await;
            }
            let room = chunk.len().min(limit + 4 - buf.len());
            match timeout_at(deadline, client.read(&mut chunk[..room])).await {
                Ok(Ok(0)) | Ok(Err(_)) => return String::new(),
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {
                    let reason = "request head not complete within the header timeout".into();
                    return self.refuse(client, &unknown, 408, reason).await;
                }
            }
        };
        let leftover = buf.split_off(head_len);
        match http::parse(&buf) {
            Err(refused) => {
                let asked = Asked {
                    protocol: Protocol::Http,
                    target: refused.target.as_ref(),
                    method: refused.method.as_deref(),
                };
                self.refuse(client, &asked, refused.status, refused.reason)
                    .await
            }
            Ok(Request::Connect(target)) => {
                let asked = Asked {
                    protocol: Protocol::Connect,
                    target: Some(&target),
                    method: None,
                };
                let intercept = self
                    .sandbox
                    .intercept
                    .as_ref()
                    .filter(|_| self.sandbox.secrets.intercepts(&target));
                match self.open(&target, &Ask::Tunnel).await {
                    Err(denial) => {
                        self.refuse(client, &asked, denial.status, denial.reason)
                            .await
                    }
                    Ok(opened) if intercept.is_some() => {
                        let Some(intercept) = intercept else {
                            return String::new();
                        };
                        self.intercepted(client, opened, &asked, &target, leftover, intercept)
                            .await
                    }
                    Ok((mut upstream, ip, rule)) => {
                        self.record(&asked, true, Some(ip), format!("allowed by {rule}"))
                            .await;
                        let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
                        if client.write_all(established).await.is_err() {
                            return "client closed".into();
                        }
                        if let Err(e) =
                            relay::send(&mut upstream, &leftover, &self.meter.up, &self.meter).await
                        {
                            return format!("upstream failed: {e}");
                        }
                        self.relay(client, &mut upstream, None).await
                    }
                }
            }
            Ok(Request::Forward(mut forward)) => {
                let (target, method) = (forward.target.clone(), forward.method.clone());
                let asked = Asked {
                    protocol: Protocol::Http,
                    target: Some(&target),
                    method: Some(&method),
                };
                let ask = Ask::Http {
                    method: &forward.method,
                    path: &forward.path,
                };
                match self.open(&forward.target, &ask).await {
                    Err(denial) => {
                        self.refuse(client, &asked, denial.status, denial.reason)
                            .await
                    }
                    Ok((upstream, ip, rule)) if !self.sandbox.secrets.list.is_empty() => {
                        self.record(&asked, true, Some(ip), format!("allowed by {rule}"))
                            .await;
                        self.forward_with_secrets(client, upstream, forward, leftover, &asked)
                            .await
                    }
                    Ok((mut upstream, ip, rule)) => {
                        self.record(&asked, true, Some(ip), format!("allowed by {rule}"))
                            .await;
                        let body_start = match forward.body.feed(&leftover) {
                            Ok(n) => &leftover[..n],
                            Err(e) => return format!("client failed: {e}"),
                        };
                        for part in [&forward.head[..], body_start] {
                            let sent =
                                relay::send(&mut upstream, part, &self.meter.up, &self.meter);
                            if let Err(e) = sent.await {
                                return format!("upstream failed: {e}");
                            }
                        }
                        self.relay(client, &mut upstream, Some(forward.body)).await
                    }
                }
            }
        }
    }

    pub(crate) async fn relay(
        &self,
        client: &mut UnixStream,
        upstream: &mut TcpStream,
        body: Option<http::Body>,
    ) -> String {
        match relay::relay(
            client,
            upstream,
            &self.meter,
            self.config().idle_timeout,
            body,
        )
        .await
        {
            End::Done => "closed".into(),
            End::Idle => "idle timeout".into(),
            End::Failed(e) => format!("closed on error: {e}"),
        }
    }

    /// Answers an HTTP refusal, records it and closes gently.
    pub(crate) async fn refuse(
        &self,
        client: &mut UnixStream,
        asked: &Asked<'_>,
        status: u16,
        reason: String,
    ) -> String {
        self.record(asked, false, None, reason.clone()).await;
        let response = http::refusal_response(status, &reason);
        let grace = Duration::from_secs(1);
        if let Ok(Ok(())) = timeout(grace, client.write_all(&response)).await {
            let _ = client.shutdown().await;
            // Read what the client still sends (a request body) for a moment, so that
            // closing with unread data does not reset the connection before the client
            // has read the refusal.
            let drain = async {
                let mut sink = [0u8; 4096];
                let mut left = 1 << 20;
                while left > 0 {
                    match client.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left -= n.min(left),
                    }
                }
            };
            let _ = timeout(grace, drain).await;
        }
        String::new()
    }

    /// Decides `ask` to `target` and, if allowed, connects: returns the upstream, the
    /// address it was reached at and the rule that allowed it.
    async fn open(
        &self,
        target: &Target,
        ask: &Ask<'_>,
    ) -> Result<(TcpStream, IpAddr, String), Denial> {
        let allowed = self
            .sandbox
            .policy
            .check(target, ask)
            .map_err(Denial::policy)?;
        let connect_timeout = self.config().connect_timeout;
        let ips = match &target.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => {
                if let Some(why) = address::refused_name(name) {
                    return Err(Denial::policy(format!("{name} is a {why}")));
                }
                let lookup = self.config().resolver.lookup(name);
                let unresolvable = |reason| Denial {
                    status: 502,
                    socks: socks::HOST_UNREACHABLE,
                    reason,
                };
                match timeout(connect_timeout, lookup).await {
                    Ok(Ok(ips)) => ips,
                    Ok(Err(e)) => return Err(unresolvable(format!("cannot resolve {name}: {e}"))),
                    Err(_) => return Err(unresolvable(format!("resolving {name} timed out"))),
                }
            }
        };
        let ips = if allowed.exact_ip {
            ips
        } else {
            screen(target, ips)?
        };
        let mut failure = None;
        for ip in ips {
            let addr = SocketAddr::new(ip, target.port);
            match timeout(connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(upstream)) => {
                    // Small requests and TLS handshakes should not wait for Nagle.
                    let _ = upstream.set_nodelay(true);
                    return Ok((upstream, ip, allowed.rule));
                }
                Ok(Err(e)) => {
                    let socks = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        socks::CONNECTION_REFUSED
                    } else {
                        socks::HOST_UNREACHABLE
                    };
                    failure = Some(Denial {
                        status: 502,
                        socks,
                        reason: format!("cannot connect to {target} at {ip}: {e}"),
                    });
                }
                Err(_) => {
                    failure = Some(Denial {
                        status: 504,
                        socks: socks::TTL_EXPIRED,
                        reason: format!("connecting to {target} at {ip} timed out"),
                    });
                }
            }
        }
        Err(failure.unwrap_or_else(|| Denial::policy(format!("{target} has no address"))))
    }
}

/// Keeps the addresses that may be connected to, in order; refuses if none may.
fn screen(target: &Target, ips: Vec<IpAddr>) -> Result<Vec<IpAddr>, Denial> {
    let mut refused = Vec::new();
    let mut passed = Vec::new();
    for ip in ips {
        let why = address::refusal(ip)
            .map(|why| why.to_string())
            .or_else(|| local::own_address(ip));
        match why {
            Some(why) => refused.push(format!("{ip} ({why})")),
            None => passed.push(ip),
        }
    }
    if passed.is_empty() {
        return Err(Denial::policy(format!(
            "{} resolves only to refused addresses: {}",
            target.host,
            refused.join(", ")
        )));
    }
    Ok(passed)
}
