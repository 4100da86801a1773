//! Exact money: decimal text to integer minor units, never through floating point.
//!
//! An amount arrives either as integer minor units under a field whose name ends in `_minor`,
//! or as a decimal (a JSON number or a string such as `"19.99"`) that is scaled by the
//! currency's ISO 4217 exponent. Scaling works on the digits themselves: the value is exact in
//! the currency when every digit below the minor unit is zero, and the result is accumulated
//! with checked arithmetic, so `"19.999"` EUR is refused and `"1e400"` cannot wrap around.

use paystream_core::dlq::ErrorKind;

use super::value::{integer_text, json_type, parse_i64, shown, FieldError};

/// Why an amount could not become minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AmountError {
    /// Not a decimal at all (or, for a `_minor` field, not an integer).
    Malformed,
    /// Below zero.
    Negative,
    /// Has `places` significant decimal places, more than the currency's exponent.
    Inexact { places: u64 },
    /// Does not fit in i64 minor units.
    Overflow,
}

/// Exponents beyond this are clamped: any non-zero amount overflows long before, and clamping
/// keeps the shift arithmetic itself from overflowing.
const MAX_EXP10: i64 = 100_000;

/// Scales the decimal `text` to minor units of a currency with exponent `exp`.
///
/// Accepts `-?digits(.digits)?` and, when `allow_exponent` (JSON number text), an exponent
/// `e[+-]digits`.
pub(crate) fn decimal_to_minor(
    text: &str,
    exp: u8,
    allow_exponent: bool,
) -> Result<i64, AmountError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let negative = bytes.first() == Some(&b'-');
    if negative {
        i += 1;
    }
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &bytes[int_start..i];
    if int_digits.is_empty() {
        return Err(AmountError::Malformed);
    }
    let mut frac_digits: &[u8] = &[];
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &bytes[start..i];
        if frac_digits.is_empty() {
            return Err(AmountError::Malformed);
        }
    }
    let mut exp10: i64 = 0;
    if allow_exponent && matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        let exp_negative = match bytes.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            exp10 = (exp10 * 10 + i64::from(bytes[i] - b'0')).min(MAX_EXP10);
            i += 1;
        }
        if i == start {
            return Err(AmountError::Malformed);
        }
        if exp_negative {
            exp10 = -exp10;
        }
    }
    if i != bytes.len() {
        return Err(AmountError::Malformed);
    }

    let digits = || int_digits.iter().chain(frac_digits.iter()).copied();
    let all_zero = digits().all(|d| d == b'0');
    if all_zero {
        // "-0.00" is zero, not a negative amount.
        return Ok(0);
    }
    if negative {
        return Err(AmountError::Negative);
    }

    // value = D * 10^(exp10 - frac_len), so minor = D * 10^shift.
    let total = int_digits.len() + frac_digits.len();
    let shift = i64::from(exp) + exp10 - frac_digits.len() as i64;
    let keep = if shift < 0 {
        // The last -shift digits fall below the minor unit and must all be zero.
        let dropped = usize::try_from(-shift).unwrap_or(usize::MAX).min(total);
        let keep = total - dropped;
        if digits().skip(keep).any(|d| d != b'0') {
            let trailing_zeros = digits().rev().take_while(|&d| d == b'0').count() as i64;
            let places = frac_digits.len() as i64 - exp10 - trailing_zeros;
            return Err(AmountError::Inexact {
                places: u64::try_from(places).unwrap_or(0),
            });
        }
        keep
    } else {
        total
    };
    let mut minor: i64 = 0;
    for d in digits().take(keep) {
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(i64::from(d - b'0')))
            .ok_or(AmountError::Overflow)?;
    }
    if shift > 0 {
        let shift = u32::try_from(shift).map_err(|_| AmountError::Overflow)?;
        let factor = 10i64.checked_pow(shift).ok_or(AmountError::Overflow)?;
        minor = minor.checked_mul(factor).ok_or(AmountError::Overflow)?;
    }
    Ok(minor)
}

/// Integer minor units as written (a `_minor` field): a JSON integer, not negative.
pub(crate) fn minor_units(raw: &str) -> Result<i64, AmountError> {
    let text = integer_text(raw).ok_or(AmountError::Malformed)?;
    let v = parse_i64(text).ok_or(AmountError::Overflow)?;
    if v < 0 {
        Err(AmountError::Negative)
    } else {
        Ok(v)
    }
}

