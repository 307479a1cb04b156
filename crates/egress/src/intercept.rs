//! Secret substitution in a sandbox's requests: inside CONNECT tunnels to hosts listed for
//! a secret (TLS terminated with a leaf of the sandbox's own CA, then re-encrypted toward
//! the upstream, verified against the roots), and in plain-HTTP requests.
//!
//! An intercepted tunnel carries HTTP/1.1 exchanges one after the other over one upstream
//! TLS connection: each request head is parsed (origin-form, its Host must name the
//! CONNECT target), rebuilt without hop-by-hop headers, its placeholders replaced in header
//! values (and, for a secret with `body`, in the body, buffered up to
//! `MAX_SUBSTITUTED_BODY`), sent, and the response relayed framed by its length, chunks or
//! the upstream's close. The upstream's TLS is verified before the client is told the
//! tunnel is established: a certificate that does not verify is a 502, never a bypass.
//!
//! Responses are scanned for the values of the secrets (heads, and bodies after
//! de-chunking) and a value found is put back as its placeholder; a request that carried a
//! value asks for `Accept-Encoding: identity` and an encoded response to it is a 502. In
//! plain HTTP, nothing is substituted toward port 443 (cleartext where TLS is meant).
//!
//! This module must never send a request upstream before its head was parsed and checked,
//! never replace a placeholder toward a host not listed for its secret, and never put a
//! value into a record or an error.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;
use zeroize::Zeroizing;

use crate::connection::{Asked, Connection, Intercept};
use crate::decision::{Decision, Phase, Protocol, SecretEvent, SecretUse};
use crate::http::{self, Body, Forward, ResponseBody};
use crate::relay::{self, Meter};
use crate::secrets::{unsubstitute_head, Met, Secrets, Unsubstitute, MAX_SUBSTITUTED_BODY};
use crate::socks;
use crate::target::Target;
use crate::tls;

/// How the client asked for the tunnel, and so how it is told the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    /// HTTP CONNECT, with what the client sent after its head (expected: nothing).
    Connect(Vec<u8>),
    Socks,
}

/// The longest response head accepted from an intercepted upstream.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// One side of an exchange, read with a buffer: what was read past a head or body stays
/// for the next read.
pub(crate) struct Side<S> {
    pub io: S,
    pub buf: Vec<u8>,
    idle: Duration,
}

