//! Parsing of the human units users write: `512m`, `0.5`, `30s`, `2m`.

use std::time::Duration;

/// A value the user wrote that is not a valid quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: expected {expected}")]
pub struct UnitError {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

fn unit_error(what: &'static str, value: &str, expected: &'static str) -> UnitError {
    UnitError {
        what,
        value: value.to_string(),
        expected,
    }
}

/// Parses a byte size the way Docker does: a number with an optional `b`, `k`, `m`, `g`
/// suffix (powers of 1024, case-insensitive, an optional trailing `b` or `ib`).
pub fn parse_bytes(value: &str) -> Result<u64, UnitError> {
    const EXPECTED: &str = "a positive whole number with an optional k, m or g suffix (e.g. 512m)";
    let lower = value.trim().to_ascii_lowercase();
    let stripped = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, multiplier) = match stripped.char_indices().last() {
        Some((i, 'k')) => (&stripped[..i], 1u64 << 10),
        Some((i, 'm')) => (&stripped[..i], 1 << 20),
        Some((i, 'g')) => (&stripped[..i], 1 << 30),
        Some((i, 't')) => (&stripped[..i], 1 << 40),
        _ => (stripped, 1),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| unit_error("size", value, EXPECTED))?;
    match number.checked_mul(multiplier) {
        Some(0) | None => Err(unit_error("size", value, EXPECTED)),
        Some(bytes) => Ok(bytes),
    }
}

/// Parses a CPU count such as `0.5` or `2` into thousandths of a CPU.
pub fn parse_cpus(value: &str) -> Result<u32, UnitError> {
    const EXPECTED: &str = "a number of CPUs above 0, e.g. 0.5 or 2";
    let cpus: f64 = value
        .trim()
        .parse()
        .map_err(|_| unit_error("cpus", value, EXPECTED))?;
    let millis = (cpus * 1000.0).round();
    if !(1.0..=1_000_000.0).contains(&millis) {
        return Err(unit_error("cpus", value, EXPECTED));
    }
    Ok(millis as u32)
}

/// Parses a duration such as `30s`, `2m`, `1h`, `500ms` or a bare number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, UnitError> {
    const EXPECTED: &str = "a positive duration such as 500ms, 30s, 2m or 1h";
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| unit_error("duration", value, EXPECTED))?;
    let millis = match unit {
        "ms" => Some(number),
        "" | "s" => number.checked_mul(1000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => None,
    };
    match millis {
        Some(0) | None => Err(unit_error("duration", value, EXPECTED)),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_accept_docker_suffixes() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("10kb"), Ok(10 << 10));
    }

    #[test]
    fn bytes_refuse_nonsense() {
        for bad in ["", "0", "-1m", "1.5g", "12x", "m", "99999999999999999999g"] {
            assert!(parse_bytes(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn cpus_are_thousandths() {
        assert_eq!(parse_cpus("0.5"), Ok(500));
        assert_eq!(parse_cpus("2"), Ok(2000));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("many").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "0s", "1.5s", "10d", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }
}