/// How an amount is written, for reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AmountForm {
    /// Integer minor units (the field name ends in `_minor`).
    Minor,
    /// A decimal scaled by the currency exponent.
    Decimal,
}

/// The form of an amount found under `path`.
pub(crate) fn form_of(path: &str) -> AmountForm {
    let last = path.rsplit('.').next().unwrap_or(path);
    if last.ends_with("_minor") {
        AmountForm::Minor
    } else {
        AmountForm::Decimal
    }
}

/// Reads a decimal amount (JSON number or decimal string) into minor units of `currency`.
pub(crate) fn read_decimal(
    path: &str,
    raw: &str,
    currency: &str,
    exp: u8,
) -> Result<i64, FieldError> {
    let text = raw;
    let result = match text.as_bytes().first() {
        Some(b'"') => match super::value::as_str(raw) {
            Some(s) => decimal_to_minor(&s, exp, false),
            None => Err(AmountError::Malformed),
        },
        Some(b'-' | b'0'..=b'9') => decimal_to_minor(text, exp, true),
        _ => {
            return Err(FieldError::new(
                ErrorKind::WrongType,
                format!(
                    "{path}: expected a decimal amount, found {} {}",
                    json_type(raw),
                    shown(text)
                ),
            ))
        }
    };
    result.map_err(|e| amount_error(path, text, e, Some((currency, exp))))
}

/// Reads integer minor units.
pub(crate) fn read_minor(path: &str, raw: &str) -> Result<i64, FieldError> {
    minor_units(raw).map_err(|e| match e {
        AmountError::Malformed => FieldError::new(
            ErrorKind::WrongType,
            format!(
                "{path}: expected an integer of minor units, found {} {}",
                json_type(raw),
                shown(raw)
            ),
        ),
        other => amount_error(path, raw, other, None),
    })
}

