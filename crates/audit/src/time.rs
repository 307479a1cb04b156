//! Timestamps in the one form the log writes (RFC 3339, UTC, milliseconds:
//! `2025-01-31T12:00:00.123Z`) and the forms a user may filter by.
//!
//! Written with the civil-from-days arithmetic instead of a date crate: it is a few lines
//! and the log needs nothing else from a calendar. Never read the local time zone: every
//! time in the log is UTC so that lines sort and compare as text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// The current time as the log writes it.
pub fn now() -> String {
    format(millis_of(SystemTime::now()))
}

/// Parses a time given on the command line or read from a record: RFC 3339 with any
/// offset and optional fraction (`2025-01-31T12:00:00Z`, `2025-01-31T13:00:00.5+01:00`),
/// or a bare date meaning midnight UTC (`2025-01-31`).
pub fn parse_time(text: &str) -> Result<SystemTime> {
    let bad = || Error::BadTime {
        value: text.to_owned(),
    };
    let millis = parse_millis(text).ok_or_else(bad)?;
    let offset = Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
    .ok_or_else(bad)
}

/// Milliseconds since the Unix epoch, negative before it.
pub fn millis_of(time: SystemTime) -> i64 {
    let (sign, duration) = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (1, after),
        Err(before) => (-1, before.duration()),
    };
    sign * i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub fn format(millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let in_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

pub fn parse_millis(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        digits.iter().try_fold(0i64, |n, d| {
            n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        })
    };
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let date = days_from_civil(year, month, day) * 86_400_000;
    if b.len() == 10 {
        return Some(date);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    if b.get(16) != Some(&b':') {
        return None;
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // A leap second (:60) is kept inside its minute rather than rejected.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut fraction = 0;
    if let Some((b'.', after)) = rest.split_first() {
        let digits = after.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for place in 0..3 {
            fraction = fraction * 10
                + after
                    .get(place)
                    .filter(|_| place < digits)
                    .map_or(0, |d| i64::from(d - b'0'));
        }
        rest = &after[digits..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let field = |hi: u8, lo: u8| -> Option<i64> {
                (hi.is_ascii_digit() && lo.is_ascii_digit())
                    .then(|| i64::from(hi - b'0') * 10 + i64::from(lo - b'0'))
            };
            let (hours, minutes) = (field(*h1, *h2)?, field(*m1, *m2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let minutes = hours * 60 + minutes;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let clock = ((hour * 60 + minute - offset_minutes) * 60 + second.min(59)) * 1000 + fraction;
    Some(date + clock)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format(1_738_325_045_123), "2025-01-31T12:04:05.123Z");
        assert_eq!(format(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_what_it_formats_for_every_day_of_four_centuries() {
        for day in (-200 * 366..200 * 366).step_by(1) {
            let millis = day * 86_400_000 + 45_296_789;
            assert_eq!(
                parse_millis(&format(millis)),
                Some(millis),
                "{}",
                format(millis)
            );
        }
    }

    #[test]
    fn parses_offsets_fractions_and_dates() {
        let noon = parse_millis("2025-01-31T12:00:00Z");
        assert_eq!(noon, Some(1_738_324_800_000));
        assert_eq!(parse_millis("2025-01-31T13:00:00+01:00"), noon);
        assert_eq!(parse_millis("2025-01-31T11:30:00-00:30"), noon);
        assert_eq!(
            parse_millis("2025-01-31t12:00:00.5z"),
            noon.map(|n| n + 500)
        );
        assert_eq!(
            parse_millis("2025-01-31 12:00:00.123456Z"),
            noon.map(|n| n + 123)
        );
        assert_eq!(parse_millis("2025-01-31"), noon.map(|n| n - 43_200_000));
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        for bad in [
            "",
            "2025",
            "2025-1-31",
            "2025-02-30",
            "2025-13-01",
            "2025-01-31T24:00:00Z",
            "2025-01-31T12:00:00",
            "2025-01-31T12:00:00.Z",
            "2025-01-31T12:00:00+0100",
            "2025-01-31T12:00Z",
            "yesterday",
        ] {
            assert_eq!(parse_millis(bad), None, "{bad}");
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
