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
//!
//! Secret substitution (`SecretSubstitution`) adds `Phase::Secret` records: one per
//! request that used, misdirected or could no longer use a secret, aggregated like the
//! refusals (per interval, per secret, host and event). They name the secret, never its
//! value or its placeholder.

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
    /// A secret was substituted, misdirected, expired or refused in a request (`secret`
    /// says which and what happened).
    Secret,
}

/// What happened to a secret in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretEvent {
    /// The placeholder was replaced by the value in a request to a listed host.
    Substituted,
    /// The placeholder was sent to a host not listed for the secret, or in plain HTTP to
    /// port 443 (cleartext): left unreplaced, the request went on unchanged.
    Misdirected,
    /// The placeholder was sent to a listed host after the secret's TTL: left unreplaced
    /// (recorded once per secret).
    Expired,
    /// The request could not be substituted (its body is over the bound): refused with
    /// 413 before anything reached the upstream; or the response to a request that carried
    /// the value was encoded (it could hide the value): not passed, a 502.
    Refused,
    /// A response carried the value (an upstream echoing what it received): it reached
    /// the sandbox as the placeholder instead.
    Reflected,
}

impl SecretEvent {
    /// The audit record kind: `secret.substituted`, `secret.misdirected`, ...
    pub fn kind(self) -> &'static str {
        match self {
            SecretEvent::Substituted => "secret.substituted",
            SecretEvent::Misdirected => "secret.misdirected",
            SecretEvent::Expired => "secret.expired",
            SecretEvent::Refused => "secret.refused",
            SecretEvent::Reflected => "secret.reflected",
        }
    }
}

/// Which secret a `Phase::Secret` record is about: its name only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretUse {
    pub name: String,
    pub event: SecretEvent,
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
    /// For `Phase::Secret`: the secret and what happened to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretUse>,
}

impl Decision {
    /// The audit record kind for this record: `egress.allowed`, `egress.denied`,
    /// `egress.closed`, `egress.suppressed`, or for `Phase::Secret` the event's kind
    /// (`secret.substituted`, `secret.misdirected`, `secret.expired`, `secret.refused`).
    pub fn kind(&self) -> &'static str {
        match (self.phase, &self.secret) {
            (Phase::Secret, Some(secret)) => secret.event.kind(),
            (Phase::Secret, None) => "secret.unknown",
            (Phase::Closed, _) => "egress.closed",
            (Phase::Suppressed, _) => "egress.suppressed",
            (Phase::Decided, _) if self.allowed => "egress.allowed",
            (Phase::Decided, _) => "egress.denied",
        }
    }
}