/// Why reading a head failed.
pub(crate) enum HeadError {
    /// The peer closed before the first byte of a head: a clean end.
    Closed,
    TooLarge,
    Io(std::io::Error),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Side<S> {
    pub(crate) fn new(io: S, buf: Vec<u8>, idle: Duration) -> Side<S> {
        Side { io, buf, idle }
    }

    /// Reads more into the buffer; `Ok(0)` at the end.
    async fn fill(&mut self, meter: &Meter) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = timeout(self.idle, self.io.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout"))??;
        self.buf.extend_from_slice(&chunk[..n]);
        if n > 0 {
            meter.touch();
        }
        Ok(n)
    }

    /// Reads a complete head (up to `limit` bytes), leaving what follows in the buffer.
    pub(crate) async fn head(&mut self, limit: usize, meter: &Meter) -> Result<Vec<u8>, HeadError> {
        let mut searched = 0;
        loop {
            if let Some(end) = http::head_end(&self.buf, searched) {
                let rest = self.buf.split_off(end);
                return Ok(std::mem::replace(&mut self.buf, rest));
            }
            searched = self.buf.len();
            if self.buf.len() > limit {
                return Err(HeadError::TooLarge);
            }
            match self.fill(meter).await {
                Ok(0) if self.buf.is_empty() => return Err(HeadError::Closed),
                Ok(0) => {
                    return Err(HeadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(e) => return Err(HeadError::Io(e)),
            }
        }
    }

    /// Takes the body framed by `body` from the buffer (reading more as needed).
    async fn next_body_bytes(
        &mut self,
        body: &mut Body,
        meter: &Meter,
    ) -> std::io::Result<Vec<u8>> {
        if self.buf.is_empty() && self.fill(meter).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let take = body
            .feed(&self.buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let rest = self.buf.split_off(take);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// Copies the body framed by `body` to `to`, showing it to `scan` if given.
    pub(crate) async fn body_to<W: AsyncWrite + Unpin>(
        &mut self,
        mut body: Body,
        to: &mut W,
        counter: &AtomicU64,
        meter: &Meter,
        mut scan: Option<&mut BodyScan<'_>>,
    ) -> std::io::Result<()> {
        while !body.done() {
            let bytes = self.next_body_bytes(&mut body, meter).await?;
            if let Some(scan) = scan.as_deref_mut() {
                scan.feed(&bytes);
            }
            relay::send(to, &bytes, counter, meter).await?;
        }
        Ok(())
    }

    /// Takes the data of the body framed by `body` from the buffer (reading more as
    /// needed): without chunk framing or trailers.
    async fn next_body_data(&mut self, body: &mut Body, meter: &Meter) -> std::io::Result<Vec<u8>> {
        if self.buf.is_empty() && self.fill(meter).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut data = Vec::new();
        let take = body
            .feed_data(&self.buf, &mut data)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.buf.drain(..take);
        Ok(data)
    }

    /// Copies a response body framed by `body` to `to`, values back to placeholders. The
    /// values are looked for in the body's data, not its wire form: a chunked body is
    /// de-chunked, scanned across chunk and read boundaries, and sent re-chunked (its
    /// trailers dropped: they are not scanned).
    async fn response_to<W: AsyncWrite + Unpin>(
        &mut self,
        mut body: Body,
        to: &mut W,
        counter: &AtomicU64,
        meter: &Meter,
        un: &mut Unsubstitute<'_>,
    ) -> std::io::Result<()> {
        let chunked = matches!(body, Body::Chunked(_));
        let frame = |data: &[u8]| -> Zeroizing<Vec<u8>> {
            if !chunked {
                return Zeroizing::new(data.to_vec());
            }
            let mut out = Zeroizing::new(Vec::with_capacity(data.len() + 16));
            if !data.is_empty() {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            out
        };
        while !body.done() {
            let data = Zeroizing::new(self.next_body_data(&mut body, meter).await?);
            relay::send(to, &frame(&un.push(&data)), counter, meter).await?;
        }
        relay::send(to, &frame(&un.finish()), counter, meter).await?;
        if chunked {
            relay::send(to, b"0\r\n\r\n", counter, meter).await?;
        }
        Ok(())
    }

    /// The body framed by `body`, as on the wire, if it is at most `limit` bytes; `None`
    /// as soon as it is longer.
    pub(crate) async fn body_buffered(
        &mut self,
        mut body: Body,
        limit: usize,
        meter: &Meter,
    ) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
        let mut wire = Zeroizing::new(Vec::new());
        while !body.done() {
            let bytes = self.next_body_bytes(&mut body, meter).await?;
            wire.extend_from_slice(&bytes);
            if wire.len() > limit + 64 * 1024 {
                return Ok(None);
            }
        }
        Ok(Some(wire))
    }

    /// Copies everything until the end of the stream to `to`, values back to placeholders.
    async fn rest_to<W: AsyncWrite + Unpin>(
        &mut self,
        to: &mut W,
        counter: &AtomicU64,
        meter: &Meter,
        un: &mut Unsubstitute<'_>,
    ) -> std::io::Result<()> {
        loop {
            if !self.buf.is_empty() {
                let bytes = std::mem::take(&mut self.buf);
                relay::send(to, &un.push(&bytes), counter, meter).await?;
            }
            if self.fill(meter).await? == 0 {
                return relay::send(to, &un.finish(), counter, meter).await;
            }
        }
    }
}

/// What one request did with the secrets: (secret index, what its placeholder met).
pub(crate) type Uses = Vec<(usize, Met)>;

/// Replaces placeholders in the header values of `forward` for the secrets that list its
/// target; notes misdirected ones (also in the path).
/// `cleartext`: a plain-HTTP request (never substituted toward port 443).
pub(crate) fn substitute_head(secrets: &Secrets, forward: &mut Forward, cleartext: bool) -> Uses {
    let mut uses = Vec::new();
    for (i, secret) in secrets.list.iter().enumerate() {
        let in_headers = forward
            .headers
            .iter()
            .any(|(_, v)| secret.occurs_in(v.as_bytes()));
        let in_path = secret.occurs_in(forward.path.as_bytes());
        if !in_headers && !in_path {
            continue;
        }
        let met = secret.meet(&forward.target, cleartext);
        match met {
            Met::Substitute if in_headers => {
                for (_, value) in forward.headers.iter_mut() {
                    if secret.occurs_in(value.as_bytes()) {
                        let replaced = secret.replace_str(value);
                        let old = std::mem::replace(value, replaced.to_string());
                        drop(Zeroizing::new(old));
                    }
                }
            }
            // Only in the path: never substituted there, and nothing to record.
            Met::Substitute => continue,
            Met::Misdirected | Met::Cleartext | Met::Expired { .. } => {}
        }
        uses.push((i, met));
    }
    uses
}

/// Watches a streamed request body for placeholders sent to a host not listed for their
/// secret (a placeholder split by chunk framing goes unseen: this is a record, not a
/// control).
pub(crate) struct BodyScan<'s> {
    secrets: &'s Secrets,
    target: &'s Target,
    /// The last bytes seen, so that a placeholder split across reads is found.
    tail: Vec<u8>,
    found: Vec<usize>,
    /// Found before the body (in the head): not recorded again.
    known: Vec<usize>,
    keep: usize,
}

impl<'s> BodyScan<'s> {
    /// `head`: what the request's head already recorded.
    pub(crate) fn new(secrets: &'s Secrets, target: &'s Target, head: &Uses) -> BodyScan<'s> {
        let keep = secrets
            .list
            .iter()
            .map(|s| s.placeholder_len())
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        BodyScan {
            secrets,
            target,
            tail: Vec::new(),
            found: Vec::new(),
            known: head.iter().map(|(i, _)| *i).collect(),
            keep,
        }
    }

    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(bytes);
        for (i, secret) in self.secrets.list.iter().enumerate() {
            let seen = self.found.contains(&i) || self.known.contains(&i);
            if !seen && !secret.lists(self.target) && secret.occurs_in(&window) {
                self.found.push(i);
            }
        }
        let from = window.len().saturating_sub(self.keep);
        self.tail = window.split_off(from);
    }

    /// The misdirected placeholders seen.
    pub(crate) fn uses(&self) -> Uses {
        self.found.iter().map(|i| (*i, Met::Misdirected)).collect()
    }
}

/// Whether a request to `target` has its body buffered for substitution.
pub(crate) fn buffers_body(secrets: &Secrets, target: &Target) -> bool {
    secrets.list.iter().any(|s| s.body && s.lists(target))
}

/// Replaces placeholders in a buffered body (its data, not chunk framing) for the secrets
/// with `body` that list `target`; notes misdirected ones.
pub(crate) fn substitute_body(
    secrets: &Secrets,
    target: &Target,
    data: Zeroizing<Vec<u8>>,
    uses: &mut Uses,
    cleartext: bool,
) -> Zeroizing<Vec<u8>> {
    let mut data = data;
    for (i, secret) in secrets.list.iter().enumerate() {
        if !secret.occurs_in(&data) {
            continue;
        }
        let met = secret.meet(target, cleartext);
        match met {
            Met::Substitute if secret.body => data = secret.replace(&data),
            Met::Substitute => continue,
            Met::Misdirected | Met::Cleartext | Met::Expired { .. } => {}
        }
        if !uses.iter().any(|(j, m)| *j == i && *m == met) {
            uses.push((i, met));
        }
    }
    data
}

/// Whether a request's value was substituted (in its head or body).
fn substituted(uses: &Uses) -> bool {
    uses.iter().any(|(_, met)| *met == Met::Substitute)
}

/// For a request that carries a value: asks the upstream for an unencoded response, so
/// that an echo of the value can be found (an encoded one is refused).
fn identity_only(forward: &mut Forward) {
    forward.remove_header("accept-encoding");
    forward
        .headers
        .push(("Accept-Encoding".into(), "identity".into()));
}

/// Adds to `into` the secrets of `found` it does not have yet.
fn merge(into: &mut Vec<usize>, found: &[usize]) {
    for i in found {
        if !into.contains(i) {
            into.push(*i);
        }
    }
}

/// Drops duplicate (secret, event) pairs.
fn dedup(uses: &mut Uses) {
    let mut seen = Vec::new();
    uses.retain(|u| {
        let fresh = !seen.contains(u);
        seen.push(*u);
        fresh
    });
}

impl Connection<'_> {
    /// Records what the secrets met in one request (aggregated like refusals).
    pub(crate) fn secret_records(&self, asked: &Asked<'_>, uses: &mut Uses) {
        dedup(uses);
        for (i, met) in uses.iter() {
            let Some(secret) = self.sandbox.secrets.list.get(*i) else {
                continue;
            };
            let Some(event) = met.event() else { continue };
            if *met == Met::Cleartext {
                let what = "sent in cleartext (plain HTTP to port 443): not substituted";
                self.secret_record_why(asked, &secret.name, event, what);
            } else {
                self.secret_record(asked, &secret.name, event);
            }
        }
    }

    pub(crate) fn secret_record(&self, asked: &Asked<'_>, name: &str, event: SecretEvent) {
        let what = match event {
            SecretEvent::Substituted => "substituted",
            SecretEvent::Misdirected => "sent to a host not listed for it: not substituted",
            SecretEvent::Expired => "past its TTL: no longer substituted",
            SecretEvent::Refused => "not substituted: request body over the bound",
            SecretEvent::Reflected => "echoed by the upstream: the sandbox got the placeholder",
        };
        self.secret_record_why(asked, name, event, what);
    }

    /// Records `event` for the secret `name`, `what` saying what happened.
    pub(crate) fn secret_record_why(
        &self,
        asked: &Asked<'_>,
        name: &str,
        event: SecretEvent,
        what: &str,
    ) {
        self.sandbox.ledger.refuse(Decision {
            connection: self.id,
            phase: Phase::Secret,
            allowed: event != SecretEvent::Refused,
            protocol: asked.protocol,
            host: asked.target.map(|t| t.host.to_string()).unwrap_or_default(),
            port: asked.target.map_or(0, |t| t.port),
            resolved: None,
            method: asked.method.map(str::to_string),
            reason: format!("secret {name} {what}"),
            bytes_up: 0,
            bytes_down: 0,
            elapsed_ms: self.meter.elapsed_ms(),
            count: 1,
            secret: Some(SecretUse {
                name: name.to_string(),
                event,
            }),
        });
    }

    /// Prepares a request's body for substitution: reads it whole from `client`, replaces
    /// placeholders and fixes its framing (Content-Length, no chunking). `Ok(None)`: the
    /// body is over the bound (already answered 413 and recorded).
    pub(crate) async fn buffer_body<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut Side<S>,
        forward: &mut Forward,
        uses: &mut Uses,
        cleartext: bool,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        let body = std::mem::replace(&mut forward.body, Body::Length(0));
        let chunked = matches!(body, Body::Chunked(_));
        let wire = client
            .body_buffered(body, MAX_SUBSTITUTED_BODY, &self.meter)
            .await
            .map_err(|e| format!("client failed: {e}"))?;
        let Some(wire) = wire else {
            return Ok(None);
        };
        let data = if chunked {
            http::dechunk(&wire)
                .map(Zeroizing::new)
                .map_err(|e| format!("client failed: {e}"))?
        } else {
            wire
        };
        if data.len() > MAX_SUBSTITUTED_BODY {
            return Ok(None);
        }
        let data = substitute_body(
            &self.sandbox.secrets,
            &forward.target,
            data,
            uses,
            cleartext,
        );
        forward.remove_header("content-length");
        forward.remove_header("transfer-encoding");
        forward
            .headers
            .push(("Content-Length".into(), data.len().to_string()));
        Ok(Some(data))
    }