fn amount_error(
    path: &str,
    text: &str,
    e: AmountError,
    currency: Option<(&str, u8)>,
) -> FieldError {
    let text = shown(text);
    match e {
        AmountError::Malformed => FieldError::new(
            ErrorKind::WrongType,
            format!("{path}: {text} is not a decimal amount"),
        ),
        AmountError::Negative => FieldError::new(
            ErrorKind::NegativeAmount,
            format!("{path}: {text} is negative"),
        ),
        AmountError::Inexact { places } => {
            let (code, exp) = currency.unwrap_or(("the currency", 0));
            FieldError::new(
                ErrorKind::InexactAmount,
                format!("{path}: {text} has {places} decimal places but {code} allows {exp}"),
            )
        }
        AmountError::Overflow => FieldError::new(
            ErrorKind::WrongType,
            format!("{path}: {text} is out of range for int64 minor units"),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn scales_by_exponent() {
        assert_eq!(decimal_to_minor("19.99", 2, false), Ok(1999));
        assert_eq!(decimal_to_minor("19.9", 2, false), Ok(1990));
        assert_eq!(decimal_to_minor("19", 2, false), Ok(1900));
        assert_eq!(decimal_to_minor("1999", 0, false), Ok(1999));
        assert_eq!(decimal_to_minor("1.999", 3, false), Ok(1999));
        assert_eq!(decimal_to_minor("1.5", 4, false), Ok(15000));
        assert_eq!(decimal_to_minor("19.9900", 2, false), Ok(1999));
        assert_eq!(decimal_to_minor("0019.99", 2, false), Ok(1999));
        assert_eq!(decimal_to_minor("1999.00", 0, false), Ok(1999));
        assert_eq!(decimal_to_minor("0", 2, false), Ok(0));
        assert_eq!(decimal_to_minor("-0.00", 2, false), Ok(0));
    }

    #[test]
    fn inexact_amounts_report_their_places() {
        assert_eq!(
            decimal_to_minor("19.999", 2, false),
            Err(AmountError::Inexact { places: 3 })
        );
        assert_eq!(
            decimal_to_minor("19.9990", 2, false),
            Err(AmountError::Inexact { places: 3 })
        );
        assert_eq!(
            decimal_to_minor("19.5", 0, false),
            Err(AmountError::Inexact { places: 1 })
        );
        assert_eq!(
            decimal_to_minor("0.0001", 3, false),
            Err(AmountError::Inexact { places: 4 })
        );
    }

    #[test]
    fn json_exponents() {
        assert_eq!(decimal_to_minor("1.999e1", 2, true), Ok(1999));
        assert_eq!(decimal_to_minor("1999E-2", 2, true), Ok(1999));
        assert_eq!(decimal_to_minor("2e+3", 0, true), Ok(2000));
        assert_eq!(
            decimal_to_minor("1999e-3", 2, true),
            Err(AmountError::Inexact { places: 3 })
        );
        assert_eq!(
            decimal_to_minor("1e400", 2, true),
            Err(AmountError::Overflow)
        );
        assert_eq!(decimal_to_minor("0e400", 2, true), Ok(0));
        assert_eq!(
            decimal_to_minor("1e-99999999999999999999", 2, true),
            Err(AmountError::Inexact { places: 100_000 })
        );
        // Exponents are only for JSON numbers, not decimal strings.
        assert_eq!(
            decimal_to_minor("1e3", 2, false),
            Err(AmountError::Malformed)
        );
    }

    #[test]
    fn negative_malformed_and_overflow() {
        assert_eq!(
            decimal_to_minor("-1.00", 2, false),
            Err(AmountError::Negative)
        );
        assert_eq!(
            decimal_to_minor("-19.999", 2, false),
            Err(AmountError::Negative)
        );
        for bad in [
            "", "-", "19.", ".5", "+1", " 1", "1 ", "1,50", "abc", "1.2.3", "0x10",
        ] {
            assert_eq!(
                decimal_to_minor(bad, 2, false),
                Err(AmountError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            decimal_to_minor("92233720368547758.07", 2, false),
            Ok(i64::MAX)
        );
        assert_eq!(
            decimal_to_minor("92233720368547758.08", 2, false),
            Err(AmountError::Overflow)
        );
        assert_eq!(
            decimal_to_minor("100000000000000000000000", 0, false),
            Err(AmountError::Overflow)
        );
        // Long zero tails below the minor unit are fine.
        assert_eq!(
            decimal_to_minor("1.0000000000000000000000000000000", 2, false),
            Ok(100)
        );
    }

    #[test]
    fn minor_units_are_taken_as_is() {
        assert_eq!(minor_units("1999"), Ok(1999));
        assert_eq!(minor_units("0"), Ok(0));
        assert_eq!(minor_units("-5"), Err(AmountError::Negative));
        assert_eq!(minor_units("19.99"), Err(AmountError::Malformed));
        assert_eq!(minor_units("\"1999\""), Err(AmountError::Malformed));
        assert_eq!(
            minor_units("99999999999999999999"),
            Err(AmountError::Overflow)
        );
        assert_eq!(form_of("amount_minor"), AmountForm::Minor);
        assert_eq!(form_of("money.total_minor"), AmountForm::Minor);
        assert_eq!(form_of("amount"), AmountForm::Decimal);
        assert_eq!(form_of("amount_minor.value"), AmountForm::Decimal);
    }

    #[test]
    fn messages() {
        let e = read_decimal("$.data.amount", "\"19.999\"", "EUR", 2).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InexactAmount);
        assert_eq!(
            e.message,
            r#"$.data.amount: "19.999" has 3 decimal places but EUR allows 2"#
        );
        let e = read_decimal("$.amount", "12.5", "JPY", 0).unwrap_err();
        assert_eq!(
            e.message,
            "$.amount: 12.5 has 1 decimal places but JPY allows 0"
        );
        let e = read_decimal("$.amount", "\"-3.00\"", "EUR", 2).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NegativeAmount);
        assert_eq!(e.message, r#"$.amount: "-3.00" is negative"#);
        let e = read_decimal("$.amount", "\"12,50\"", "EUR", 2).unwrap_err();
        assert_eq!(e.kind, ErrorKind::WrongType);
        assert_eq!(e.message, r#"$.amount: "12,50" is not a decimal amount"#);
        let e = read_decimal("$.amount", "true", "EUR", 2).unwrap_err();
        assert_eq!(
            e.message,
            "$.amount: expected a decimal amount, found a boolean true"
        );
        let e = read_minor("$.amount_minor", "-1").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NegativeAmount);
        assert_eq!(e.message, "$.amount_minor: -1 is negative");
        let e = read_minor("$.amount_minor", "\"1999\"").unwrap_err();
        assert_eq!(e.kind, ErrorKind::WrongType);
        assert_eq!(
            e.message,
            r#"$.amount_minor: expected an integer of minor units, found a string "1999""#
        );
        assert_eq!(read_decimal("$.a", "\"7\"", "KWD", 3), Ok(7000));
    }
}
