//! The HTTP/1 side of the proxy: parses a request head (CONNECT or absolute-form), builds
//! the head sent upstream for plain HTTP, frames the request body, and writes refusals.
//!
//! Deliberately small and strict: a head is UTF-8 lines ending in CRLF, no line folding,
//! one Host header, never both Content-Length and Transfer-Encoding. For plain HTTP the
//! upstream is the request target and nothing else: a Host header that names another host
//! is refused (403), a missing one is filled in from the target, and the head sent upstream
//! is rebuilt from parsed parts with hop-by-hop and proxy headers removed and
//! `Connection: close` added, so that one client connection carries exactly one request.
//! The body is forwarded only up to its declared end, so bytes after it (a second,
//! pipelined request) never reach the upstream. CONNECT's own Host header is ignored: the
//! tunnel goes to the CONNECT target. This module must never forward a byte that it has
//! not framed.

use crate::target::{Host, Target};

/// A request the proxy can serve.
#[derive(Debug)]
pub(crate) enum Request {
    Connect(Target),
    Forward(Forward),
}

/// A plain-HTTP request, ready to send upstream. Its `Debug` shows header names only: the
/// values may hold a substituted secret.
pub(crate) struct Forward {
    pub target: Target,
    pub method: String,
    /// Origin-form: `/path?query`.
    pub path: String,
    pub version: String,
    /// The header lines sent upstream, in order: no Host, no hop-by-hop or proxy header.
    pub headers: Vec<(String, String)>,
    /// The Host header sent upstream.
    pub host_header: String,
    /// The client wants the connection closed after this exchange (`Connection: close`,
    /// or HTTP/1.0 without keep-alive).
    pub close: bool,
    /// The head to send upstream, with `Connection: close` (`render(true)`).
    pub head: Vec<u8>,
    pub body: Body,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Forward")
            .field("target", &self.target)
            .field("method", &self.method)
            .field("version", &self.version)
            .field("headers", &names)
            .field("close", &self.close)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl Drop for Forward {
    /// Header values may hold a substituted secret value: wiped, not just freed.
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (_, value) in &mut self.headers {
            value.zeroize();
        }
    }
}

impl Forward {
    /// The head to send upstream; `close` adds `Connection: close`.
    pub(crate) fn render(&self, close: bool) -> Vec<u8> {
        let mut head = format!(
            "{} {} {}\r\nHost: {}\r\n",
            self.method, self.path, self.version, self.host_header
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Whether the client asked for `Expect: 100-continue`.
    pub(crate) fn expects_continue(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case("100-continue")
        })
    }

    /// Drops every header named `name`.
    pub(crate) fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

/// A request the proxy will not serve, with the status it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub status: u16,
    pub reason: String,
    /// What could be parsed before the refusal, for the record.
    pub target: Option<Target>,
    pub method: Option<String>,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refused {
    Refused {
        status,
        reason: reason.into(),
        target: None,
        method: None,
    }
}

/// Headers that describe one hop, or the proxy, and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "upgrade",
];

/// The index just past the first `\r\n\r\n` in `buf`, searching from `from` (the length
/// already searched).
pub(crate) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf.get(start..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a complete head (ending in `\r\n\r\n`).
pub(crate) fn parse(head: &[u8]) -> Result<Request, Refused> {
    let (method, target, version, headers) = lines(head)?;
    if method == "CONNECT" {
        return Target::parse_authority(target, None)
            .map(Request::Connect)
            .map_err(|e| refuse(400, e.to_string()));
    }
    forward(method, target, version, &headers).map(Request::Forward)
}

/// Parses a complete origin-form head (`GET /path HTTP/1.1`) read inside an intercepted
/// tunnel to `target`: its Host header, if any, must name `target`. The rebuilt head keeps
/// the connection open unless the client asked otherwise (`close`).
pub(crate) fn parse_origin(head: &[u8], target: &Target) -> Result<Forward, Refused> {
    let (method, path, version, headers) = lines(head)?;
    if !path.starts_with('/') {
        return Err(refuse(
            400,
            "expected an origin-form request (`GET /path`) inside the tunnel",
        ));
    }
    let path = path.split('#').next().unwrap_or_default();
    build(
        method,
        target.clone(),
        path.to_string(),
        version,
        &headers,
        443,
    )
}

type Lines<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>);

