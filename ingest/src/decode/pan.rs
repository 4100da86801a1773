//! Card-number (PAN) masking for everything the decoder writes verbatim.
//!
//! EVENTS.md: a full card number, a run of 13 to 19 digits that passes the Luhn check, is never
//! written anywhere. The decoder copies three things through unparsed: unmapped fields into
//! `extra`, and the raw bytes and the error text of bad records into the DLQ. Each passes
//! through here first. A run keeps its last four digits and the others become `*`.
//!
//! Card numbers are often written in groups (`4111 1111 1111 1111`, `4111-1111-…`), so a run
//! may continue over a single space or hyphen between digits; within a longer grouped run any
//! whole groups adding up to 13–19 digits are checked. Inside JSON, a number token that holds a
//! card number becomes a string (`4111111111111111` → `"************1111"`) so that `extra`
//! stays valid JSON, and escape sequences (`\u0041`) are never mistaken for digits.
//!
//! False positives (a 13-digit epoch-millisecond value passes Luhn one time in ten) are the
//! accepted price: leaking a card number is not an option, showing `*` instead of a digit is.

use std::borrow::Cow;

const MIN_DIGITS: usize = 13;
const MAX_DIGITS: usize = 19;
const KEEP: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Digit,
    /// May join two digit groups of one card number.
    Sep,
    Other,
}

fn class_of(b: u8) -> Class {
    match b {
        b'0'..=b'9' => Class::Digit,
        b' ' | b'-' => Class::Sep,
        _ => Class::Other,
    }
}

/// Cheap pre-check: is there a run (digits, single separators between them) of at least
/// [`MIN_DIGITS`] digits? Almost every input answers no, and then nothing is copied.
fn has_long_run(b: &[u8]) -> bool {
    let mut digits = 0;
    let mut prev = Class::Other;
    for &c in b {
        let class = class_of(c);
        match class {
            Class::Digit => {
                digits += 1;
                if digits >= MIN_DIGITS {
                    return true;
                }
            }
            Class::Sep if prev == Class::Digit => {}
            _ => digits = 0,
        }
        prev = class;
    }
    false
}

fn luhn_ok(b: &[u8], groups: &[(usize, usize)]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &(start, end) in groups.iter().rev() {
        for &c in b[start..end].iter().rev() {
            let mut d = u32::from(c - b'0');
            if double {
                d *= 2;
                if d > 9 {
                    d -= 9;
                }
            }
            sum += d;
            double = !double;
        }
    }
    sum.is_multiple_of(10)
}

/// Finds card numbers among the digit `groups` of one run and records the positions to mask.
fn check_run(b: &[u8], groups: &[(usize, usize)], out: &mut Vec<usize>) {
    let mut s = 0;
    while s < groups.len() {
        let mut total = 0;
        let mut hit = None;
        for e in s..groups.len() {
            total += groups[e].1 - groups[e].0;
            if total > MAX_DIGITS {
                break;
            }
            if total >= MIN_DIGITS && luhn_ok(b, &groups[s..=e]) {
                hit = Some((e, total));
                break;
            }
        }
        match hit {
            Some((e, total)) => {
                let mut left = total - KEEP;
                'mask: for &(start, end) in &groups[s..=e] {
                    for pos in start..end {
                        if left == 0 {
                            break 'mask;
                        }
                        out.push(pos);
                        left -= 1;
                    }
                }
                s = e + 1;
            }
            None => s += 1,
        }
    }
}

