//! nanoclaw's host-side egress proxy: the only way out of a sandbox's network.
//!
//! A sandbox with egress has no route out; its only path is a Unix socket to this proxy
//! (bridged to `127.0.0.1:PORT` inside the sandbox by nanoclaw's own helper). On that
//! socket the proxy speaks HTTP CONNECT, absolute-form HTTP and SOCKS5 (told apart by the
//! first byte), allows a request only when its host and port match the sandbox's
//! `Policy`, resolves names itself, once, and connects only to an address it screened
//! (`nanoclaw_spec::address`, then `local`): never loopback, private, link-local,
//! metadata, any address of this host and the like unless the rule is that exact IP
//! literal. Every decision, and the close of every allowed connection,
//! is sent as a `Decision` on the sandbox's bounded channel, refusals aggregated (`ledger`).
//! What one sandbox can cost is bounded: its open connections, its accept rate, the
//! records it causes and the memory behind them.
//!
//! The proxy does not terminate TLS, except for secrets (below): after CONNECT it relays
//! opaque bytes to the address it chose for the CONNECT target, so a TLS SNI (or an inner
//! Host header) naming another host reaches nothing but that address. For plain HTTP it
//! refuses a Host header that disagrees with the request target.
//!
//! **Secrets** (`Proxy::add_sandbox_with_secrets`, `SecretSubstitution`): the sandbox holds
//! a placeholder; the proxy replaces it by the real value in header values (and, where
//! declared, bodies) of requests to the secret's own hosts, plain HTTP or HTTPS. Only the
//! CONNECT (and SOCKS5) tunnels to those hosts are intercepted, and must carry TLS: TLS terminated with a leaf certificate
//! signed by a CA made in memory for this one sandbox (its PEM goes into the sandbox's CA
//! bundle, its key stays in this process), the requests parsed (origin-form, Host must name
//! the CONNECT target), substituted and sent over a TLS connection to the upstream that is
//! verified against the host's roots (or `ProxyConfig::upstream_roots`) before the client
//! is told the tunnel is up: an upstream that does not verify is a 502. A placeholder sent
//! to any other host is left as it is and recorded (`SecretEvent::Misdirected`), except
//! inside a plain tunnel, which the proxy cannot see into (harmless: only a placeholder).
//! Each use is a `Phase::Secret` record naming the secret, never its value.
//! Limits: HTTP/1.1 only inside an intercepted tunnel (ALPN offers `http/1.1`), no
//! protocol upgrades there (the Upgrade header is dropped), a substituted body at most
//! `MAX_SUBSTITUTED_BODY` (else 413). A value an upstream echoes back reaches the sandbox
//! as the placeholder (`SecretEvent::Reflected`): in response heads and bodies (their data:
//! chunked bodies are de-chunked to be scanned, across chunks and reads, and sent
//! re-chunked without trailers; a value whose placeholder has another length becomes `*`s,
//! so that a Content-Length stays right). A request that carries a value is sent with
//! `Accept-Encoding: identity`, and a response to it that still has a content coding (or a
//! transfer coding other than chunked) is refused (502, `SecretEvent::Refused`): an
//! encoded echo could hide the value. Not caught: an echo the upstream transforms itself
//! (JSON escapes, base64) or one it stores and returns to a later request.
//! Plain HTTP is cleartext: a placeholder in a plain-HTTP request to port 443 (where the
//! value is meant to travel inside TLS) is never replaced, and recorded as misdirected
//! (reason: cleartext); to other listed ports it is substituted.
//!
//! ```no_run
//! use nanoclaw_egress::{Policy, Proxy, ProxyConfig};
//! use nanoclaw_spec::EgressRule;
//!
//! let proxy = Proxy::start(ProxyConfig::default())?;
//! let policy = Policy::new(&[EgressRule { host: "api.github.com".into(), port: 443 }])?;
//! // Bounded: while it is full, allowed connections wait and refusals are only counted.
//! let (events, records) = std::sync::mpsc::sync_channel(64);
//! let dir = std::path::Path::new("/run/nanoclaw/sandbox-1"); // 0711, made by the runner
//! let endpoint = proxy.add_sandbox(dir, policy, events)?;
//! // Write each record as it comes (to the audit log); the channel ends after removal.
//! let writer = std::thread::spawn(move || {
//!     for record in records {
//!         println!("{} x{}", record.reason, record.count);
//!     }
//! });
//! // mount endpoint.socket() into the sandbox and run it, then:
//! proxy.remove_sandbox(endpoint)?;
//! let _ = writer.join();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod connection;
mod decision;
mod http;
mod intercept;
mod ledger;
mod local;
mod policy;
mod proxy;
mod relay;
mod resolve;
mod secrets;
mod socks;
mod target;
mod tls;

pub use decision::{Decision, Phase, Protocol, SecretEvent, SecretUse};
pub use policy::{HttpLimits, Policy, PolicyError};
pub use proxy::{Proxy, ProxyConfig, ProxyError, SandboxEndpoint, SOCKET_NAME};
pub use resolve::Resolver;
pub use secrets::{SecretError, SecretSubstitution, MAX_SUBSTITUTED_BODY, MIN_PLACEHOLDER_LEN};
pub use zeroize::Zeroizing;