/// Splits a complete head into method, request target, version and header lines.
fn lines(head: &[u8]) -> Result<Lines<'_>, Refused> {
    let text = std::str::from_utf8(head).map_err(|_| refuse(400, "request head is not utf-8"))?;
    let text = text
        .strip_suffix("\r\n\r\n")
        .ok_or_else(|| refuse(400, "incomplete request head"))?;
    if text.contains(['\0']) {
        return Err(refuse(400, "nul byte in request head"));
    }
    if text.split("\r\n").any(|line| line.contains(['\r', '\n'])) {
        return Err(refuse(400, "bare cr or lf in request head"));
    }
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(refuse(400, "malformed request line"));
    };
    if !is_token(method) {
        return Err(refuse(400, "malformed method"));
    }
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse(400, "malformed request target"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(refuse(400, "only HTTP/1.0 and HTTP/1.1 are spoken"));
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(refuse(400, "obsolete header line folding"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| refuse(400, "malformed header line"))?;
        let value = value.trim_matches([' ', '\t']);
        if !is_token(name) || value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(refuse(400, "malformed header line"));
        }
        headers.push((name, value));
    }
    Ok((method, target, version, headers))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn forward(
    method: &str,
    url: &str,
    version: &str,
    headers: &[(&str, &str)],
) -> Result<Forward, Refused> {
    let Some(rest) = strip_prefix_ignore_case(url, "http://") else {
        return Err(if strip_prefix_ignore_case(url, "https://").is_some() {
            refuse(
                400,
                "https urls go through CONNECT, not a plain proxy request",
            )
        } else {
            refuse(
                400,
                "not a proxy request: expected an absolute http:// url or CONNECT",
            )
        });
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(refuse(400, "credentials in the url are not allowed"));
    }
    let target =
        Target::parse_authority(authority, Some(80)).map_err(|e| refuse(400, e.to_string()))?;
    let path = path.split('#').next().unwrap_or_default();
    let path = match path.chars().next() {
        None => "/".to_string(),
        Some('?') => format!("/{path}"),
        Some(_) => path.to_string(),
    };
    build(method, target, path, version, headers, 80)
}

/// The request to `target` for the parsed head, its Host header checked against `target`.
fn build(
    method: &str,
    target: Target,
    path: String,
    version: &str,
    headers: &[(&str, &str)],
    default_port: u16,
) -> Result<Forward, Refused> {
    let with_context = |mut refused: Refused| {
        refused.target = Some(target.clone());
        refused.method = Some(method.to_string());
        refused
    };

    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    };
    match values("host")[..] {
        [] => {}
        [host] => {
            let named = Target::parse_authority(host, Some(default_port))
                .map_err(|e| with_context(refuse(400, format!("host header: {e}"))))?;
            if named != target {
                return Err(with_context(refuse(
                    403,
                    format!("host header {named} does not match the request target {target}"),
                )));
            }
        }
        _ => return Err(with_context(refuse(400, "more than one host header"))),
    }
    let body =
        body(&values("transfer-encoding"), &values("content-length")).map_err(with_context)?;

    let listed: Vec<String> = values("connection")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let host_header = match target.port {
        port if port == default_port => match &target.host {
            Host::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            host => host.to_string(),
        },
        _ => target.to_string(),
    };
    let close = listed.iter().any(|t| t == "close")
        || (version == "HTTP/1.0" && !listed.iter().any(|t| t == "keep-alive"));
    let headers = headers
        .iter()
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&lower.as_str()) && !listed.contains(&lower)
        })
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let mut forward = Forward {
        target,
        method: method.to_string(),
        path,
        version: version.to_string(),
        headers,
        host_header,
        close,
        head: Vec::new(),
        body,
    };
    forward.head = forward.render(true);
    Ok(forward)
}

