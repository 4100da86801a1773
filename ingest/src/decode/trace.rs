//! W3C Trace Context: the trace and span ids of a `traceparent` value.
//!
//! Trace context is only context: an invalid value leaves the event's `trace_id` and `span_id`
//! null and never makes the record bad. Validation follows the W3C rules closely enough that
//! what is stored can be joined with spans from other systems: lower-case hex, no all-zero ids,
//! no version `ff`.

/// Checks every byte without an early exit, which the compiler turns into a few vector
/// compares: a valid value (the usual case) is read to the end anyway.
fn is_lower_hex(s: &str) -> bool {
    s.bytes().fold(true, |ok, b| {
        ok & (b.is_ascii_digit() | (b'a'..=b'f').contains(&b))
    })
}

fn all_zero(s: &str) -> bool {
    s.bytes().fold(0u8, |acc, b| acc | (b ^ b'0')) == 0
}

/// Parses a W3C `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`) into
/// `(trace_id, span_id)`. Later versions may append fields after the flags; version `ff` and
/// all-zero ids are invalid.
pub(crate) fn parse_traceparent(s: &str) -> Option<(&str, &str)> {
    // Byte positions below are only char boundaries in ASCII text; anything else is invalid.
    if !s.is_ascii() {
        return None;
    }
    let b = s.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (version, trace, span, flags) = (&s[0..2], &s[3..35], &s[36..52], &s[53..55]);
    if !is_lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && b.len() != 55 {
        return None;
    }
    if b.len() > 55 && b[55] != b'-' {
        return None;
    }
    if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
        return None;
    }
    if all_zero(trace) || all_zero(span) {
        return None;
    }
    Some((trace, span))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_parsing() {
        assert_eq!(
            parse_traceparent(TP),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"))
        );
        let future = format!("01{}-extra", &TP[2..]);
        assert!(parse_traceparent(&future).is_some());
        for bad in [
            "",
            "garbage",
            &TP[..54],
            &format!("{TP}-x"),
            &format!("ff{}", &TP[2..]),
            &TP.to_uppercase(),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            // Multi-byte characters where single bytes are sliced must not panic.
            &format!("{}é", &TP[..54]),
            &format!("01{}é", &TP[2..]),
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }
}
