//! Quantities written back the way a policy writes them (`256m`, `0.5`, `30s`), so that
//! messages quote values in the user's own units. The inverse of `nanoclaw_spec`'s parsers;
//! this module must never parse.

use std::time::Duration;

/// `1g`, `256m`, `64k` or a plain byte count, whichever is exact.
pub fn bytes(n: u64) -> String {
    for (shift, suffix) in [(40, "t"), (30, "g"), (20, "m"), (10, "k")] {
        if n != 0 && n.trailing_zeros() >= shift {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

/// `0.5`, `2`, `1.25`.
pub fn cpus(millis: u32) -> String {
    let whole = millis / 1000;
    let fraction = millis % 1000;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `1h`, `2m`, `30s` or `500ms`, whichever is exact.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, suffix) in [(3_600_000, "h"), (60_000, "m"), (1000, "s")] {
        if ms != 0 && (ms / unit) * unit == ms {
            return format!("{}{suffix}", ms / unit);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_spec_parsers() {
        for text in ["1g", "256m", "64k", "1000", "3t"] {
            let n = nanoclaw_spec::parse_bytes(text).unwrap();
            assert_eq!(bytes(n), text);
        }
        for text in ["0.5", "2", "1.25", "0.001"] {
            assert_eq!(cpus(nanoclaw_spec::parse_cpus(text).unwrap()), text);
        }
        for text in ["1h", "2m", "30s", "500ms", "90s"] {
            assert_eq!(duration(nanoclaw_spec::parse_duration(text).unwrap()), text);
        }
    }
}
