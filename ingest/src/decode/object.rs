//! One JSON object as a flat list of `(key, raw value text)` pairs, borrowed from the payload.
//!
//! This is the decoder's only general JSON parse, and most of its time: a validating scanner
//! that walks the text once, checks the full JSON grammar (strings, escapes, numbers, literals,
//! nesting) and slices out each member's value without building it. Callers then read only the
//! members a table maps, each with a typed read; no `serde_json::Value` is built per event.
//!
//! It is hand-written rather than serde_json's `RawValue` for two reasons measured on the
//! benchmark: a CloudEvents `data` object can be split into its members in the same pass that
//! splits the envelope (serde_json would skip it, then parse it again), and the scan over
//! string contents looks at eight bytes per step. serde_json still has the last word on what
//! is wrong with a bad payload: its error message, with line and column, is what the DLQ shows,
//! and a property test checks that both accept exactly the same documents.
//!
//! The payload was checked to be UTF-8 before; the scanner only looks at ASCII bytes, so every
//! slice it makes falls on a character boundary.

use std::borrow::Cow;

/// Members of one object, in document order: key and the value's raw JSON text.
pub(crate) type Fields<'a> = Vec<(Cow<'a, str>, &'a str)>;

/// What a JSON document turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Object,
    /// Valid JSON, but not an object; the name of what it is.
    NotObject(&'static str),
}

/// The text is not JSON. Why is left to serde_json (see [`describe_invalid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid;

/// Parses `text` as a JSON object into `into` (cleared first). If `expand` is given and the
/// object has a member of that name whose value is an object, that object's members go into
/// the second vector in the same pass (the first such member only); the function then returns
/// `true` as its second value.
pub(crate) fn parse_object<'a>(
    text: &'a str,
    into: &mut Fields<'a>,
    expand: Option<(&str, &mut Fields<'a>)>,
) -> Result<(Shape, bool), Invalid> {
    into.clear();
    let mut sc = Scanner::new(text);
    sc.ws();
    let shape = match sc.peek() {
        Some(b'{') => {
            let expanded = sc.object_members(into, expand)?;
            sc.ws();
            if sc.i != sc.b.len() {
                return Err(Invalid);
            }
            return Ok((Shape::Object, expanded));
        }
        Some(b'[') => Shape::NotObject("an array"),
        Some(b'"') => Shape::NotObject("a string"),
        Some(b't' | b'f') => Shape::NotObject("a boolean"),
        Some(b'n') => Shape::NotObject("null"),
        Some(b'-' | b'0'..=b'9') => Shape::NotObject("a number"),
        _ => return Err(Invalid),
    };
    sc.value()?;
    sc.ws();
    if sc.i != sc.b.len() {
        return Err(Invalid);
    }
    Ok((shape, false))
}

/// Parses an object value that the scanner already validated (a member's raw text).
pub(crate) fn parse_nested<'a>(raw: &'a str, into: &mut Fields<'a>) -> bool {
    raw.starts_with('{') && matches!(parse_object(raw, into, None), Ok((Shape::Object, _)))
}

/// serde_json's account of what is wrong with `text`: `invalid JSON at line L column C: …`.
pub(crate) fn describe_invalid(text: &str) -> String {
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => "invalid JSON".to_owned(),
        Err(e) => {
            let full = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            match full.strip_suffix(&position) {
                Some(what) => format!(
                    "invalid JSON at line {} column {}: {what}",
                    e.line(),
                    e.column()
                ),
                None => format!("invalid JSON: {full}"),
            }
        }
    }
}

/// Hands a vector's allocation to a vector of another lifetime.
///
/// Scratch vectors hold borrows of one payload and must be emptied before the next. Collecting
/// an emptied vector through `filter_map` reuses its buffer in place (the element layouts are
/// identical, only lifetimes differ), so the hot path allocates nothing per event without any
/// unsafe code.
pub(crate) fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// Nesting levels tracked in a machine word before spilling to the heap.
const INLINE_DEPTH: u32 = 64;

struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn new(s: &'a str) -> Self {
        Scanner {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Result<(), Invalid> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// At `{`: the members, up to and including `}`.
    fn object_members(
        &mut self,
        into: &mut Fields<'a>,
        mut expand: Option<(&str, &mut Fields<'a>)>,
    ) -> Result<bool, Invalid> {
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(false);
        }
        let mut expanded = false;
        loop {
            let key = self.key()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            let start = self.i;
            match expand.as_mut() {
                Some((name, nested)) if !expanded && self.peek() == Some(b'{') && key == *name => {
                    nested.clear();
                    self.object_members(nested, None)?;
                    expanded = true;
                }
                _ => self.value()?,
            }
            into.push((key, &self.s[start..self.i]));
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(expanded);
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// A member name, borrowed unless it has escapes.
    fn key(&mut self) -> Result<Cow<'a, str>, Invalid> {
        let start = self.i;
        let escaped = self.string()?;
        let quoted = &self.s[start..self.i];
        if !escaped {
            return Ok(Cow::Borrowed(&quoted[1..quoted.len() - 1]));
        }
        // Rare: unescape with serde_json. A key it refuses (a lone surrogate escape) is kept as
        // written; it can match no mapping either way.
        Ok(Cow::Owned(
            serde_json::from_str::<String>(quoted)
                .unwrap_or_else(|_| quoted[1..quoted.len() - 1].to_owned()),
        ))
    }

    /// At `"`: skips a string through its closing quote; says whether it had escapes.
    fn string(&mut self) -> Result<bool, Invalid> {
        self.expect(b'"')?;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    match self.b.get(self.i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or(Invalid)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Invalid);
                            }
                            self.i += 6;
                        }
                        _ => return Err(Invalid),
                    }
                }
                // A control character, or the end of the text.
                _ => return Err(Invalid),
            }
        }
    }

    /// Advances over string content up to the next `"`, `\` or control character, eight bytes
    /// at a time: per byte, `x - 0x20` underflows for controls and `(x ^ c) - 1` for `c`, and
    /// the borrow shows in the byte's top bit (ASCII-only bytes, so no false hits from bytes
    /// that already had it set, which are masked out).
    #[inline]
    fn skip_plain(&mut self) {
        const ONES: u64 = u64::MAX / 255;
        const HIGH: u64 = ONES << 7;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let x = u64::from_le_bytes(w);
            let ctrl = x.wrapping_sub(ONES * 0x20);
            let q = x ^ (ONES * u64::from(b'"'));
            let quote = q.wrapping_sub(ONES);
            let bs = x ^ (ONES * u64::from(b'\\'));
            let backslash = bs.wrapping_sub(ONES);
            let hits = (ctrl & !x | quote & !q | backslash & !bs) & HIGH;
            if hits != 0 {
                self.i += (hits.trailing_zeros() / 8) as usize;
                // The word trick can flag a byte after the first real hit; the byte loop below
                // settles the exact position.
                break;
            }
            self.i += 8;
        }
        while let Some(&c) = self.b.get(self.i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return;
            }
            self.i += 1;
        }
    }

    fn number(&mut self) -> Result<(), Invalid> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Invalid),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.at_least_one_digit()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.at_least_one_digit()?;
        }
        Ok(())
    }

    #[inline]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn at_least_one_digit(&mut self) -> Result<(), Invalid> {
        let start = self.i;
        self.digits();
        if self.i == start {
            Err(Invalid)
        } else {
            Ok(())
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Invalid> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// Skips one value of any kind, iteratively: nesting depth costs no stack.
    fn value(&mut self) -> Result<(), Invalid> {
        // Open containers, innermost in the lowest bit: 1 for an object, 0 for an array.
        let mut inline: u64 = 0;
        let mut depth: u32 = 0;
        let mut spill: Vec<bool> = Vec::new();
        let is_object = |inline: u64, spill: &Vec<bool>, depth: u32| {
            if depth > INLINE_DEPTH {
                spill.last().copied().unwrap_or(false)
            } else {
                inline & 1 == 1
            }
        };
        'value: loop {
            self.ws();
            match self.peek() {
                Some(b'"') => {
                    self.string()?;
                }
                Some(open @ (b'{' | b'[')) => {
                    self.i += 1;
                    self.ws();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                    } else {
                        depth += 1;
                        if depth > INLINE_DEPTH {
                            spill.push(open == b'{');
                        } else {
                            inline = (inline << 1) | u64::from(open == b'{');
                        }
                        if open == b'{' {
                            self.string()?;
                            self.ws();
                            self.expect(b':')?;
                        }
                        continue 'value;
                    }
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(Invalid),
            }
            // A value is complete: close what it completes, or move to the next element.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                self.ws();
                let object = is_object(inline, &spill, depth);
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if object {
                            self.ws();
                            self.string()?;
                            self.ws();
                            self.expect(b':')?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {}
                    Some(b']') if !object => {}
                    _ => return Err(Invalid),
                }
                self.i += 1;
                if depth > INLINE_DEPTH {
                    spill.pop();
                } else {
                    inline >>= 1;
                }
                depth -= 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Shape, Vec<(String, String)>), Invalid> {
        let mut fields = Fields::new();
        let (shape, _) = parse_object(text, &mut fields, None)?;
        Ok((
            shape,
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    #[test]
    fn members_in_order_with_raw_values() {
        let text = " {\"a\": 1, \"b\" : {\"c\":[1, 2]}, \"d\\\"e\":\"x\\ny\", \"f\":null,\"g\":\"\\u00e9\"}\n";
        let mut fields = Fields::new();
        assert_eq!(
            parse_object(text, &mut fields, None),
            Ok((Shape::Object, false))
        );
        let got: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_ref(), *v)).collect();
        assert_eq!(
            got,
            [
                ("a", "1"),
                ("b", r#"{"c":[1, 2]}"#),
                ("d\"e", r#""x\ny""#),
                ("f", "null"),
                ("g", r#""\u00e9""#),
            ]
        );
        assert!(matches!(fields[0].0, Cow::Borrowed(_)));
        assert!(matches!(fields[2].0, Cow::Owned(_)));
        let mut nested = Fields::new();
        assert!(parse_nested(fields[1].1, &mut nested));
        assert_eq!(nested[0].0, "c");
        assert!(!parse_nested(fields[0].1, &mut nested));
    }

    #[test]
    fn expands_one_member_in_the_same_pass() {
        let text = r#"{"id":"e","data":{"x":1,"y":{"z":[true]}},"data":{"other":2}}"#;
        let (mut top, mut data) = (Fields::new(), Fields::new());
        let got = parse_object(text, &mut top, Some(("data", &mut data)));
        assert_eq!(got, Ok((Shape::Object, true)));
        assert_eq!(top[1].1, r#"{"x":1,"y":{"z":[true]}}"#);
        let keys: Vec<&str> = data.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["x", "y"]);
        // A `data` that is not an object is left as it is.
        let got = parse_object(r#"{"data":"s"}"#, &mut top, Some(("data", &mut data)));
        assert_eq!(got, Ok((Shape::Object, false)));
    }

    #[test]
    fn not_objects_and_errors() {
        assert_eq!(
            parse("[1,{\"a\":2}]").unwrap().0,
            Shape::NotObject("an array")
        );
        assert_eq!(parse(" \"s\" ").unwrap().0, Shape::NotObject("a string"));
        assert_eq!(parse("-12.5e3").unwrap().0, Shape::NotObject("a number"));
        assert_eq!(parse("null").unwrap().0, Shape::NotObject("null"));
        assert_eq!(parse("true").unwrap().0, Shape::NotObject("a boolean"));
        for bad in [
            "",
            " ",
            "{",
            "}",
            "{\"a\":}",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":1 \"b\":2}",
            "{} x",
            "{}{}",
            "[1,]",
            "[1 2]",
            "{\"a\":[}",
            "{\"a\":{]}",
            "{'a':1}",
            "{a:1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":+1}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"unterminated}",
            "{\"a\":NaN}",
            "{\"a\":Infinity}",
            "\u{feff}{}",
        ] {
            assert_eq!(parse(bad), Err(Invalid), "{bad:?}");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_messages_come_from_serde_json() {
        assert_eq!(
            describe_invalid("{\"a\": }"),
            "invalid JSON at line 1 column 7: expected value"
        );
        assert_eq!(
            describe_invalid("{\n\"a\":1,}"),
            "invalid JSON at line 2 column 7: key must be a string"
        );
    }

    #[test]
    fn strings_with_long_runs_and_escapes_at_every_offset() {
        for pad in 0..20 {
            let s = "x".repeat(pad);
            for tail in ["\\\"", "\\n", "\\u0041", "é", "\u{1F600}"] {
                let text = format!("{{\"k{s}\":\"{s}{tail}{s}\"}}");
                let (_, members) = parse(&text).unwrap();
                let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
                let got: String = serde_json::from_str(&members[0].1).unwrap();
                assert_eq!(got, expected[&members[0].0], "{text}");
            }
            // A control character at any offset is refused.
            let text = format!("{{\"k\":\"{s}\u{1}{s}\"}}");
            assert_eq!(parse(&text), Err(Invalid));
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let text = format!("{{\"a\":{deep}}}");
        let (shape, members) = parse(&text).unwrap();
        assert_eq!(shape, Shape::Object);
        assert_eq!(members[0].1.len(), 200_000);
        let mixed = format!("{}1{}", "[{\"k\":".repeat(300), "}]".repeat(300));
        assert_eq!(parse(&mixed).unwrap().0, Shape::NotObject("an array"));
        let unbalanced = format!("{}1{}", "[{\"k\":".repeat(300), "]}".repeat(300));
        assert_eq!(parse(&unbalanced), Err(Invalid));
    }

    /// JSON-ish text: valid documents with random edits using the bytes that matter to the
    /// grammar.
    fn near_json() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            any::<i64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:e}")),
            "[a-z\\\\\"é\\\\u0041 ]{0,8}".prop_map(|s| format!("\"{s}\"")),
        ];
        let doc = leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z]{1,3}", inner), 0..4).prop_map(|v| {
                    let m: Vec<String> = v
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\" : {v}"))
                        .collect();
                    format!("{{{}}}", m.join(","))
                }),
            ]
        });
        let edit = (
            any::<prop::sample::Index>(),
            0u8..3,
            prop::sample::select(vec![
                '{', '}', '[', ']', ',', ':', '"', '\\', '-', '.', 'e', '0', '1', ' ', '\n', 't',
                'u', '\u{1}', 'é',
            ]),
        );
        (doc, prop::collection::vec(edit, 0..3)).prop_map(|(doc, edits)| {
            let mut chars: Vec<char> = doc.chars().collect();
            for (at, op, c) in edits {
                let i = at.index(chars.len() + 1);
                match op {
                    0 => chars.insert(i, c),
                    1 if i < chars.len() => {
                        chars.remove(i);
                    }
                    _ if i < chars.len() => chars[i] = c,
                    _ => {}
                }
            }
            chars.into_iter().collect()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

        /// The scanner accepts exactly what serde_json accepts, and splits objects as it does.
        #[test]
        fn agrees_with_serde_json(text in near_json()) {
            let ours = parse(&text);
            let theirs = serde_json::from_str::<serde::de::IgnoredAny>(&text);
            proptest::prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?}", text);
            if let Ok((Shape::Object, members)) = ours {
                type Keys = std::collections::HashMap<String, serde::de::IgnoredAny>;
                let object: Keys = serde_json::from_str(&text).unwrap();
                for (key, raw) in &members {
                    proptest::prop_assert!(object.contains_key(key));
                    proptest::prop_assert!(
                        serde_json::from_str::<serde::de::IgnoredAny>(raw).is_ok()
                    );
                }
                proptest::prop_assert!(members.len() >= object.len());
            }
        }
    }

    #[test]
    fn recycle_keeps_the_allocation() {
        let mut v: Vec<(Cow<'static, str>, u64)> = Vec::with_capacity(32);
        v.push((Cow::Borrowed("x"), 1));
        let ptr = v.as_ptr() as usize;
        let text = String::from("y");
        let mut w: Vec<(Cow<'_, str>, u64)> = recycle(v);
        assert!(w.is_empty());
        assert!(w.capacity() >= 32);
        assert_eq!(w.as_ptr() as usize, ptr);
        w.push((Cow::Borrowed(text.as_str()), 2));
        assert_eq!(w.len(), 1);
    }
}