    /// Serves an intercepted CONNECT to `target` over the upstream connection `open` made
    /// (not yet TLS), the address it reached and the rule that allowed it.
    pub(crate) async fn intercepted(
        &self,
        client: &mut UnixStream,
        (upstream, ip, rule): (TcpStream, std::net::IpAddr, String),
        asked: &Asked<'_>,
        target: &Target,
        intercept: &Intercept,
        via: Via,
    ) -> String {
        let tls = match self.upstream_tls(upstream, target, intercept).await {
            Ok(upstream) => intercept
                .authority
                .server_config(target)
                .map(|server| (upstream, server)),
            Err(reason) => Err(reason),
        };
        let (upstream, server) = match (tls, &via) {
            (Ok(tls), _) => tls,
            (Err(reason), Via::Connect(_)) => return self.refuse(client, asked, 502, reason).await,
            (Err(reason), Via::Socks) => {
                socks::reply(client, socks::GENERAL_FAILURE).await;
                self.record(asked, false, None, reason).await;
                return String::new();
            }
        };
        self.record(
            asked,
            true,
            Some(ip),
            format!("allowed by {rule}; intercepted for secret substitution"),
        )
        .await;
        match via {
            Via::Connect(leftover) => {
                if !leftover.is_empty() {
                    return "client sent data before the tunnel was established".into();
                }
                let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
                if client.write_all(established).await.is_err() {
                    return "client closed".into();
                }
            }
            Via::Socks => socks::reply(client, socks::SUCCEEDED).await,
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let handshake = timeout(self.config().header_timeout, acceptor.accept(client)).await;
        let tls_client = match handshake {
            Ok(Ok(tls_client)) => tls_client,
            Ok(Err(e)) => return format!("client TLS handshake failed: {e}"),
            Err(_) => return "client TLS handshake timed out".into(),
        };
        let idle = self.config().idle_timeout;
        let mut client = Side::new(tls_client, Vec::new(), idle);
        let mut upstream = Side::new(upstream, Vec::new(), idle);
        let end = self
            .exchanges(&mut client, &mut upstream, target, asked.protocol)
            .await;
        let _ = timeout(Duration::from_secs(1), client.io.shutdown()).await;
        let _ = timeout(Duration::from_secs(1), upstream.io.shutdown()).await;
        end
    }

    async fn upstream_tls(
        &self,
        upstream: TcpStream,
        target: &Target,
        intercept: &Intercept,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let name = tls::server_name(target)?;
        let client = intercept.client.get().await?;
        let connector = tokio_rustls::TlsConnector::from(client);
        match timeout(
            self.config().connect_timeout,
            connector.connect(name, upstream),
        )
        .await
        {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(format!("TLS with the upstream {target} failed: {e}")),
            Err(_) => Err(format!("TLS with the upstream {target} timed out")),
        }
    }

    /// Request/response exchanges inside an intercepted tunnel until either side closes.
    async fn exchanges<C, U>(
        &self,
        client: &mut Side<C>,
        upstream: &mut Side<U>,
        target: &Target,
        protocol: Protocol,
    ) -> String
    where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let limit = self.config().max_header_bytes;
        loop {
            let head = match client.head(limit, &self.meter).await {
                Ok(head) => head,
                Err(HeadError::Closed) => return "closed".into(),
                Err(HeadError::TooLarge) => {
                    let asked = asked(protocol, target, None);
                    let reason = format!("request head larger than {limit} bytes");
                    return self.refuse_inside(client, &asked, 431, reason).await;
                }
                Err(HeadError::Io(e)) => return format!("client failed: {e}"),
            };
            let mut forward = match http::parse_origin(&head, target) {
                Ok(forward) => forward,
                Err(refused) => {
                    let asked = asked(protocol, target, refused.method.as_deref());
                    return self
                        .refuse_inside(client, &asked, refused.status, refused.reason)
                        .await;
                }
            };
            let method = forward.method.clone();
            let asked = asked(protocol, target, Some(&method));
            let mut uses = substitute_head(&self.sandbox.secrets, &mut forward, false);
            let continues = forward.expects_continue();
            forward.remove_header("expect");
            if continues && !forward.body.done() {
                let go_on = b"HTTP/1.1 100 Continue\r\n\r\n";
                if let Err(e) =
                    relay::send(&mut client.io, go_on, &self.meter.down, &self.meter).await
                {
                    return format!("client failed: {e}");
                }
            }
            let body = if buffers_body(&self.sandbox.secrets, target) && !forward.body.done() {
                match self
                    .buffer_body(client, &mut forward, &mut uses, false)
                    .await
                {
                    Ok(Some(body)) => Some(body),
                    Ok(None) => {
                        self.body_refused(&asked, &uses);
                        let reason = format!(
                            "request body over {MAX_SUBSTITUTED_BODY} bytes: too large for secret substitution"
                        );
                        return self.refuse_inside(client, &asked, 413, reason).await;
                    }
                    Err(reason) => return reason,
                }
            } else {
                None
            };
            let substituted = substituted(&uses);
            if substituted {
                identity_only(&mut forward);
            }
            self.secret_records(&asked, &mut uses);
            let head = Zeroizing::new(forward.render(forward.close));
            if let Err(e) = relay::send(&mut upstream.io, &head, &self.meter.up, &self.meter).await
            {
                return format!("upstream failed: {e}");
            }
            drop(head);
            let sent = match body {
                Some(body) => {
                    relay::send(&mut upstream.io, &body, &self.meter.up, &self.meter).await
                }
                None => {
                    let body = std::mem::replace(&mut forward.body, Body::Length(0));
                    let mut scan = BodyScan::new(&self.sandbox.secrets, target, &uses);
                    let sent = client
                        .body_to(
                            body,
                            &mut upstream.io,
                            &self.meter.up,
                            &self.meter,
                            Some(&mut scan),
                        )
                        .await;
                    let mut uses = scan.uses();
                    self.secret_records(&asked, &mut uses);
                    sent
                }
            };
            if let Err(e) = sent {
                return format!("relaying the request body failed: {e}");
            }
            // The response, after any interim (1xx) ones.
            let mut reflected = Vec::new();
            let response = loop {
                let head = match upstream.head(MAX_RESPONSE_HEAD, &self.meter).await {
                    Ok(head) => head,
                    Err(HeadError::Closed) => {
                        let reason = format!("the upstream {target} closed without a response");
                        return self.refuse_inside(client, &asked, 502, reason).await;
                    }
                    Err(HeadError::TooLarge) => {
                        let reason = format!("the response head from {target} is too large");
                        return self.refuse_inside(client, &asked, 502, reason).await;
                    }
                    Err(HeadError::Io(e)) => return format!("upstream failed: {e}"),
                };
                let response = match http::parse_response(&head, &method) {
                    Ok(response) => response,
                    Err(reason) => {
                        return self.refuse_inside(client, &asked, 502, reason.into()).await;
                    }
                };
                if substituted && http::encoded(&head) {
                    let reason = self.encoded_refused(&asked, &uses);
                    return self.refuse_inside(client, &asked, 502, reason).await;
                }
                let head = unsubstitute_head(&self.sandbox.secrets, &head, &mut reflected);
                if let Err(e) =
                    relay::send(&mut client.io, &head, &self.meter.down, &self.meter).await
                {
                    return format!("client failed: {e}");
                }
                if response.status == 101 {
                    return "the upstream switched protocols: not relayed".into();
                }
                if !(100..200).contains(&response.status) {
                    break response;
                }
            };
            let mut un = Unsubstitute::new(&self.sandbox.secrets);
            let relayed = match response.body {
                ResponseBody::Framed(body) => {
                    upstream
                        .response_to(body, &mut client.io, &self.meter.down, &self.meter, &mut un)
                        .await
                }
                ResponseBody::UntilClose => {
                    upstream
                        .rest_to(&mut client.io, &self.meter.down, &self.meter, &mut un)
                        .await
                }
            };
            merge(&mut reflected, &un.found);
            self.reflected(&asked, &reflected);
            if let Err(e) = relayed {
                return format!("relaying the response failed: {e}");
            }
            if let Err(e) = client.io.flush().await {
                return format!("client failed: {e}");
            }
            if response.close || forward.close {
                return "closed".into();
            }
        }
    }

