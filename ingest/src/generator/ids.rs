//! Identifiers drawn from the generator's seeded RNG (event ids, order/payment/refund ids, W3C
//! trace context), and the card-number guard.
//!
//! The pipeline masks anything that looks like a card number: a run of 13 to 19 digits, which
//! may continue over a single space or hyphen between digit groups (`4111-1111-…`), passing the
//! Luhn check. Random hex ids, hyphenated UUIDs and `traceparent` values can form such runs by
//! accident, and a masked event id would break the lake's truth. So every id here is written
//! through [`IdText`], which keeps any such run at 12 digits at most, and [`contains_pan`] lets
//! the generator (for timestamps) and the tests check whole payloads.

use rand::{Rng, RngCore};

const HEX: &[u8; 16] = b"0123456789abcdef";
/// Longest digit run an id may contain: one short of the shortest card number.
const MAX_DIGIT_RUN: usize = 12;

/// An id being written, with the length of the digit run (over single separators) at its end.
/// Bytes, not `char`s: every id is ASCII, and the generator writes a hundred id characters per
/// message.
struct IdText {
    s: Vec<u8>,
    run: usize,
    bits: u64,
    left: u32,
}

impl IdText {
    fn new(capacity: usize) -> Self {
        IdText {
            s: Vec::with_capacity(capacity),
            run: 0,
            bits: 0,
            left: 0,
        }
    }

    /// `n` random hex characters; a digit that would make the run longer than `cap` is folded
    /// onto a letter, which keeps the id random and breaks the run.
    fn hex<R: RngCore>(&mut self, rng: &mut R, n: usize, cap: usize) {
        for _ in 0..n {
            if self.left == 0 {
                self.bits = rng.next_u64();
                self.left = 16;
            }
            let mut nibble = (self.bits & 0xf) as usize;
            self.bits >>= 4;
            self.left -= 1;
            if nibble < 10 {
                if self.run >= cap {
                    nibble = 10 + nibble % 6;
                    self.run = 0;
                } else {
                    self.run += 1;
                }
            } else {
                self.run = 0;
            }
            self.s.push(HEX[nibble]);
        }
    }

    /// A fixed character: digits extend the run, a single `-` or space may join two groups,
    /// anything else ends it.
    fn fixed(&mut self, c: u8) {
        match c {
            b'0'..=b'9' => self.run += 1,
            b'-' | b' ' => {}
            _ => self.run = 0,
        }
        self.s.push(c);
    }

    fn text(&mut self, t: &str) {
        t.bytes().for_each(|c| self.fixed(c));
    }

