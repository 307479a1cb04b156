//! One audit record: its fields, its canonical JSON, its hash and its line in the file.
//!
//! A record is one line: `{"seq":…,"ts":…,"kind":…,"prev":…,"data":{…},"hash":…}`.
//! `hash` is the hex sha256 of the canonical JSON of every other field, and `prev` is the
//! `hash` of the record before (64 zeros for the first), so editing, dropping, inserting
//! or reordering any line breaks the chain.
//!
//! The line itself is canonical too: `verify` trusts a line only when it is byte for byte
//! what `to_line` writes for the record it parses to, so no duplicate key, reordered key,
//! whitespace or other spelling of a value can make two readers see two records.
//!
//! Canonical JSON is compact (no whitespace) with object keys sorted by byte order at
//! every level. It is written out here rather than left to serde_json's map order: that
//! order is sorted only while no crate in the build enables serde_json's
//! `preserve_order` feature (none does today), and a hash must not change with a
//! dependency's feature flags.
//!
//! Never put a secret value in a record: everything in `data` is kept in clear forever.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::hex;

/// The `prev` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One line of the log, as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// 1 for the first record, then one more per record.
    pub seq: u64,
    /// When the record was appended: RFC 3339, UTC, milliseconds.
    pub ts: String,
    /// What happened: `invocation.start`, `invocation.end`, `policy.refused`, …
    pub kind: String,
    /// The `hash` of the record before, [`GENESIS_HASH`] for the first.
    pub prev: String,
    /// What the kind says about it: always a JSON object.
    pub data: Value,
    /// sha256 of this record's canonical JSON without `hash`.
    pub hash: String,
}

impl Record {
    /// Builds the record that follows `prev` and seals it with its hash.
    pub(crate) fn seal(seq: u64, ts: String, kind: &str, prev: String, data: Value) -> Record {
        let hash = hash_of(seq, &ts, kind, &prev, &data);
        Record {
            seq,
            ts,
            kind: kind.to_owned(),
            prev,
            data,
            hash,
        }
    }

    /// The line this record is written as, newline included. Fields are in reading
    /// order (not canonical order): the hash does not depend on how the line is laid out.
    pub(crate) fn to_line(&self) -> Vec<u8> {
        let mut line = String::with_capacity(256);
        line.push_str("{\"seq\":");
        line.push_str(&self.seq.to_string());
        line.push_str(",\"ts\":");
        push_string(&mut line, &self.ts);
        line.push_str(",\"kind\":");
        push_string(&mut line, &self.kind);
        line.push_str(",\"prev\":");
        push_string(&mut line, &self.prev);
        line.push_str(",\"data\":");
        push_canonical(&mut line, &self.data);
        line.push_str(",\"hash\":");
        push_string(&mut line, &self.hash);
        line.push_str("}\n");
        line.into_bytes()
    }

    /// The invocation this record belongs to, if it names one.
    pub fn invocation_id(&self) -> Option<&str> {
        self.data.get("invocation_id").and_then(Value::as_str)
    }

    /// The tool this record is about, if it names one.
    pub fn tool(&self) -> Option<&str> {
        self.data.get("tool").and_then(Value::as_str)
    }
}

/// A line parsed and checked against its own hash, before the chain is looked at.
pub struct Parsed {
    pub record: Record,
    /// Whether `hash` matches the record's fields.
    pub hash_ok: bool,
    /// Whether the line is byte for byte the line nanoclaw writes for this record. A line
    /// that parses to a record with a matching hash can still say more than that record:
    /// a duplicate key (`"exit":137` before the real `"exit":0`), which a parser resolves
    /// one way and another reader the other; so can reordered keys, whitespace or
    /// another spelling of a string or number. Only the exact bytes are trusted.
    pub exact: bool,
}

/// Parses one line (without its newline). `Err` says why it is not a record.
pub fn parse_line(line: &[u8]) -> std::result::Result<Parsed, String> {
    // Into the struct directly: a duplicate top-level field is an error here, and one
    // inside `data` (last wins) is caught by the byte-for-byte comparison below.
    let record: Record = serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
    if !record.data.is_object() {
        return Err("\"data\" is not an object".into());
    }
    let written = record.to_line();
    Ok(Parsed {
        hash_ok: record.hash
            == hash_of(
                record.seq,
                &record.ts,
                &record.kind,
                &record.prev,
                &record.data,
            ),
        exact: written.strip_suffix(b"\n") == Some(line),
        record,
    })
}

/// The hash of a record: sha256 of the canonical JSON of every field but `hash`.
fn hash_of(seq: u64, ts: &str, kind: &str, prev: &str, data: &Value) -> String {
    // The five fields, keys in sorted order, written out by hand (see the module doc).
    let mut text = String::with_capacity(256);
    text.push_str("{\"data\":");
    push_canonical(&mut text, data);
    text.push_str(",\"kind\":");
    push_string(&mut text, kind);
    text.push_str(",\"prev\":");
    push_string(&mut text, prev);
    text.push_str(",\"seq\":");
    text.push_str(&seq.to_string());
    text.push_str(",\"ts\":");
    push_string(&mut text, ts);
    text.push('}');
    sha256_hex(text.as_bytes())
}

