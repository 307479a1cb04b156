//! The record of what the proxy decided, sent to the caller (who writes the audit log) on
//! the sandbox's own channel.
//!
//! Every allowed request gets exactly one `Decided` record, sent as soon as the proxy has
//! connected upstream, and later exactly one `Closed` record with the byte counts.
//! Refusals are aggregated (`ledger`): the first refusal of a kind (protocol, host, port,
//! reason) in an interval is its own record, the repeats in that interval one more record
//! whose `count` says how many it stands for; past the run's budget of refusal records
//! they are only counted, in one `Suppressed` record at the end. A record must never carry
//! request content beyond the method (paths and headers can hold secrets).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Which way the client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP CONNECT: an opaque tunnel, usually TLS.
    Connect,
    /// Absolute-form plain HTTP (`GET http://host/path`).
    Http,
    Socks5,
    /// Refused before the proxy could tell (e.g. a pause of the accept loop).
    Unknown,
}

/// Where in a connection's life the record was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The request was refused, or allowed and connected upstream.
    Decided,
    /// An allowed connection ended; the byte counts are final.
    Closed,
    /// The sandbox's socket closed with refusals that had no record of their own (past the
    /// run's budget of refusal records): `count` says how many.
    Suppressed,
}

/// One egress record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Pairs a `Closed` record with its `Decided` one; unique within one `Proxy`.
    pub connection: u64,
    pub phase: Phase,
    /// The request reached its upstream (false for every refusal and failure).
    pub allowed: bool,
    pub protocol: Protocol,
    /// The host the client asked for (empty when the request could not be parsed).
    pub host: String,
    pub port: u16,
    /// The address connected to, once one was.
    pub resolved: Option<IpAddr>,
    /// The plain-HTTP method, for `Protocol::Http`.
    pub method: Option<String>,
    /// The matching rule when allowed; why not when refused; why it ended when closed.
    pub reason: String,
    /// Bytes the proxy sent to the upstream (for plain HTTP, the rewritten head too).
    pub bytes_up: u64,
    /// Bytes the proxy relayed from the upstream to the sandbox.
    pub bytes_down: u64,
    /// Milliseconds from accepting the connection to this record.
    pub elapsed_ms: u64,
    /// How many decisions this record stands for: 1, or for aggregated refusals the number
    /// of identical ones (same protocol, host, port and reason) in one interval; for a
    /// `Suppressed` record, the refusals not recorded one by one.
    pub count: u64,
}
