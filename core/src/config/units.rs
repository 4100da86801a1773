//! Human-written sizes (`"64KiB"`, `"1.5GiB"`, `"10MB"`) and durations (`"250ms"`, `"1m30s"`).
//!
//! Small hand-written parsers rather than a dependency: the accepted forms are few, and owning
//! them lets every error say exactly what is expected. Arithmetic is integer (u128) so that
//! `"1.5GiB"` is exact and no input can overflow or panic.

use std::time::Duration;

const SIZE_EXPECTED: &str = r#"expected a size like "512", "64KiB" or "128MiB""#;
const DURATION_EXPECTED: &str = r#"expected a duration like "250ms", "2s" or "1m""#;

/// The message for a value that is not a size at all (`found` is already rendered).
pub fn size_expected(found: &str) -> String {
    format!("{SIZE_EXPECTED}, found {found}")
}

/// The message for a value that is not a duration at all (`found` is already rendered).
pub fn duration_expected(found: &str) -> String {
    format!("{DURATION_EXPECTED}, found {found}")
}

fn size_unit(unit: &str) -> Option<u64> {
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    Some(multiplier)
}

/// Parses a size in bytes: a number (fractions allowed with a unit) and an optional unit,
/// binary (`KiB`, `MiB`, `GiB`, `TiB`) or decimal (`KB`, `MB`, `GB`, `TB`), any case.
/// A fraction of a byte is rounded down.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    let unit = unit.trim_start();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(size_expected(&format!("{text:?}")));
    }
    let Some(multiplier) = size_unit(unit) else {
        return Err(format!(
            "{SIZE_EXPECTED}, found {text:?} (units: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
        ));
    };
    if !fraction.is_empty() && multiplier == 1 {
        return Err(format!(
            "{SIZE_EXPECTED}, found {text:?} (a number of bytes must be whole)"
        ));
    }
    let too_large = || format!("size {text:?} is too large");
    // More than 38 digits cannot fit a u128 and is absurd for a size anyway.
    if whole.len() + fraction.len() > 30 {
        return Err(too_large());
    }
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let multiplier = u128::from(multiplier);
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_large)?;
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().map_err(|_| too_large())?;
        let scale = 10u128.pow(fraction.len() as u32);
        let part = digits.checked_mul(multiplier).ok_or_else(too_large)? / scale;
        bytes = bytes.checked_add(part).ok_or_else(too_large)?;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Parses a duration: one or more `<integer><unit>` parts with unit `ms`, `s`, `m` or `h`,
/// e.g. `"250ms"`, `"2s"`, `"1m30s"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(duration_expected(&format!("{text:?}")));
    }
    let mut rest = s;
    let mut total_ms: u64 = 0;
    let too_long = || format!("duration {text:?} is too long");
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(duration_expected(&format!("{text:?}")));
        }
        let (digits, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => {
                return Err(format!(
                    "{DURATION_EXPECTED}, found {text:?} (add a unit: ms, s, m or h)"
                ))
            }
            _ => {
                return Err(format!(
                    "{DURATION_EXPECTED}, found {text:?} (units: ms, s, m, h)"
                ))
            }
        };
        let n: u64 = digits.parse().map_err(|_| too_long())?;
        let part = n.checked_mul(unit_ms).ok_or_else(too_long)?;
        total_ms = total_ms.checked_add(part).ok_or_else(too_long)?;
        rest = after.trim_start();
    }
    Ok(Duration::from_millis(total_ms))
}

/// Renders a size the way a user would write it: the largest binary unit that divides it.
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    bytes.to_string()
}

/// Renders a duration the way a user would write it (`"1m30s"`, `"250ms"`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0ms".to_owned();
    }
    let mut out = String::new();
    for (unit, m) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= m {
            out.push_str(&format!("{}{unit}", ms / m));
            ms %= m;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1mib"), Ok(1 << 20));
        assert_eq!(parse_size(" 64 kib "), Ok(64 * 1024));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert_eq!(parse_size("0.3KiB"), Ok(307));
        assert_eq!(parse_size("16TiB"), Ok(16 << 40));
    }

    #[test]
    fn bad_sizes_say_what_is_expected() {
        assert_eq!(
            parse_size("huge").unwrap_err(),
            r#"expected a size like "512", "64KiB" or "128MiB", found "huge""#
        );
        assert!(parse_size("10XB").unwrap_err().contains("units: B, KiB"));
        assert!(parse_size("1.5").unwrap_err().contains("whole"));
        assert!(parse_size("").is_err());
        assert!(parse_size("1.2.3MiB").is_err());
        assert!(parse_size("1.MiB").is_err());
        assert!(parse_size(".5MiB").is_err());
        assert!(parse_size("-1MiB").is_err());
        assert_eq!(
            parse_size("99999999999TiB").unwrap_err(),
            r#"size "99999999999TiB" is too large"#
        );
        assert!(parse_size(&"9".repeat(60))
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        assert_eq!(
            parse_duration("fast").unwrap_err(),
            r#"expected a duration like "250ms", "2s" or "1m", found "fast""#
        );
        assert!(parse_duration("250").unwrap_err().contains("add a unit"));
        assert!(parse_duration("2sec")
            .unwrap_err()
            .contains("units: ms, s, m, h"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999h")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_duration("9999999999999999h")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn formatting_round_trips() {
        for s in ["1MiB", "128MiB", "1GiB", "512", "1536KiB"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
        for s in ["250ms", "2s", "1m30s", "1h", "0ms", "1m0s1ms"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_millis(90_250)), "1m30s250ms");
    }
}
