//! ISO 4217 currencies and their minor-unit exponents.
//!
//! The exponent decides how a decimal amount becomes integer minor units (`"19.99"` EUR is
//! 1999, `"1999"` JPY is 1999, `"1.999"` KWD is 1999), so an unknown code must be refused rather
//! than guessed. Codes whose exponent ISO lists as "N.A." (precious metals, `XXX`, `XTS`, SDRs)
//! have no minor unit and are unknown here on purpose. A few codes withdrawn in recent years are
//! still accepted, because old events replayed from a topic may carry them.
//!
//! Lookup is a table indexed by the three letters, built at compile time: one bounds check and
//! one load on the hot path.

/// Codes with their exponent. Order does not matter; the table below is built from it.
#[rustfmt::skip]
const CODES: &[(&str, u8)] = &[
    // Exponent 0.
    ("BIF", 0), ("CLP", 0), ("DJF", 0), ("GNF", 0), ("ISK", 0), ("JPY", 0), ("KMF", 0),
    ("KRW", 0), ("PYG", 0), ("RWF", 0), ("UGX", 0), ("UYI", 0), ("VND", 0), ("VUV", 0),
    ("XAF", 0), ("XOF", 0), ("XPF", 0),
    // Exponent 3.
    ("BHD", 3), ("IQD", 3), ("JOD", 3), ("KWD", 3), ("LYD", 3), ("OMR", 3), ("TND", 3),
    // Exponent 4 (units of account).
    ("CLF", 4), ("UYW", 4),
    // Exponent 2.
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("ANG", 2), ("AOA", 2), ("ARS", 2),
    ("AUD", 2), ("AWG", 2), ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2),
    ("BMD", 2), ("BND", 2), ("BOB", 2), ("BOV", 2), ("BRL", 2), ("BSD", 2), ("BTN", 2),
    ("BWP", 2), ("BYN", 2), ("BZD", 2), ("CAD", 2), ("CDF", 2), ("CHE", 2), ("CHF", 2),
    ("CHW", 2), ("CNY", 2), ("COP", 2), ("COU", 2), ("CRC", 2), ("CUC", 2), ("CUP", 2),
    ("CVE", 2), ("CZK", 2), ("DKK", 2), ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2),
    ("ETB", 2), ("EUR", 2), ("FJD", 2), ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2),
    ("GIP", 2), ("GMD", 2), ("GTQ", 2), ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HRK", 2),
    ("HTG", 2), ("HUF", 2), ("IDR", 2), ("ILS", 2), ("INR", 2), ("IRR", 2), ("JMD", 2),
    ("KES", 2), ("KGS", 2), ("KHR", 2), ("KPW", 2), ("KYD", 2), ("KZT", 2), ("LAK", 2),
    ("LBP", 2), ("LKR", 2), ("LRD", 2), ("LSL", 2), ("MAD", 2), ("MDL", 2), ("MGA", 2),
    ("MKD", 2), ("MMK", 2), ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2),
    ("MWK", 2), ("MXN", 2), ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2),
    ("NIO", 2), ("NOK", 2), ("NPR", 2), ("NZD", 2), ("PAB", 2), ("PEN", 2), ("PGK", 2),
    ("PHP", 2), ("PKR", 2), ("PLN", 2), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2),
    ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2), ("SHP", 2),
    ("SLE", 2), ("SLL", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2), ("STN", 2), ("SVC", 2),
    ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2), ("TOP", 2), ("TRY", 2),
    ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("USD", 2), ("USN", 2), ("UYU", 2),
    ("UZS", 2), ("VED", 2), ("VES", 2), ("WST", 2), ("XCD", 2), ("XCG", 2), ("YER", 2),
    ("ZAR", 2), ("ZMW", 2), ("ZWG", 2), ("ZWL", 2),
];

const UNKNOWN: u8 = u8::MAX;
const SLOTS: usize = 26 * 26 * 26;

/// The slot of a three-letter upper-case code, if it is one.
const fn slot(code: &[u8]) -> Option<usize> {
    if code.len() != 3 {
        return None;
    }
    let mut idx = 0usize;
    let mut i = 0;
    while i < 3 {
        let c = code[i];
        if !c.is_ascii_uppercase() {
            return None;
        }
        idx = idx * 26 + (c - b'A') as usize;
        i += 1;
    }
    Some(idx)
}

const fn build_table() -> [u8; SLOTS] {
    let mut table = [UNKNOWN; SLOTS];
    let mut i = 0;
    while i < CODES.len() {
        let (code, exp) = CODES[i];
        match slot(code.as_bytes()) {
            Some(s) => table[s] = exp,
            None => panic!("malformed currency code in CODES"),
        }
        i += 1;
    }
    table
}

static TABLE: [u8; SLOTS] = build_table();

/// The ISO 4217 minor-unit exponent of `code` (`"EUR"` is 2, `"JPY"` 0, `"KWD"` 3), or `None`
/// for a code that is unknown, has no minor unit, or is not three upper-case letters.
pub fn currency_exponent(code: &str) -> Option<u8> {
    let exp = TABLE[slot(code.as_bytes())?];
    (exp != UNKNOWN).then_some(exp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn common_exponents() {
        assert_eq!(currency_exponent("EUR"), Some(2));
        assert_eq!(currency_exponent("USD"), Some(2));
        assert_eq!(currency_exponent("GBP"), Some(2));
        assert_eq!(currency_exponent("JPY"), Some(0));
        assert_eq!(currency_exponent("KRW"), Some(0));
        assert_eq!(currency_exponent("ISK"), Some(0));
        assert_eq!(currency_exponent("KWD"), Some(3));
        assert_eq!(currency_exponent("BHD"), Some(3));
        assert_eq!(currency_exponent("TND"), Some(3));
        assert_eq!(currency_exponent("CLF"), Some(4));
        assert_eq!(currency_exponent("UYW"), Some(4));
    }

    #[test]
    fn unknown_and_malformed_codes() {
        for code in [
            "XXX", "XAU", "XTS", "XDR", "ABC", "eur", "Eur", "EU", "EURO", "", "E1R",
        ] {
            assert_eq!(currency_exponent(code), None, "{code}");
        }
        // Non-ASCII must not index out of the table.
        assert_eq!(currency_exponent("ÉUR"), None);
    }

    #[test]
    fn list_has_no_duplicates_and_every_code_resolves() {
        let mut seen = std::collections::HashSet::new();
        for (code, exp) in CODES {
            assert!(seen.insert(*code), "duplicate {code}");
            assert_eq!(currency_exponent(code), Some(*exp));
        }
        assert!(CODES.len() > 150);
    }
}