/// Appends the canonical JSON of `value`: compact, object keys sorted at every level.
pub fn push_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => push_canonical_object(out, map),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_canonical(out, item);
            }
            out.push(']');
        }
        Value::String(s) => push_string(out, s),
        // Null, bools and numbers: serde_json's compact text, the same on every run.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn push_canonical_object(out: &mut String, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_string(out, key);
        out.push(':');
        push_canonical(out, value);
    }
    out.push('}');
}

/// Appends `s` as a JSON string, escaped the way serde_json escapes it.
fn push_string(out: &mut String, s: &str) {
    out.push_str(&Value::String(s.to_owned()).to_string());
}

/// Checks that a record's data is a JSON object before it is sealed.
pub(crate) fn check_data(kind: &str, data: &Value) -> Result<()> {
    let got = match data {
        Value::Object(_) => return Ok(()),
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
    };
    Err(Error::DataNotObject {
        kind: kind.to_owned(),
        got,
    })
}

/// Lowercase hex sha256 of `bytes`: the form of every hash in the log.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes))
}

/// A fresh random 128-bit invocation id, in hex, from the kernel's random source.
pub fn invocation_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::Random { source: e.into() }),
        }
    }
    Ok(hex::encode(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_has_no_spaces() {
        let mut out = String::new();
        push_canonical(
            &mut out,
            &json!({"b": 1, "a": {"z": [true, null, {"y": 1.5, "x": "q\"\n"}], "é": -3}}),
        );
        assert_eq!(
            out,
            r#"{"a":{"z":[true,null,{"x":"q\"\n","y":1.5}],"é":-3},"b":1}"#
        );
    }

    #[test]
    fn a_sealed_record_parses_back_with_a_matching_hash() {
        let data = json!({"f": [0.1, 1e300, 5e-324, -0.0, 18446744073709551615u64, -9007199254740993i64], "s": "\u{1b}[31m"});
        let record = Record::seal(
            7,
            "2025-01-31T12:00:00.000Z".into(),
            "x.y",
            GENESIS_HASH.into(),
            data,
        );
        let line = record.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let parsed = parse_line(&line[..line.len() - 1]).unwrap();
        assert!(parsed.hash_ok && parsed.exact);
        assert_eq!(parsed.record, record);
    }

    #[test]
    fn the_hash_covers_every_field() {
        let record = Record::seal(
            1,
            "2025-01-31T12:00:00.000Z".into(),
            "k",
            GENESIS_HASH.into(),
            json!({"a": 1}),
        );
        let line = String::from_utf8(record.to_line()).unwrap();
        for (from, to) in [
            ("\"seq\":1", "\"seq\":2"),
            ("12:00:00", "12:00:01"),
            ("\"k\"", "\"j\""),
            ("\"prev\":\"0", "\"prev\":\"1"),
            ("\"a\":1", "\"a\":2"),
        ] {
            let edited = line.trim_end().replacen(from, to, 1);
            assert_ne!(edited, line.trim_end());
            assert!(!parse_line(edited.as_bytes()).unwrap().hash_ok, "{edited}");
        }
    }

    #[test]
    fn only_the_exact_bytes_written_are_exact() {
        let record = Record::seal(
            1,
            "2025-01-31T12:00:00.000Z".into(),
            "k",
            GENESIS_HASH.into(),
            json!({"a": 1, "exit": 0, "s": "A"}),
        );
        let line = String::from_utf8(record.to_line()).unwrap();
        let line = line.trim_end();
        assert!(parse_line(line.as_bytes()).unwrap().exact);
        for (from, to) in [
            ("\"exit\":0", "\"exit\":137,\"exit\":0"),
            ("{\"a\":1,\"exit\":0", "{\"exit\":0,\"a\":1"),
            ("\"seq\":1,", "\"seq\": 1,"),
            ("\"s\":\"A\"", "\"s\":\"\\u0041\""),
            ("\"a\":1", "\"a\":1.0"),
            ("\"exit\":0", "\"exit\":-0"),
            ("{\"seq\"", "{\"extra\":0,\"seq\""),
            ("{\"seq\":1,\"ts\"", "{\"ts\""),
        ] {
            let edited = line.replacen(from, to, 1);
            assert_ne!(edited, line);
            if let Ok(parsed) = parse_line(edited.as_bytes()) {
                assert!(!parsed.exact || !parsed.hash_ok, "{edited}");
            }
        }
        let doubled = line.replacen("{\"seq\":1,", "{\"seq\":2,\"seq\":1,", 1);
        assert!(parse_line(doubled.as_bytes()).is_err(), "{doubled}");
    }

    #[test]
    fn sha256_and_ids_are_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (a, b) = (invocation_id().unwrap(), invocation_id().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
