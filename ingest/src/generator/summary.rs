//! The ground truth of a generator run: what was confirmed written to Kafka, per table and per
//! kind of bad record. End-to-end checks (the Python lake checker among them) compare the lake
//! against this file, so its JSON shape is a contract:
//!
//! ```json
//! {"total": 3,
//!  "good": {"payments": {"count": 2, "amount_minor_by_currency": {"EUR": 3998},
//!                        "event_ids": ["…", "…"]}},
//!  "bad": {"invalid_json": 1}}
//! ```
//!
//! Tables and kinds with no record are absent.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Truth;
use crate::{Error, Result};

/// What a run put into Kafka.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Every recorded message, good and bad.
    pub total: u64,
    /// Good events by lake table (`payments`, `orders`, `refunds`).
    pub good: BTreeMap<String, TableSummary>,
    /// Bad records by `ErrorKind` name.
    pub bad: BTreeMap<String, u64>,
}

/// The good events of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSummary {
    pub count: u64,
    /// Sum of `amount_minor` per currency code.
    pub amount_minor_by_currency: BTreeMap<String, i64>,
    /// Ids of the events, in the order they were recorded.
    pub event_ids: Vec<String>,
}

impl Summary {
    /// Counts one message. Keys are looked up before they are inserted: a run records
    /// millions of messages into a handful of tables and currencies.
    pub fn record(&mut self, truth: Truth) {
        self.total += 1;
        match truth {
            Truth::Good {
                table,
                event_id,
                currency,
                amount_minor,
            } => {
                let Some(t) = slot(&mut self.good, table) else {
                    return;
                };
                t.count += 1;
                if let Some(sum) = slot(&mut t.amount_minor_by_currency, currency) {
                    // Saturating: a sum past 9.2e18 minor units is not a realistic run, and
                    // recording must not panic.
                    *sum = sum.saturating_add(amount_minor);
                }
                t.event_ids.push(event_id);
            }
            Truth::Bad { kind } => {
                if let Some(n) = slot(&mut self.bad, kind.as_str()) {
                    *n += 1;
                }
            }
        }
    }

    /// Good events in all tables.
    pub fn good_count(&self) -> u64 {
        self.good.values().map(|t| t.count).sum()
    }

    /// Bad records of all kinds.
    pub fn bad_count(&self) -> u64 {
        self.bad.values().sum()
    }

    /// The summary as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::Generator(format!("summary JSON: {e}")))
    }

    /// Writes the summary to `path`, atomically (a temporary file renamed into place), so a
    /// checker never reads half a file.
    pub fn to_json_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io =
            |e: std::io::Error| Error::Generator(format!("summary file {}: {e}", path.display()));
        let json = self.to_json()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a summary written by [`Summary::to_json_file`].
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Generator(format!("summary file {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Generator(format!("summary file {}: {e}", path.display())))
    }
}

/// The value of `key`, inserted as the default first if absent: the key is allocated only
/// then, where `entry` would allocate it for every message. Always `Some` (the borrow checker
/// cannot see that a `get_mut` after the insert finds it).
fn slot<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str) -> Option<&'a mut V> {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paystream_core::dlq::ErrorKind;

    fn sample() -> Summary {
        let mut s = Summary::default();
        for (id, cur, amount) in [("a", "EUR", 1999), ("b", "EUR", 1), ("c", "JPY", 1500)] {
            s.record(Truth::Good {
                table: "payments",
                event_id: id.into(),
                currency: cur,
                amount_minor: amount,
            });
        }
        s.record(Truth::Bad {
            kind: ErrorKind::InvalidJson,
        });
        s
    }

    #[test]
    fn json_shape_is_the_contract() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json().unwrap()).unwrap();
        assert_eq!(v["total"], 4);
        let p = &v["good"]["payments"];
        assert_eq!(p["count"], 3);
        assert_eq!(p["amount_minor_by_currency"]["EUR"], 2000);
        assert_eq!(p["amount_minor_by_currency"]["JPY"], 1500);
        assert_eq!(p["event_ids"], serde_json::json!(["a", "b", "c"]));
        assert_eq!(v["bad"]["invalid_json"], 1);
        assert!(v["good"].get("orders").is_none(), "empty tables are absent");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["bad", "good", "total"]);
    }

    #[test]
    fn file_round_trip() {
        let dir = std::env::temp_dir().join(format!("paystream-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("summary.json");
        let s = sample();
        s.to_json_file(&path).unwrap();
        assert_eq!(Summary::from_json_file(&path).unwrap(), s);
        assert_eq!(s.good_count() + s.bad_count(), s.total);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
