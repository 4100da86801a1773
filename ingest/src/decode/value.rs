//! Typed reads of one JSON value, given as its raw text.
//!
//! The object scanner hands out each field as the exact text it validated, so a typed
//! read here never needs a general JSON value: a string without escapes is borrowed straight
//! from the payload, an integer is parsed digit by digit with overflow checks, and a value of
//! the wrong JSON type becomes a [`FieldError`] that names the path and shows the value.

use std::borrow::Cow;
use std::fmt::Write as _;

use paystream_core::dlq::ErrorKind;

/// Why one record is bad: its DLQ kind and a message that says where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub kind: ErrorKind,
    pub message: String,
}

impl FieldError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        FieldError {
            kind,
            message: message.into(),
        }
    }
}

/// The JSON type of a raw value, for messages ("expected a string, found a number").
pub(crate) fn json_type(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Longest value shown in an error message; a DLQ message must stay readable and bounded even
/// when the offending value is a megabyte.
const SHOWN_CHARS: usize = 64;

/// The value's JSON text as shown in error messages, cut at [`SHOWN_CHARS`] characters.
pub(crate) fn shown(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
    }
}

/// `path: expected <what>, found <type> <value>`.
pub(crate) fn wrong_type(path: &str, expected: &str, raw: &str) -> FieldError {
    let mut message = String::with_capacity(path.len() + 48);
    let _ = write!(
        message,
        "{path}: expected {expected}, found {} {}",
        json_type(raw),
        shown(raw)
    );
    FieldError::new(ErrorKind::WrongType, message)
}

pub(crate) fn is_null(raw: &str) -> bool {
    raw == "null"
}

/// The string a raw JSON string holds, borrowed when it has no escapes; `None` if the value is
/// not a string.
pub(crate) fn as_str(raw: &str) -> Option<Cow<'_, str>> {
    let text = raw;
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        // The scanner already validated it as a JSON string: no control characters, and a
        // string without backslashes is its own content.
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// A JSON string, or a wrong-type error.
pub(crate) fn read_str<'a>(path: &str, raw: &'a str) -> Result<Cow<'a, str>, FieldError> {
    as_str(raw).ok_or_else(|| wrong_type(path, "a string", raw))
}

/// The text of a JSON number if it is an integer (no fraction, no exponent).
pub(crate) fn integer_text(raw: &str) -> Option<&str> {
    let text = raw;
    let digits = text.strip_prefix('-').unwrap_or(text);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(text)
}

/// Parses optional `-` and decimal digits into an i64; `None` on overflow or a non-digit.
pub(crate) fn parse_i64(text: &str) -> Option<i64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulate negatively so that i64::MIN parses too.
    let mut acc: i64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        acc = acc.checked_mul(10)?.checked_sub(i64::from(b - b'0'))?;
    }
    if neg {
        Some(acc)
    } else {
        acc.checked_neg()
    }
}

/// A JSON integer in the range of i64.
pub(crate) fn read_i64(path: &str, raw: &str) -> Result<i64, FieldError> {
    let text = integer_text(raw).ok_or_else(|| wrong_type(path, "an integer", raw))?;
    parse_i64(text).ok_or_else(|| out_of_range(path, "int64", text))
}

/// A JSON integer in the range of i32.
pub(crate) fn read_i32(path: &str, raw: &str) -> Result<i32, FieldError> {
    let text = integer_text(raw).ok_or_else(|| wrong_type(path, "an integer", raw))?;
    parse_i64(text)
        .and_then(|v| i32::try_from(v).ok())
        .ok_or_else(|| out_of_range(path, "int32", text))
}

fn out_of_range(path: &str, ty: &str, text: &str) -> FieldError {
    FieldError::new(
        ErrorKind::WrongType,
        format!("{path}: {} is out of range for {ty}", shown(text)),
    )
}

/// Any JSON number, as f64 (only for `float64` columns: money never comes here).
pub(crate) fn read_f64(path: &str, raw: &str) -> Result<f64, FieldError> {
    let text = raw;
    match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| out_of_range(path, "float64", text)),
        _ => Err(wrong_type(path, "a number", raw)),
    }
}

pub(crate) fn read_bool(path: &str, raw: &str) -> Result<bool, FieldError> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(wrong_type(path, "a boolean", raw)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn strings_borrow_unless_escaped() {
        let r = r#""abc""#;
        assert!(matches!(as_str(r), Some(Cow::Borrowed("abc"))));
        let r = r#""a\"b\u00e9""#;
        assert_eq!(as_str(r).unwrap(), "a\"bé");
        assert!(matches!(as_str(r), Some(Cow::Owned(_))));
        assert_eq!(as_str("12"), None);
        let err = read_str("$.order_id", "12").unwrap_err();
        assert_eq!(err.kind, ErrorKind::WrongType);
        assert_eq!(
            err.message,
            "$.order_id: expected a string, found a number 12"
        );
    }

    #[test]
    fn integers_are_exact_and_checked() {
        assert_eq!(read_i64("$.x", "-9223372036854775808").unwrap(), i64::MIN);
        assert_eq!(read_i64("$.x", "9223372036854775807").unwrap(), i64::MAX);
        let err = read_i64("$.x", "9223372036854775808").unwrap_err();
        assert_eq!(
            err.message,
            "$.x: 9223372036854775808 is out of range for int64"
        );
        assert_eq!(read_i32("$.n", "-2147483648").unwrap(), i32::MIN);
        let err = read_i32("$.n", "2147483648").unwrap_err();
        assert_eq!(err.message, "$.n: 2147483648 is out of range for int32");
        let err = read_i32("$.n", "1.0").unwrap_err();
        assert_eq!(err.kind, ErrorKind::WrongType);
        assert_eq!(err.message, "$.n: expected an integer, found a number 1.0");
        let err = read_i64("$.n", r#""12""#).unwrap_err();
        assert_eq!(
            err.message,
            r#"$.n: expected an integer, found a string "12""#
        );
        assert_eq!(parse_i64("-"), None);
        assert_eq!(parse_i64(""), None);
        assert_eq!(parse_i64("007"), Some(7));
    }

    #[test]
    fn floats_and_bools() {
        assert_eq!(read_f64("$.r", "0.25").unwrap(), 0.25);
        assert_eq!(read_f64("$.r", "1e2").unwrap(), 100.0);
        assert_eq!(read_f64("$.r", "-3").unwrap(), -3.0);
        let err = read_f64("$.r", "1e400").unwrap_err();
        assert_eq!(err.message, "$.r: 1e400 is out of range for float64");
        let err = read_f64("$.r", "true").unwrap_err();
        assert_eq!(err.message, "$.r: expected a number, found a boolean true");
        assert!(read_bool("$.b", "true").unwrap());
        assert!(!read_bool("$.b", "false").unwrap());
        let err = read_bool("$.b", "[1]").unwrap_err();
        assert_eq!(err.message, "$.b: expected a boolean, found an array [1]");
    }

    #[test]
    fn shown_values_are_bounded() {
        let long = format!("\"{}\"", "é".repeat(200));
        let s = shown(&long);
        assert_eq!(s.chars().count(), SHOWN_CHARS + 1);
        assert!(s.ends_with('…'));
        assert_eq!(shown("12"), "12");
    }
}