/// Scans classified bytes and returns the positions of digits to mask.
fn find(b: &[u8], classes: impl Iterator<Item = (usize, Class)>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut group_start: Option<usize> = None;
    let mut pending_sep = false;
    let mut last = 0;
    for (i, class) in classes {
        // A gap in the indices (an escape sequence, a string boundary) ends the run.
        if i != last + 1 && i != 0 {
            close_group(&mut group_start, last + 1, &mut groups);
            check_run(b, &groups, &mut out);
            groups.clear();
            pending_sep = false;
        }
        last = i;
        match class {
            Class::Digit => {
                if group_start.is_none() {
                    if !pending_sep && !groups.is_empty() {
                        check_run(b, &groups, &mut out);
                        groups.clear();
                    }
                    group_start = Some(i);
                }
                pending_sep = false;
            }
            Class::Sep if group_start.is_some() => {
                close_group(&mut group_start, i, &mut groups);
                pending_sep = true;
            }
            _ => {
                close_group(&mut group_start, i, &mut groups);
                check_run(b, &groups, &mut out);
                groups.clear();
                pending_sep = false;
            }
        }
    }
    close_group(&mut group_start, last + 1, &mut groups);
    check_run(b, &groups, &mut out);
    out
}

fn close_group(start: &mut Option<usize>, end: usize, groups: &mut Vec<(usize, usize)>) {
    if let Some(s) = start.take() {
        groups.push((s, end));
    }
}

/// Masks card numbers in arbitrary bytes (a DLQ payload, a key, a header value).
pub(crate) fn mask_bytes(b: &[u8]) -> Cow<'_, [u8]> {
    if !has_long_run(b) {
        return Cow::Borrowed(b);
    }
    let positions = find(b, b.iter().enumerate().map(|(i, &c)| (i, class_of(c))));
    if positions.is_empty() {
        return Cow::Borrowed(b);
    }
    let mut v = b.to_vec();
    for p in positions {
        v[p] = b'*';
    }
    Cow::Owned(v)
}

/// Masks card numbers in text (an error message).
pub fn mask_pans(s: &str) -> Cow<'_, str> {
    match mask_bytes(s.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(s),
        // Only ASCII digits were replaced by ASCII `*`, so the bytes are still UTF-8.
        Cow::Owned(v) => Cow::Owned(
            String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()),
        ),
    }
}

/// Byte classes of JSON text: digits count only in strings (outside escapes) and in numbers;
/// separators only inside strings.
fn json_classes(b: &[u8]) -> impl Iterator<Item = (usize, Class)> + '_ {
    let mut in_string = false;
    let mut skip = 0usize;
    b.iter().enumerate().filter_map(move |(i, &c)| {
        if skip > 0 {
            skip -= 1;
            return None;
        }
        if in_string {
            match c {
                b'"' => {
                    in_string = false;
                    Some((i, Class::Other))
                }
                b'\\' => {
                    skip = if b.get(i + 1) == Some(&b'u') { 5 } else { 1 };
                    None
                }
                _ => Some((i, class_of(c))),
            }
        } else {
            if c == b'"' {
                in_string = true;
            }
            let class = match class_of(c) {
                Class::Sep => Class::Other,
                other => other,
            };
            Some((i, class))
        }
    })
}

/// Masks card numbers in JSON text, keeping it valid JSON.
pub(crate) fn mask_json(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    if !has_long_run(b) {
        return Cow::Borrowed(s);
    }
    let positions = find(b, json_classes(b));
    if positions.is_empty() {
        return Cow::Borrowed(s);
    }
    // A number token holding a masked digit is wrapped in quotes: `*` is not JSON outside a
    // string. Positions and tokens are both in ascending order, so one merge pass finds them.
    let tokens = number_tokens(b);
    let mut quote: Vec<(usize, usize)> = Vec::new();
    let mut pi = 0;
    for &(start, end) in &tokens {
        while pi < positions.len() && positions[pi] < start {
            pi += 1;
        }
        if pi < positions.len() && positions[pi] < end {
            quote.push((start, end));
        }
    }
    let mut out = Vec::with_capacity(b.len() + 2 * quote.len());
    let (mut pi, mut qi) = (0, 0);
    for (i, &c) in b.iter().enumerate() {
        if quote.get(qi).is_some_and(|q| q.0 == i) {
            out.push(b'"');
        }
        if positions.get(pi) == Some(&i) {
            out.push(b'*');
            pi += 1;
        } else {
            out.push(c);
        }
        if quote.get(qi).is_some_and(|q| q.1 == i + 1) {
            out.push(b'"');
            qi += 1;
        }
    }
    // Only ASCII bytes were replaced or inserted, so the text is still UTF-8.
    Cow::Owned(
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()),
    )
}

