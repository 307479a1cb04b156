//! Name resolution on the host, once per request: the proxy screens every address this
//! returns and connects only to one of them, so what was checked is what is dialled.
//!
//! It must never be asked about a name that no rule allows (the caller checks the policy
//! first), and its answer must never be looked up again between the check and the connect
//! (that second lookup is where DNS rebinding lives).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

/// Where names are resolved.
#[derive(Debug, Clone, Default)]
pub enum Resolver {
    /// The host's own resolver (getaddrinfo: /etc/hosts, then DNS).
    #[default]
    System,
    /// A fixed table, lowercase names without trailing dot; a name not in it does not
    /// resolve. For tests and for `nanoclaw verify`.
    Static(HashMap<String, Vec<IpAddr>>),
}

impl Resolver {
    /// Every address of `name` (a validated, normalised DNS name), in the resolver's order,
    /// without duplicates.
    pub(crate) async fn lookup(&self, name: &str) -> io::Result<Vec<IpAddr>> {
        let mut ips: Vec<IpAddr> = match self {
            Resolver::System => tokio::net::lookup_host((name, 0))
                .await?
                .map(|addr| addr.ip())
                .collect(),
            Resolver::Static(table) => table.get(name).cloned().unwrap_or_default(),
        };
        let mut seen = Vec::with_capacity(ips.len());
        ips.retain(|ip| {
            let new = !seen.contains(ip);
            seen.push(*ip);
            new
        });
        if ips.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such host"));
        }
        Ok(ips)
    }
}