fn body(transfer_encoding: &[&str], content_length: &[&str]) -> Result<Body, Refused> {
    match (transfer_encoding, content_length) {
        ([], []) => Ok(Body::Length(0)),
        ([], [first, rest @ ..]) => {
            if rest.iter().any(|v| v != first) || !first.bytes().all(|b| b.is_ascii_digit()) {
                return Err(refuse(400, "malformed content-length"));
            }
            first
                .parse()
                .map(Body::Length)
                .map_err(|_| refuse(400, "malformed content-length"))
        }
        ([te], []) if te.eq_ignore_ascii_case("chunked") => Ok(Body::Chunked(Chunked::Size {
            value: 0,
            digits: 0,
            in_extension: false,
        })),
        (_, []) => Err(refuse(501, "only chunked transfer-encoding is supported")),
        _ => Err(refuse(
            400,
            "both content-length and transfer-encoding are set",
        )),
    }
}

/// How much of the client's byte stream after the head is the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// This many bytes remain.
    Length(u64),
    Chunked(Chunked),
}

/// The position inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    Size {
        value: u64,
        digits: u8,
        in_extension: bool,
    },
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf {
        empty: bool,
    },
    Done,
}

impl Body {
    pub(crate) fn done(&self) -> bool {
        matches!(self, Body::Length(0) | Body::Chunked(Chunked::Done))
    }

    /// Consumes the body's part of `bytes` and says how long it is: every byte before that
    /// length is forwarded, none after it.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<usize, &'static str> {
        match self {
            Body::Length(remaining) => {
                let take = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                *remaining -= take as u64;
                Ok(take)
            }
            Body::Chunked(state) => state.feed(bytes, None),
        }
    }

    /// Like `feed`, and adds the body's data (without chunk framing or trailers) to
    /// `data`.
    pub(crate) fn feed_data(
        &mut self,
        bytes: &[u8],
        data: &mut Vec<u8>,
    ) -> Result<usize, &'static str> {
        match self {
            Body::Length(_) => {
                let take = self.feed(bytes)?;
                data.extend_from_slice(&bytes[..take]);
                Ok(take)
            }
            Body::Chunked(state) => state.feed(bytes, Some(data)),
        }
    }
}

impl Chunked {
    fn feed(
        &mut self,
        bytes: &[u8],
        mut data: Option<&mut Vec<u8>>,
    ) -> Result<usize, &'static str> {
        let bad = Err("malformed chunked body");
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            *self = match *self {
                Chunked::Done => return Ok(i),
                Chunked::Data(remaining) => {
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    if let Some(data) = data.as_deref_mut() {
                        data.extend_from_slice(&bytes[i..i + take]);
                    }
                    i += take;
                    let left = remaining - take as u64;
                    *self = if left == 0 {
                        Chunked::DataCr
                    } else {
                        Chunked::Data(left)
                    };
                    continue;
                }
                Chunked::Size {
                    value,
                    digits,
                    in_extension: false,
                } if b.is_ascii_hexdigit() => {
                    if digits >= 15 {
                        return bad;
                    }
                    let digit = u64::from(char::from(b).to_digit(16).unwrap_or(0));
                    Chunked::Size {
                        value: value * 16 + digit,
                        digits: digits + 1,
                        in_extension: false,
                    }
                }
                Chunked::Size { digits: 0, .. } => return bad,
                Chunked::Size { value, .. } if b == b'\r' => Chunked::SizeLf(value),
                Chunked::Size { value, digits, .. } if b == b';' || b == b' ' || b == b'\t' => {
                    Chunked::Size {
                        value,
                        digits,
                        in_extension: true,
                    }
                }
                Chunked::Size {
                    in_extension: true, ..
                } if b != b'\n' => *self,
                Chunked::Size { .. } => return bad,
                Chunked::SizeLf(0) if b == b'\n' => Chunked::TrailerStart,
                Chunked::SizeLf(value) if b == b'\n' => Chunked::Data(value),
                Chunked::DataCr if b == b'\r' => Chunked::DataLf,
                Chunked::DataLf if b == b'\n' => Chunked::Size {
                    value: 0,
                    digits: 0,
                    in_extension: false,
                },
                Chunked::TrailerStart if b == b'\r' => Chunked::TrailerLf { empty: true },
                Chunked::TrailerStart | Chunked::TrailerLine if b != b'\r' && b != b'\n' => {
                    Chunked::TrailerLine
                }
                Chunked::TrailerLine if b == b'\r' => Chunked::TrailerLf { empty: false },
                Chunked::TrailerLf { empty: true } if b == b'\n' => {
                    *self = Chunked::Done;
                    return Ok(i + 1);
                }
                Chunked::TrailerLf { empty: false } if b == b'\n' => Chunked::TrailerStart,
                _ => return bad,
            };
            i += 1;
        }
        Ok(i)
    }
}