/// Byte ranges of number tokens outside strings.
fn number_tokens(b: &[u8]) -> Vec<(usize, usize)> {
    let mut tokens = Vec::new();
    let mut in_string = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            i += 1;
        } else if c == b'-' || c.is_ascii_digit() {
            let start = i;
            while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                i += 1;
            }
            tokens.push((start, i));
        } else {
            i += 1;
        }
    }
    tokens
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn masks_plain_runs_keeping_last_four() {
        assert_eq!(
            mask_pans("card 4111111111111111 ok"),
            "card ************1111 ok"
        );
        // 13, 15 and 19 digit numbers that pass Luhn.
        assert_eq!(mask_pans("4222222222222"), "*********2222");
        assert_eq!(mask_pans("378282246310005"), "***********0005");
        assert_eq!(mask_pans("6011000990139424"), "************9424");
        assert_eq!(mask_pans("4000000000000000006"), "***************0006");
        assert_eq!(mask_pans("x4111111111111111y"), "x************1111y");
    }

    #[test]
    fn leaves_non_cards_alone() {
        // Fails Luhn.
        assert_eq!(mask_pans("4111111111111112"), "4111111111111112");
        // Too short, too long.
        assert_eq!(mask_pans("411111111111"), "411111111111");
        assert_eq!(mask_pans("41111111111111111111"), "41111111111111111111");
        assert!(matches!(mask_pans("amount 1999 EUR"), Cow::Borrowed(_)));
        assert!(matches!(mask_pans(""), Cow::Borrowed(_)));
    }

    #[test]
    fn masks_grouped_numbers() {
        assert_eq!(mask_pans("4111 1111 1111 1111"), "**** **** **** 1111");
        assert_eq!(mask_pans("4111-1111-1111-1111"), "****-****-****-1111");
        // A card number followed by another group still gets found.
        assert_eq!(
            mask_pans("4111 1111 1111 1111 2024"),
            "**** **** **** 1111 2024"
        );
        // Two separators in a row end the run.
        assert_eq!(mask_pans("4111  1111 1111 1111"), "4111  1111 1111 1111");
    }

    #[test]
    fn masks_bytes_that_are_not_utf8() {
        let input = b"\xff\xfe4111111111111111\x00";
        assert_eq!(&*mask_bytes(input), b"\xff\xfe************1111\x00");
    }

    #[test]
    fn json_stays_valid() {
        let s = r#"{"pan":"4111111111111111","n":4111111111111111,"g":"4111 1111 1111 1111","x":[5555555555554444.0]}"#;
        let masked = mask_json(s);
        assert_eq!(
            masked,
            r#"{"pan":"************1111","n":"************1111","g":"**** **** **** 1111","x":["************4444.0"]}"#
        );
        serde_json::from_str::<serde_json::Value>(&masked).unwrap();
        // Hex digits of an escape are not card digits, and the escape stays intact.
        let s = r#"{"u":"\u00e94111111111111111","v":"\u12344111111111"}"#;
        assert_eq!(
            mask_json(s),
            r#"{"u":"\u00e9************1111","v":"\u12344111111111"}"#
        );
        let s = r#"{"a":"1234","b":1999}"#;
        assert!(matches!(mask_json(s), Cow::Borrowed(_)));
    }

    #[test]
    fn string_boundaries_end_runs() {
        // Digits of two adjacent strings do not join into one card number.
        let s = r#"["4111111","111111111"]"#;
        assert_eq!(mask_json(s), s);
    }
}
