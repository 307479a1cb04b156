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
//! The proxy does not terminate TLS: after CONNECT it relays opaque bytes to the address
//! it chose for the CONNECT target, so a TLS SNI (or an inner Host header) naming another
//! host reaches nothing but that address. For plain HTTP it refuses a Host header that
//! disagrees with the request target.
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