/// How a response's body ends, as far as the proxy relaying it is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResponseBody {
    /// Framed by Content-Length or chunked (possibly empty): the connection can go on.
    Framed(Body),
    /// Ends when the upstream closes.
    UntilClose,
}

/// A parsed response head from an intercepted upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub body: ResponseBody,
    /// The upstream will close after this response.
    pub close: bool,
}

/// Parses a complete response head, for a request with `method`.
pub(crate) fn parse_response(head: &[u8], method: &str) -> Result<Response, &'static str> {
    let bad = "malformed response head from the upstream";
    let text = std::str::from_utf8(head).map_err(|_| bad)?;
    let text = text.strip_suffix("\r\n\r\n").ok_or(bad)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad);
    }
    let status: u16 = parts
        .next()
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse().ok())
        .ok_or(bad)?;
    let mut transfer_encoding = Vec::new();
    let mut content_length = Vec::new();
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(bad)?;
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding.push(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length.push(value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == "HTTP/1.0" {
                    close = false;
                }
            }
        }
    }
    let no_body = method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304;
    let body = if no_body {
        ResponseBody::Framed(Body::Length(0))
    } else if transfer_encoding.is_empty() && content_length.is_empty() {
        close = true;
        ResponseBody::UntilClose
    } else {
        match body(&transfer_encoding, &content_length) {
            Ok(body) => ResponseBody::Framed(body),
            Err(refused) if refused.status == 501 => {
                // Another transfer coding, not chunked last: ends at close.
                close = true;
                ResponseBody::UntilClose
            }
            Err(_) => return Err(bad),
        }
    };
    Ok(Response {
        status,
        body,
        close,
    })
}

/// Whether a response head declares a content coding other than `identity`, or a
/// transfer coding other than `chunked`: a body that could carry a value in a form the
/// proxy does not scan.
pub(crate) fn encoded(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n").skip(1).any(|line| {
        let Some((name, value)) = line.split_once(':') else {
            return false;
        };
        let plain = if name.trim().eq_ignore_ascii_case("content-encoding") {
            "identity"
        } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            "chunked"
        } else {
            return false;
        };
        value
            .split(',')
            .map(|t| t.trim_matches([' ', '\t']))
            .any(|t| !t.is_empty() && !t.eq_ignore_ascii_case(plain))
    })
}

/// The data of a complete chunked body (`wire`, as framed by `Body::Chunked`); trailers
/// are dropped.
pub(crate) fn dechunk(wire: &[u8]) -> Result<Vec<u8>, &'static str> {
    let bad = Err("malformed chunked body");
    let mut out = Vec::with_capacity(wire.len());
    let mut at = 0;
    loop {
        let Some(line_end) = wire[at..].windows(2).position(|w| w == b"\r\n") else {
            return bad;
        };
        let line = &wire[at..at + line_end];
        let digits = line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        let Ok(hex) = std::str::from_utf8(&line[..digits]) else {
            return bad;
        };
        let Ok(size) = usize::from_str_radix(hex, 16) else {
            return bad;
        };
        at += line_end + 2;
        if size == 0 {
            return Ok(out);
        }
        let Some(data) = wire.get(at..at.saturating_add(size)) else {
            return bad;
        };
        out.extend_from_slice(data);
        at += size;
        if wire.get(at..at + 2) != Some(b"\r\n") {
            return bad;
        }
        at += 2;
    }
}

