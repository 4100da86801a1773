//! A small fixed map from configured names to values, for lookups on the per-field hot path.
//!
//! Every member of every event is looked up here (is it mapped?), so the lookup must cost less
//! than hashing the key. The index buckets a key by its length and three of its bytes, which
//! tells apart the few dozen names a mapping declares in one step, and then compares the key
//! once. The map is filled from configuration at start-up and only looked up with input, so a
//! crafted key cannot lengthen a chain: chains hold configured names only.

/// Number of buckets; a power of two.
const BUCKETS: usize = 256;
const NONE: u32 = u32::MAX;

fn bucket(key: &[u8]) -> usize {
    let (first, last) = match key {
        [] => (0, 0),
        [only] => (*only, *only),
        [first, .., last] => (*first, *last),
    };
    let mid = key.get(key.len() / 2).copied().unwrap_or(0);
    let h = (key.len() as u32).wrapping_mul(0x9e37_79b9)
        ^ u32::from(first).wrapping_mul(0x85eb_ca6b)
        ^ u32::from(last).wrapping_mul(0xc2b2_ae35)
        ^ u32::from(mid).wrapping_mul(0x27d4_eb2f);
    (h ^ (h >> 15)) as usize & (BUCKETS - 1)
}

#[derive(Debug)]
struct Entry<V> {
    key: Box<str>,
    value: V,
    /// Next entry of the same bucket.
    next: u32,
}

/// Names to values; see the module docs.
#[derive(Debug)]
pub(crate) struct KeyIndex<V> {
    entries: Vec<Entry<V>>,
    heads: Vec<u32>,
}

impl<V> Default for KeyIndex<V> {
    fn default() -> Self {
        KeyIndex {
            entries: Vec::new(),
            heads: vec![NONE; BUCKETS],
        }
    }
}

impl<V> KeyIndex<V> {
    fn find(&self, key: &str) -> Option<usize> {
        let mut i = *self.heads.get(bucket(key.as_bytes()))?;
        while i != NONE {
            let entry = self.entries.get(i as usize)?;
            if &*entry.key == key {
                return Some(i as usize);
            }
            i = entry.next;
        }
        None
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&V> {
        self.find(key).map(|i| &self.entries[i].value)
    }

    /// The value of `key`, inserting `make()` first if absent.
    pub fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(key) {
            Some(i) => i,
            None => {
                let b = bucket(key.as_bytes());
                let i = self.entries.len();
                self.entries.push(Entry {
                    key: key.into(),
                    value: make(),
                    next: self.heads[b],
                });
                // More than four billion configured names cannot be declared in a config file.
                self.heads[b] = u32::try_from(i).unwrap_or(NONE);
                i
            }
        };
        &mut self.entries[i].value
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut m = KeyIndex::default();
        assert!(m.is_empty());
        let names: Vec<String> = (0..2000).map(|i| format!("field_{i}")).collect();
        for (i, n) in names.iter().enumerate() {
            *m.get_or_insert_with(n, || 0) += i;
        }
        *m.get_or_insert_with("", || 7) += 1;
        for (i, n) in names.iter().enumerate() {
            assert_eq!(m.get(n), Some(&i));
        }
        assert_eq!(m.get(""), Some(&8));
        assert_eq!(m.get("field_"), None);
        assert_eq!(m.get("field_20000"), None);
        assert_eq!(m.get("é"), None);
        assert!(!m.is_empty());
    }

    #[test]
    fn preset_names_mostly_get_their_own_bucket() {
        let names = [
            "payment_id",
            "order_id",
            "merchant_id",
            "customer_id",
            "amount_minor",
            "amount",
            "currency",
            "payment_method",
            "card",
            "bin",
            "last4",
            "network",
            "country",
            "risk_score",
            "decision_latency_ms",
            "installments",
            "rejection_reason",
            "failure_reason",
        ];
        let buckets: std::collections::HashSet<usize> =
            names.iter().map(|n| bucket(n.as_bytes())).collect();
        assert!(buckets.len() >= names.len() - 2, "{}", buckets.len());
    }
}