    /// Serves an allowed plain-HTTP request of a sandbox with secrets: substitutes, sends,
    /// relays the response.
    pub(crate) async fn forward_with_secrets(
        &self,
        client: &mut UnixStream,
        mut upstream: TcpStream,
        mut forward: Forward,
        leftover: Vec<u8>,
        asked: &Asked<'_>,
    ) -> String {
        let secrets = &self.sandbox.secrets;
        let mut uses = substitute_head(secrets, &mut forward, true);
        let target = forward.target.clone();
        if buffers_body(secrets, &target) && !forward.body.done() {
            let continues = forward.expects_continue();
            forward.remove_header("expect");
            let mut side = Side::new(&mut *client, leftover, self.config().idle_timeout);
            if continues {
                let go_on = b"HTTP/1.1 100 Continue\r\n\r\n";
                if let Err(e) =
                    relay::send(&mut side.io, go_on, &self.meter.down, &self.meter).await
                {
                    return format!("client failed: {e}");
                }
            }
            let body = match self
                .buffer_body(&mut side, &mut forward, &mut uses, true)
                .await
            {
                Ok(Some(body)) => body,
                Ok(None) => {
                    self.body_refused(asked, &uses);
                    let reason = format!(
                        "request body over {MAX_SUBSTITUTED_BODY} bytes: too large for secret substitution"
                    );
                    return self.refuse(client, asked, 413, reason).await;
                }
                Err(reason) => return reason,
            };
            let substituted = substituted(&uses);
            if substituted {
                identity_only(&mut forward);
            }
            self.secret_records(asked, &mut uses);
            let head = Zeroizing::new(forward.render(true));
            for part in [&head[..], &body[..]] {
                if let Err(e) = relay::send(&mut upstream, part, &self.meter.up, &self.meter).await
                {
                    return format!("upstream failed: {e}");
                }
            }
            drop((head, body));
            return self.response(client, upstream, asked, &uses).await;
        }
        if substituted(&uses) {
            identity_only(&mut forward);
        }
        self.secret_records(asked, &mut uses);
        let head = Zeroizing::new(forward.render(true));
        if let Err(e) = relay::send(&mut upstream, &head, &self.meter.up, &self.meter).await {
            return format!("upstream failed: {e}");
        }
        drop(head);
        // The body, watched for misdirected placeholders; then the response.
        let body = std::mem::replace(&mut forward.body, Body::Length(0));
        let mut scan = BodyScan::new(secrets, &target, &uses);
        let mut side = Side::new(&mut *client, leftover, self.config().idle_timeout);
        let sent = side
            .body_to(
                body,
                &mut upstream,
                &self.meter.up,
                &self.meter,
                Some(&mut scan),
            )
            .await;
        let mut body_uses = scan.uses();
        self.secret_records(asked, &mut body_uses);
        if let Err(e) = sent {
            return format!("relaying the request body failed: {e}");
        }
        self.response(client, upstream, asked, &uses).await
    }