/// A complete refusal response: the status and a one-line reason.
pub(crate) fn refusal_response(status: u16, reason: &str) -> Vec<u8> {
    let text = match status {
        400 => "Bad Request",
        413 => "Content Too Large",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("nanoclaw egress: {reason}\n");
    format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(head: &str) -> Forward {
        match parse(head.as_bytes()).unwrap() {
            Request::Forward(f) => f,
            other => panic!("not a forward: {other:?}"),
        }
    }

    fn status(head: &str) -> u16 {
        parse(head.as_bytes()).unwrap_err().status
    }

    #[test]
    fn head_end_finds_the_blank_line_across_reads() {
        let buf = b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\nrest";
        assert_eq!(head_end(buf, 0), Some(buf.len() - 4));
        assert_eq!(head_end(buf, 34), Some(buf.len() - 4));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r", 0), None);
    }

    #[test]
    fn connect_goes_to_its_authority_whatever_the_host_header_says() {
        let req = parse(b"CONNECT api.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n").unwrap();
        let Request::Connect(target) = req else {
            panic!("not connect")
        };
        assert_eq!(target.to_string(), "api.test:443");
        assert_eq!(status("CONNECT api.test HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn absolute_form_is_rebuilt_for_the_upstream() {
        let f = forward(
            "GET http://API.test:8080/a/b?c=d#frag HTTP/1.1\r\nHost: api.test:8080\r\n\
             User-Agent: t\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\n\
             Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nUpgrade: h2c\r\n\r\n",
        );
        assert_eq!(f.target.to_string(), "api.test:8080");
        assert_eq!(f.path, "/a/b?c=d");
        assert_eq!(
            String::from_utf8(f.head.clone()).unwrap(),
            "GET /a/b?c=d HTTP/1.1\r\nHost: api.test:8080\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(f.body, Body::Length(0));
    }

    #[test]
    fn a_missing_host_header_is_filled_in_from_the_target() {
        let f = forward("GET http://api.test HTTP/1.0\r\n\r\n");
        assert_eq!(
            String::from_utf8(f.head.clone()).unwrap(),
            "GET / HTTP/1.0\r\nHost: api.test\r\nConnection: close\r\n\r\n"
        );
        let f = forward("GET http://[2001:db8::1]?x HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n");
        assert!(String::from_utf8(f.head.clone())
            .unwrap()
            .starts_with("GET /?x HTTP/1.1\r\nHost: [2001:db8::1]\r\n"));
    }

    #[test]
    fn a_host_header_naming_another_host_is_refused() {
        let refused =
            parse(b"GET http://api.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n").unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(
            refused.reason.contains("does not match"),
            "{}",
            refused.reason
        );
        assert_eq!(refused.target.unwrap().to_string(), "api.test:80");
        assert_eq!(
            status("GET http://api.test/ HTTP/1.1\r\nHost: api.test:8080\r\n\r\n"),
            403
        );
        assert_eq!(
            status("GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nHost: api.test\r\n\r\n"),
            400
        );
        // Same host, default port spelled out: fine.
        forward("GET http://api.test/ HTTP/1.1\r\nHost: API.test:80\r\n\r\n");
    }

    #[test]
    fn malformed_heads_are_refused() {
        for head in [
            "GET /relative HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET https://api.test/ HTTP/1.1\r\n\r\n",
            "GET http://user@api.test/ HTTP/1.1\r\n\r\n",
            "GET http://api.test/ HTTP/2\r\n\r\n",
            "GET  http://api.test/ HTTP/1.1\r\n\r\n",
            "G(T http://api.test/ HTTP/1.1\r\n\r\n",
            "GET http://api.test/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            "GET http://api.test/ HTTP/1.1\r\nX: a\nY: b\r\n\r\n",
            "GET http://api.test/ HTTP/1.1\r\nBad Name: a\r\n\r\n",
            "GET http://api.test/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET http://api.test/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET http://api.test/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET http://127.1/ HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(status(head), 400, "{head:?}");
        }
        assert_eq!(
            status("POST http://api.test/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            parse(b"GET http://a.test/ HTTP/1.1\r\n\xff: x\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn content_length_bodies_stop_at_their_length() {
        let mut body = Body::Length(5);
        assert_eq!(body.feed(b"abc"), Ok(3));
        assert!(!body.done());
        assert_eq!(body.feed(b"deGET /next"), Ok(2));
        assert!(body.done());
        assert_eq!(body.feed(b"more"), Ok(0));
    }

    #[test]
    fn chunked_bodies_stop_after_the_trailers() {
        let wire =
            b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET http://evil/ HTTP/1.1";
        let end = wire.len() - "GET http://evil/ HTTP/1.1".len();
        let mut whole = chunked();
        assert_eq!(whole.feed(wire), Ok(end));
        assert!(whole.done());
        // Byte by byte gives the same end.
        let mut split = chunked();
        let mut total = 0;
        for b in wire.iter() {
            total += split.feed(std::slice::from_ref(b)).unwrap();
            if split.done() {
                break;
            }
        }
        assert_eq!(total, end);
        let mut no_trailer = chunked();
        assert_eq!(no_trailer.feed(b"0\r\n\r\nX"), Ok(5));
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for wire in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX",
            b"5\nhello",
            b"10000000000000000\r\n",
            b"0\r\nX\n",
        ] {
            assert!(chunked().feed(wire).is_err(), "{wire:?}");
        }
    }

    fn chunked() -> Body {
        body(&["chunked"], &[]).unwrap()
    }

    #[test]
    fn refusals_are_one_line_with_a_length() {
        let r =
            String::from_utf8(refusal_response(403, "api.x:443 is not in the allow list")).unwrap();
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(r.ends_with("\r\n\r\nnanoclaw egress: api.x:443 is not in the allow list\n"));
        assert!(r.contains("Content-Length: 52\r\n"));
    }

    #[test]
    fn origin_form_inside_a_tunnel_keeps_the_connection_open() {
        let target = Target::parse_authority("api.test:443", None).unwrap();
        let f = parse_origin(
            b"POST /v1?x=1 HTTP/1.1\r\nHost: api.test\r\nConnection: keep-alive\r\n\
              Authorization: Bearer x\r\nContent-Length: 3\r\n\r\n",
            &target,
        )
        .unwrap();
        assert!(!f.close);
        assert_eq!(
            String::from_utf8(f.render(false)).unwrap(),
            "POST /v1?x=1 HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer x\r\n\
             Content-Length: 3\r\n\r\n"
        );
        let other = parse_origin(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n", &target);
        assert_eq!(other.unwrap_err().status, 403);
        let absolute = parse_origin(b"GET http://api.test/ HTTP/1.1\r\n\r\n", &target);
        assert_eq!(absolute.unwrap_err().status, 400);
        let old = parse_origin(b"GET / HTTP/1.0\r\n\r\n", &target).unwrap();
        assert!(old.close);
    }

    #[test]
    fn responses_are_framed() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET").unwrap();
        assert_eq!(
            (r.body, r.close),
            (ResponseBody::Framed(Body::Length(5)), false)
        );
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD").unwrap();
        assert_eq!(r.body, ResponseBody::Framed(Body::Length(0)));
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", "GET").unwrap();
        assert_eq!((r.body, r.close), (ResponseBody::UntilClose, true));
        let r = parse_response(b"HTTP/1.1 100 Continue\r\n\r\n", "POST").unwrap();
        assert_eq!(
            (r.status, r.body),
            (100, ResponseBody::Framed(Body::Length(0)))
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            "GET",
        )
        .unwrap();
        assert!(r.close && matches!(r.body, ResponseBody::Framed(Body::Chunked(_))));
        assert!(parse_response(b"SSH-2.0\r\n\r\n", "GET").is_err());
    }

    #[test]
    fn encoded_responses_are_told_apart() {
        let head = |h: &str| format!("HTTP/1.1 200 OK\r\n{h}\r\n\r\n").into_bytes();
        assert!(encoded(&head("Content-Encoding: gzip")));
        assert!(encoded(&head("content-encoding: identity, br")));
        assert!(encoded(&head("Transfer-Encoding: gzip, chunked")));
        assert!(!encoded(&head("Content-Encoding: identity")));
        assert!(!encoded(&head("Transfer-Encoding: chunked")));
        assert!(!encoded(&head("X-Content-Encoding: gzip")));
    }

    #[test]
    fn chunked_data_is_taken_without_its_framing() {
        let wire = b"7\r\nabcdefg\r\n3;x=1\r\nhij\r\n0\r\nT: 1\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let mut body = chunked();
            let mut data = Vec::new();
            let n = body.feed_data(&wire[..split], &mut data).unwrap();
            assert_eq!(n, split.min(wire.len() - 4));
            let m = body.feed_data(&wire[split..], &mut data).unwrap();
            assert_eq!(n + m, wire.len() - 4, "split {split}");
            assert_eq!(data, b"abcdefghij", "split {split}");
            assert!(body.done());
        }
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(
            dechunk(b"5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nT: 1\r\n\r\n").unwrap(),
            b"hello!"
        );
        assert!(dechunk(b"5\r\nhel").is_err());
    }
}
