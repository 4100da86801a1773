//! Event times: RFC 3339 with any offset, or epoch milliseconds, to UTC microseconds.
//!
//! Every event goes through here, so the RFC 3339 reader is a small fixed-layout parser rather
//! than a general date library: it checks each field's range (including the day of the month
//! in leap years), applies the offset, and converts the civil date with the days-from-civil
//! formula. Digits beyond microseconds are truncated toward the past, as Arrow's µs unit has
//! no room for them.

use paystream_core::dlq::ErrorKind;

use super::value::{integer_text, parse_i64, shown, FieldError};

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// `n` ASCII digits at `at`, as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// Parses an RFC 3339 date-time (`2024-05-01T12:30:00.123+02:00`, `…Z`) into UTC µs since the
/// epoch. `t`/`z` may be lower case and the separator may be a space, as RFC 3339 allows.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = i64::from(year);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // Second 60 is a leap second; it is kept as the first instant of the next minute.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        let mut scale = 100_000;
        while i < b.len() && b[i].is_ascii_digit() {
            micros += i64::from(b[i] - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_seconds: i64 = match b.get(i)? {
        b'Z' | b'z' => {
            i += 1;
            0
        }
        &sign @ (b'+' | b'-') => {
            let oh = digits(b, i + 1, 2)?;
            let om = digits(b, i + 4, 2)?;
            if b[i + 3] != b':' || oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let off = i64::from(oh * 3600 + om * 60);
            if sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    if i != b.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
            - offset_seconds;
    Some(seconds * MICROS_PER_SECOND + micros)
}

/// Epoch milliseconds to µs, if it fits.
pub(crate) fn millis_to_micros(ms: i64) -> Option<i64> {
    ms.checked_mul(1000)
}

/// The UTC date (days since the epoch, Arrow `Date32`) of a µs timestamp.
pub(crate) fn date_of(micros: i64) -> i32 {
    // |i64::MAX µs| is about 106 million days, well inside i32.
    i32::try_from(micros.div_euclid(MICROS_PER_DAY)).unwrap_or(i32::MAX)
}

/// A timestamp given as text (a JSON string's content or a header): RFC 3339, or digits of
/// epoch milliseconds.
pub(crate) fn parse_text(s: &str) -> Option<i64> {
    match parse_i64(s) {
        Some(ms) => millis_to_micros(ms),
        None => parse_rfc3339(s),
    }
}

fn invalid(path: &str, shown_value: &str) -> FieldError {
    FieldError::new(
        ErrorKind::InvalidTimestamp,
        format!("{path}: {shown_value} is not RFC 3339 or epoch milliseconds"),
    )
}

/// A JSON timestamp: a string in RFC 3339 or an integer of epoch milliseconds.
pub(crate) fn read_timestamp(path: &str, raw: &str) -> Result<i64, FieldError> {
    let text = raw;
    let parsed = if let Some(int) = integer_text(raw) {
        parse_i64(int).and_then(millis_to_micros)
    } else {
        super::value::as_str(raw).and_then(|s| parse_rfc3339(&s))
    };
    parsed.ok_or_else(|| invalid(path, &shown(text)))
}

/// A timestamp from a header value (CloudEvents binary mode's `ce_time`).
pub(crate) fn read_header_timestamp(name: &str, value: &str) -> Result<i64, FieldError> {
    parse_text(value)
        .ok_or_else(|| invalid(&format!("header {name}"), &format!("{:?}", shown(value))))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn chrono_micros(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn agrees_with_chrono_across_offsets() {
        for s in [
            "2024-05-01T12:30:00Z",
            "2024-05-01T12:30:00.123456Z",
            "2024-05-01T12:30:00.1+02:00",
            "2024-05-01T00:30:00-05:30",
            "2024-02-29T23:59:59.999999+14:00",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.5Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2000-03-01T00:00:00+00:00",
            "2023-12-31T23:00:00-01:00",
        ] {
            assert_eq!(parse_rfc3339(s), Some(chrono_micros(s)), "{s}");
        }
    }

    #[test]
    fn lenient_forms_rfc3339_allows() {
        let z = chrono_micros("2024-05-01T12:30:00Z");
        assert_eq!(parse_rfc3339("2024-05-01t12:30:00z"), Some(z));
        assert_eq!(parse_rfc3339("2024-05-01 12:30:00Z"), Some(z));
        // Nanoseconds are truncated to µs.
        assert_eq!(
            parse_rfc3339("2024-05-01T12:30:00.123456789Z"),
            Some(z + 123_456)
        );
        // A leap second is the next minute's first instant.
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            Some(chrono_micros("2017-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "yesterday",
            "2024-05-01",
            "2024-05-01T12:30:00",
            "2024-05-01T12:30Z",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:60:00Z",
            "2024-05-01T12:30:00.Z",
            "2024-05-01T12:30:00+2:00",
            "2024-05-01T12:30:00+24:00",
            "2024-05-01T12:30:00+0200",
            "2024-05-01T12:30:00Zjunk",
            "2024/05/01T12:30:00Z",
            "２０２４-05-01T12:30:00Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
    }

    #[test]
    fn json_values() {
        assert_eq!(
            read_timestamp("$.t", "1714566600123").unwrap(),
            1_714_566_600_123_000
        );
        assert_eq!(read_timestamp("$.t", "-1000").unwrap(), -1_000_000);
        assert_eq!(
            read_timestamp("$.t", "\"2024-05-01T12:30:00Z\"").unwrap(),
            chrono_micros("2024-05-01T12:30:00Z")
        );
        let e = read_timestamp("$.event_time", "\"yesterday\"").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidTimestamp);
        assert_eq!(
            e.message,
            r#"$.event_time: "yesterday" is not RFC 3339 or epoch milliseconds"#
        );
        let e = read_timestamp("$.t", "1.5").unwrap_err();
        assert_eq!(e.message, "$.t: 1.5 is not RFC 3339 or epoch milliseconds");
        let e = read_timestamp("$.t", "true").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidTimestamp);
        // Epoch ms whose µs overflow i64.
        assert!(read_timestamp("$.t", "9223372036854775807").is_err());
        // Strings are RFC 3339 only: epoch ms must be a JSON integer.
        assert!(read_timestamp("$.t", "\"1714566600123\"").is_err());
    }

    #[test]
    fn header_values() {
        assert_eq!(
            read_header_timestamp("ce_time", "2024-05-01T12:30:00Z").unwrap(),
            chrono_micros("2024-05-01T12:30:00Z")
        );
        assert_eq!(
            read_header_timestamp("ce_time", "1714566600123").unwrap(),
            1_714_566_600_123_000
        );
        let e = read_header_timestamp("ce_time", "soon").unwrap_err();
        assert_eq!(
            e.message,
            r#"header ce_time: "soon" is not RFC 3339 or epoch milliseconds"#
        );
    }

    #[test]
    fn dates() {
        assert_eq!(date_of(0), 0);
        assert_eq!(date_of(-1), -1);
        assert_eq!(date_of(MICROS_PER_DAY), 1);
        assert_eq!(
            date_of(chrono_micros("2024-05-01T23:59:59.999999-02:00")),
            days_from_civil(2024, 5, 2) as i32
        );
        assert_eq!(date_of(i64::MIN), (i64::MIN / MICROS_PER_DAY - 1) as i32);
    }
}