    fn into_string(self) -> String {
        // Only ASCII is ever pushed, so the lossy path is never taken.
        String::from_utf8(self.s)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// `prefix` followed by `n` hex characters, e.g. `ord_3f9a…`.
pub(crate) fn prefixed<R: RngCore>(rng: &mut R, prefix: &str, n: usize) -> String {
    let mut id = IdText::new(prefix.len() + n);
    id.text(prefix);
    id.hex(rng, n, MAX_DIGIT_RUN);
    id.into_string()
}

/// A UUID version 4 in its canonical hyphenated form, from the seeded RNG.
pub(crate) fn uuid<R: RngCore>(rng: &mut R) -> String {
    let mut id = IdText::new(36);
    id.hex(rng, 8, MAX_DIGIT_RUN);
    id.fixed(b'-');
    id.hex(rng, 3, MAX_DIGIT_RUN);
    // The version digit follows: leave room for it.
    id.hex(rng, 1, MAX_DIGIT_RUN - 1);
    id.text("-4");
    id.hex(rng, 3, MAX_DIGIT_RUN);
    id.fixed(b'-');
    let variant = if id.run >= MAX_DIGIT_RUN {
        [b'a', b'b'][rng.random_range(0..2)]
    } else {
        [b'8', b'9', b'a', b'b'][rng.random_range(0..4)]
    };
    id.fixed(variant);
    id.hex(rng, 3, MAX_DIGIT_RUN);
    id.fixed(b'-');
    id.hex(rng, 12, MAX_DIGIT_RUN);
    id.into_string()
}

/// A W3C trace id: 32 hex characters, never all zero (digit runs are capped).
pub(crate) fn trace_id<R: RngCore>(rng: &mut R) -> String {
    let mut id = IdText::new(32);
    // In a traceparent the id follows "00-": count those two digits.
    id.run = 2;
    id.hex(rng, 32, MAX_DIGIT_RUN);
    id.into_string()
}

/// A W3C `traceparent` value for a new span of `trace_id`, sampled.
pub(crate) fn traceparent<R: RngCore>(rng: &mut R, trace_id: &str) -> String {
    let mut id = IdText::new(55);
    id.text("00-");
    id.text(trace_id);
    id.fixed(b'-');
    id.hex(rng, 15, MAX_DIGIT_RUN);
    // "-01" follows: leave room for its two digits.
    id.hex(rng, 1, MAX_DIGIT_RUN - 2);
    id.text("-01");
    id.into_string()
}

/// `n` random decimal digits (for card BINs and last-four; far below a card number's length).
pub(crate) fn digits<R: RngCore>(rng: &mut R, n: usize, out: &mut String) {
    for _ in 0..n {
        out.push((b'0' + rng.random_range(0..10u8)) as char);
    }
}

/// Whether the digits pass the Luhn check.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Whether `bytes` contain something a card-number scanner would take for one: a run of digits
/// (continuing over single spaces or hyphens between digits) in which any 13 to 19 consecutive
/// digits pass the Luhn check. Stricter than the pipeline's masking, on purpose.
pub(crate) fn contains_pan(bytes: &[u8]) -> bool {
    let mut run: Vec<u8> = Vec::new();
    let check = |run: &[u8]| {
        run.len() >= 13 && (13..=run.len().min(19)).any(|len| run.windows(len).any(luhn_valid))
    };
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() {
            run.push(b);
            continue;
        }
        let joins = matches!(b, b' ' | b'-')
            && i > 0
            && bytes[i - 1].is_ascii_digit()
            && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
        if !joins {
            if check(&run) {
                return true;
            }
            run.clear();
        }
    }
    check(&run)
}

/// The longest digit run of `s`, over single separators (for tests of the id shapes).
#[cfg(test)]
pub(crate) fn longest_run(s: &str) -> usize {
    let mut id = IdText::new(0);
    let mut longest = 0;
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let sep_ok = i > 0 && b[i - 1].is_ascii_digit();
        if matches!(c, b'-' | b' ') && !sep_ok {
            id.run = 0;
        }
        id.fixed(c);
        longest = longest.max(id.run);
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn luhn_recognises_test_card_numbers() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(contains_pan(b"{\"pan\":\"4111111111111111\"}"));
        assert!(
            contains_pan(b"x54111111111111111y"),
            "window inside a longer run"
        );
        assert!(contains_pan(b"card 4111-1111-1111-1111."), "grouped");
        assert!(contains_pan(b"4111 1111 1111 1111"), "grouped, at the end");
        assert!(
            !contains_pan(b"4111--1111-1111-1111"),
            "a double separator ends a run"
        );
        assert!(
            !contains_pan(b"411111111111"),
            "12 digits are never a card number"
        );
    }

    #[test]
    fn ids_have_short_digit_runs_and_the_right_shape() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50_000 {
            let t = trace_id(&mut rng);
            assert_eq!(t.len(), 32);
            let tp = traceparent(&mut rng, &t);
            assert_eq!(tp.len(), 55);
            assert!(tp.starts_with("00-") && tp.ends_with("-01"));
            assert!(longest_run(&tp) <= MAX_DIGIT_RUN, "{tp}");
            let u = uuid(&mut rng);
            assert_eq!(u.len(), 36);
            assert_eq!(&u[14..15], "4");
            assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
            assert!(longest_run(&u) <= MAX_DIGIT_RUN, "{u}");
            let p = prefixed(&mut rng, "pay_", 20);
            assert!(longest_run(&p) <= MAX_DIGIT_RUN, "{p}");
        }
    }

    #[test]
    fn run_counting_follows_the_scanner() {
        assert_eq!(longest_run("12-34"), 4);
        assert_eq!(longest_run("12--34"), 2);
        assert_eq!(longest_run("a1 2b3"), 2);
        assert_eq!(longest_run("-12"), 2);
    }
}
