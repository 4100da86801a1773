//! The statistical model of the synthetic traffic: currencies with their ISO 4217 exponents and
//! typical amounts, a Zipf-skewed merchant population, and the weighted vocabularies (channels,
//! payment methods, card networks, reasons) that make the lake look like a real platform's.
//!
//! Sampling uses floating point only to *choose* values; every amount leaves this module as an
//! integer of minor units, and its decimal text is derived from that integer, so it is exact.

use rand::Rng;

/// One currency the generator uses.
#[derive(Debug)]
pub(crate) struct Currency {
    pub code: &'static str,
    /// ISO 4217 minor-unit exponent.
    pub exponent: u32,
    weight: u32,
    /// Median order total in major units.
    median_major: f64,
    pub countries: &'static [&'static str],
}

/// The currency mix: EUR, USD and GBP common; JPY (exponent 0) and KWD/BHD (exponent 3) present
/// so that exponent handling is exercised.
pub(crate) const CURRENCIES: &[Currency] = &[
    Currency {
        code: "EUR",
        exponent: 2,
        weight: 30,
        median_major: 42.0,
        countries: &["DE", "FR", "NL", "ES", "IT", "BE", "AT", "IE", "FI", "PT"],
    },
    Currency {
        code: "USD",
        exponent: 2,
        weight: 26,
        median_major: 55.0,
        countries: &["US"],
    },
    Currency {
        code: "GBP",
        exponent: 2,
        weight: 15,
        median_major: 38.0,
        countries: &["GB"],
    },
    Currency {
        code: "BRL",
        exponent: 2,
        weight: 6,
        median_major: 160.0,
        countries: &["BR"],
    },
    Currency {
        code: "SEK",
        exponent: 2,
        weight: 5,
        median_major: 420.0,
        countries: &["SE"],
    },
    Currency {
        code: "CHF",
        exponent: 2,
        weight: 5,
        median_major: 65.0,
        countries: &["CH", "LI"],
    },
    Currency {
        code: "JPY",
        exponent: 0,
        weight: 7,
        median_major: 5200.0,
        countries: &["JP"],
    },
    Currency {
        code: "KWD",
        exponent: 3,
        weight: 3,
        median_major: 14.0,
        countries: &["KW"],
    },
    Currency {
        code: "BHD",
        exponent: 3,
        weight: 3,
        median_major: 17.0,
        countries: &["BH"],
    },
];

/// All countries, for cross-border orders.
const ALL_COUNTRIES: &[&str] = &[
    "DE", "FR", "NL", "ES", "IT", "BE", "AT", "IE", "FI", "PT", "US", "GB", "BR", "SE", "CH", "JP",
    "KW", "BH", "CA", "AU", "MX", "PL", "NO", "DK", "IN", "SG",
];

pub(crate) const CHANNELS: &[(&str, u32)] = &[("web", 50), ("mobile", 38), ("pos", 12)];

/// Payment methods; the first three carry a card.
pub(crate) const METHODS: &[(&str, u32)] = &[
    ("card", 50),
    ("apple_pay", 14),
    ("google_pay", 10),
    ("paypal", 12),
    ("bank_transfer", 8),
    ("klarna", 6),
];

pub(crate) const NETWORKS: &[(&str, u32)] = &[
    ("visa", 55),
    ("mastercard", 35),
    ("amex", 7),
    ("discover", 3),
];

pub(crate) const REJECTION_REASONS: &[(&str, u32)] = &[
    ("insufficient_funds", 34),
    ("do_not_honor", 24),
    ("invalid_card", 12),
    ("fraud_suspected", 12),
    ("credit_limit_exceeded", 11),
    ("network_error", 7),
];

pub(crate) const FAILURE_REASONS: &[(&str, u32)] = &[
    ("processor_timeout", 40),
    ("issuer_unavailable", 25),
    ("system_error", 20),
    ("authorization_expired", 15),
];

pub(crate) const REFUND_REASONS: &[(&str, u32)] = &[
    ("requested_by_customer", 55),
    ("product_not_received", 15),
    ("product_defective", 15),
    ("duplicate", 10),
    ("fraudulent", 5),
];

const MERCHANTS: usize = 2_000;
/// Zipf exponent: the top merchant takes about a tenth of the traffic, as on real platforms.
const MERCHANT_SKEW: f64 = 1.07;
const CUSTOMERS: u32 = 250_000;

/// Picks from a weighted table.
pub(crate) fn pick<R: Rng, T: Copy>(rng: &mut R, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total.max(1));
    for (v, w) in table {
        if x < *w {
            return *v;
        }
        x -= w;
    }
    table[table.len() - 1].0
}