    /// Relays a plain-HTTP response (the upstream closes after it), values back to
    /// placeholders (in the body's data: chunked bodies are de-chunked to be scanned).
    /// `uses`: what the request did with the secrets (one that carried a value gets no
    /// encoded response).
    async fn response(
        &self,
        client: &mut UnixStream,
        upstream: TcpStream,
        asked: &Asked<'_>,
        uses: &Uses,
    ) -> String {
        let mut upstream = Side::new(upstream, Vec::new(), self.config().idle_timeout);
        let mut reflected = Vec::new();
        let method = asked.method.unwrap_or("GET");
        // Interim (1xx) responses first.
        let response = loop {
            let head = match upstream.head(MAX_RESPONSE_HEAD, &self.meter).await {
                Ok(head) => head,
                Err(HeadError::Closed) => return "closed".into(),
                Err(HeadError::TooLarge) => {
                    let reason = format!("the response head is over {MAX_RESPONSE_HEAD} bytes");
                    return self.refuse(client, asked, 502, reason).await;
                }
                Err(HeadError::Io(e)) => return format!("upstream failed: {e}"),
            };
            let response = match http::parse_response(&head, method) {
                Ok(response) => response,
                Err(reason) => return self.refuse(client, asked, 502, reason.into()).await,
            };
            if substituted(uses) && http::encoded(&head) {
                let reason = self.encoded_refused(asked, uses);
                return self.refuse(client, asked, 502, reason).await;
            }
            let head = unsubstitute_head(&self.sandbox.secrets, &head, &mut reflected);
            if let Err(e) = relay::send(client, &head, &self.meter.down, &self.meter).await {
                return format!("client failed: {e}");
            }
            if response.status == 101 {
                return "the upstream switched protocols: not relayed".into();
            }
            if !(100..200).contains(&response.status) {
                break response;
            }
        };
        let mut un = Unsubstitute::new(&self.sandbox.secrets);
        let relayed = match response.body {
            ResponseBody::Framed(body) => {
                upstream
                    .response_to(body, client, &self.meter.down, &self.meter, &mut un)
                    .await
            }
            ResponseBody::UntilClose => {
                upstream
                    .rest_to(client, &self.meter.down, &self.meter, &mut un)
                    .await
            }
        };
        merge(&mut reflected, &un.found);
        self.reflected(asked, &reflected);
        match relayed {
            Ok(()) => "closed".into(),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "idle timeout".into(),
            Err(e) => format!("closed on error: {e}"),
        }
    }