/// A standard normal draw (Box-Muller; one of the pair is enough here).
pub(crate) fn normal<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1], so ln is finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal draw with the given median and log-space spread.
pub(crate) fn log_normal<R: Rng>(rng: &mut R, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// The fixed population the traffic is drawn from, built once from the seed.
pub(crate) struct Model {
    merchant_cdf: Vec<f64>,
    /// Home currency of each merchant (index into [`CURRENCIES`]).
    merchant_currency: Vec<u8>,
    currency_weights: Vec<(usize, u32)>,
}

impl Model {
    pub(crate) fn new<R: Rng>(rng: &mut R) -> Self {
        let mut cdf = Vec::with_capacity(MERCHANTS);
        let mut acc = 0.0;
        for k in 1..=MERCHANTS {
            acc += 1.0 / (k as f64).powf(MERCHANT_SKEW);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        let currency_weights: Vec<(usize, u32)> = CURRENCIES
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.weight))
            .collect();
        let merchant_currency = (0..MERCHANTS)
            .map(|_| pick(rng, &currency_weights) as u8)
            .collect();
        Model {
            merchant_cdf: cdf,
            merchant_currency,
            currency_weights,
        }
    }

    /// A merchant index, Zipf-skewed (0 is the busiest).
    pub(crate) fn merchant<R: Rng>(&self, rng: &mut R) -> u32 {
        let u: f64 = rng.random();
        let i = self.merchant_cdf.partition_point(|&c| c < u);
        i.min(MERCHANTS - 1) as u32
    }

    /// The currency of an order at `merchant`: mostly the merchant's own, sometimes another
    /// (marketplaces and multi-currency checkouts).
    pub(crate) fn currency<R: Rng>(&self, rng: &mut R, merchant: u32) -> usize {
        if rng.random_bool(0.75) {
            usize::from(self.merchant_currency[merchant as usize % MERCHANTS])
        } else {
            pick(rng, &self.currency_weights)
        }
    }

    /// A customer index (uniform over a large population).
    pub(crate) fn customer<R: Rng>(&self, rng: &mut R) -> u32 {
        rng.random_range(0..CUSTOMERS)
    }
}

/// The country of a buyer paying in `currency`; a few are cross-border.
pub(crate) fn country<R: Rng>(rng: &mut R, currency: usize) -> &'static str {
    if rng.random_bool(0.05) {
        ALL_COUNTRIES[rng.random_range(0..ALL_COUNTRIES.len())]
    } else {
        let list = CURRENCIES[currency].countries;
        list[rng.random_range(0..list.len())]
    }
}

/// A realistic order total in minor units of `currency`: log-normal around the currency's
/// median, with the price endings shops use.
pub(crate) fn order_amount<R: Rng>(rng: &mut R, currency: usize) -> i64 {
    let c = &CURRENCIES[currency];
    let scale = 10f64.powi(c.exponent as i32);
    let major = log_normal(rng, c.median_major, 0.9).clamp(0.0, c.median_major * 2_000.0);
    let mut minor = (major * scale).round() as i64;
    match c.exponent {
        2 if rng.random_bool(0.35) => minor = (minor / 100) * 100 + 99,
        0 if rng.random_bool(0.6) => minor = (minor / 10) * 10,
        _ => {}
    }
    minor.max(1)
}

/// Merchant id text for an index.
pub(crate) fn merchant_id(index: u32) -> String {
    format!("mer_{index:05}")
}

/// Customer id text for an index: scrambled so that ids do not look sequential.
pub(crate) fn customer_id(index: u32) -> String {
    format!("cus_{:08x}", index.wrapping_mul(0x9E37_79B1))
}

/// `minor` as a decimal with exactly `exponent` fraction digits ("19.90", "1500", "1.005").
pub(crate) fn decimal(minor: i64, exponent: u32) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10u64.pow(exponent);
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = exponent as usize
    )
}

/// As [`decimal`] but without trailing fraction zeros, as a JSON number is often written
/// ("19.9", "20").
pub(crate) fn decimal_trimmed(minor: i64, exponent: u32) -> String {
    let s = decimal(minor, exponent);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn decimals_are_exact_at_the_exponent() {
        assert_eq!(decimal(1999, 2), "19.99");
        assert_eq!(decimal(5, 2), "0.05");
        assert_eq!(decimal(1500, 0), "1500");
        assert_eq!(decimal(12345, 3), "12.345");
        assert_eq!(decimal(-1999, 2), "-19.99");
        assert_eq!(decimal_trimmed(1990, 2), "19.9");
        assert_eq!(decimal_trimmed(2000, 2), "20");
        assert_eq!(decimal_trimmed(1500, 0), "1500");
    }

    #[test]
    fn merchants_are_skewed() {
        let mut rng = StdRng::seed_from_u64(3);
        let model = Model::new(&mut rng);
        let mut counts = vec![0u32; MERCHANTS];
        for _ in 0..100_000 {
            counts[model.merchant(&mut rng) as usize] += 1;
        }
        // The head is heavy, the tail still present.
        assert!(counts[0] > 5_000, "top merchant {}", counts[0]);
        assert!(counts[0] > 10 * counts[100]);
        assert!(counts.iter().filter(|&&c| c > 0).count() > 1_500);
    }

    #[test]
    fn amounts_are_plausible_per_currency() {
        let mut rng = StdRng::seed_from_u64(5);
        for (i, c) in CURRENCIES.iter().enumerate() {
            let mut v: Vec<i64> = (0..5_000).map(|_| order_amount(&mut rng, i)).collect();
            v.sort_unstable();
            let median = v[v.len() / 2] as f64 / 10f64.powi(c.exponent as i32);
            assert!(
                median > c.median_major / 2.0 && median < c.median_major * 2.0,
                "{} median {median}",
                c.code
            );
            assert!(v[0] >= 1);
        }
    }

    #[test]
    fn pick_follows_weights() {
        let mut rng = StdRng::seed_from_u64(9);
        let n = 50_000;
        let fraud = (0..n)
            .filter(|_| pick(&mut rng, REJECTION_REASONS) == "insufficient_funds")
            .count();
        let share = fraud as f64 / n as f64;
        assert!((share - 0.34).abs() < 0.02, "{share}");
    }
}