    /// Records the secrets whose value a response carried.
    fn reflected(&self, asked: &Asked<'_>, found: &[usize]) {
        for i in found {
            if let Some(secret) = self.sandbox.secrets.list.get(*i) {
                self.secret_record(asked, &secret.name, SecretEvent::Reflected);
            }
        }
    }

    /// Records that the response to a request that carried a value was refused for its
    /// encoding; returns the refusal's reason.
    fn encoded_refused(&self, asked: &Asked<'_>, uses: &Uses) -> String {
        let what = "refused: the response was encoded (an encoded response could hide the value)";
        for (i, met) in uses {
            if *met != Met::Substitute {
                continue;
            }
            if let Some(secret) = self.sandbox.secrets.list.get(*i) {
                self.secret_record_why(asked, &secret.name, SecretEvent::Refused, what);
            }
        }
        "the upstream sent an encoded response to a request that carried a secret: \
         refused, since an encoded response could hide the value"
            .into()
    }

    /// Records that a request's secrets were not substituted for its body's size.
    pub(crate) fn body_refused(&self, asked: &Asked<'_>, uses: &Uses) {
        let mut named: Vec<usize> = uses.iter().map(|(i, _)| *i).collect();
        for (i, secret) in self.sandbox.secrets.list.iter().enumerate() {
            if secret.body && asked.target.is_some_and(|t| secret.lists(t)) {
                named.push(i);
            }
        }
        named.sort_unstable();
        named.dedup();
        for i in named {
            if let Some(secret) = self.sandbox.secrets.list.get(i) {
                self.secret_record(asked, &secret.name, SecretEvent::Refused);
            }
        }
    }

    /// Answers a refusal inside an intercepted tunnel and records it; the tunnel ends.
    async fn refuse_inside<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut Side<S>,
        asked: &Asked<'_>,
        status: u16,
        reason: String,
    ) -> String {
        self.record(asked, false, None, reason.clone()).await;
        let response = http::refusal_response(status, &reason);
        let _ = timeout(Duration::from_secs(1), client.io.write_all(&response)).await;
        let _ = timeout(Duration::from_secs(1), client.io.flush()).await;
        format!("refused inside the tunnel: {reason}")
    }
}

/// A request inside an intercepted tunnel, for the records.
fn asked<'a>(protocol: Protocol, target: &'a Target, method: Option<&'a str>) -> Asked<'a> {
    Asked {
        protocol,
        target: Some(target),
        method,
    }
}
