//! Which JSON member feeds which column: a per-table trie of the mapped paths.
//!
//! Built once per table from its [`TableSpec`](paystream_core::schema::TableSpec): each
//! column's paths (`amount_minor`, `card.bin`, …) become trie entries pointing at a slot. An
//! event's members are then walked once: a member found in the trie offers its value to its
//! slots (a column keeps the candidate of its earliest-listed path), a member with mapped
//! children is descended into, and every other member is written to `extra`. Nested objects
//! are parsed only when the trie says a path goes inside them.

use super::keys::KeyIndex;
use super::object::{parse_nested, recycle, Fields};

/// Where a path leads: a slot and the path's rank among the slot's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub slot: usize,
    /// Position in the slot's path list; lower wins.
    pub rank: usize,
    /// Whether the member counts as mapped (kept out of `extra`). A money column's currency
    /// lookup does not consume: if no column maps the currency, it still lands in `extra`.
    pub consumes: bool,
}

/// One level of the trie.
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub targets: Vec<Target>,
    pub children: KeyIndex<Node>,
}

impl Node {
    /// Adds a dotted path leading to `target`.
    pub fn insert(&mut self, path: &str, target: Target) {
        let mut node = self;
        for segment in path.split('.') {
            node = node.children.get_or_insert_with(segment, Node::default);
        }
        node.targets.push(target);
    }

    fn consumes(&self) -> bool {
        self.targets.iter().any(|t| t.consumes)
    }
}

/// The best candidate per slot: `(rank, value)`.
pub(crate) type Slots<'a> = Vec<Option<(usize, &'a str)>>;

/// Writes the unmapped members of one event as a JSON object.
#[derive(Debug, Default)]
pub(crate) struct ExtraWriter {
    buf: String,
    /// Whether the innermost open object has a member yet.
    has_member: bool,
}

impl ExtraWriter {
    pub fn start(&mut self) {
        self.buf.clear();
        self.buf.push('{');
        self.has_member = false;
    }

    fn key(&mut self, key: &str) {
        if self.has_member {
            self.buf.push(',');
        }
        self.has_member = true;
        if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.buf.push('"');
            self.buf.push_str(key);
            self.buf.push('"');
        } else {
            match serde_json::to_string(key) {
                Ok(quoted) => self.buf.push_str(&quoted),
                Err(_) => self.buf.push_str("\"\""),
            }
        }
        self.buf.push(':');
    }

    fn member(&mut self, key: &str, raw: &str) {
        self.key(key);
        self.buf.push_str(raw);
    }

    /// The finished object, or `None` if no member was written.
    pub fn finish(&mut self) -> Option<&str> {
        if self.buf.len() <= 1 {
            return None;
        }
        self.buf.push('}');
        Some(&self.buf)
    }
}

/// Scratch vectors for nested objects, reused across events.
#[derive(Default)]
pub(crate) struct NestedScratch {
    pool: Vec<Fields<'static>>,
}

/// Walks `fields` against `node`, filling `slots` and, if given, `extra`.
///
/// `skip` names members that are never event fields (a plain event's envelope): they are
/// offered to the trie but never written to `extra`.
pub(crate) fn walk<'a>(
    node: &Node,
    fields: &Fields<'a>,
    skip: fn(&str) -> bool,
    slots: &mut Slots<'a>,
    mut extra: Option<&mut ExtraWriter>,
    scratch: &mut NestedScratch,
) {
    for (key, raw) in fields.iter().map(|(k, v)| (k, *v)) {
        let Some(child) = node.children.get(key) else {
            if let Some(x) = extra.as_deref_mut() {
                if !skip(key) {
                    x.member(key, raw);
                }
            }
            continue;
        };
        if raw != "null" {
            for t in &child.targets {
                let slot = &mut slots[t.slot];
                if slot.is_none_or(|(rank, _)| t.rank < rank) {
                    *slot = Some((t.rank, raw));
                }
            }
        }
        if child.children.is_empty() {
            if !child.consumes() {
                if let Some(x) = extra.as_deref_mut() {
                    x.member(key, raw);
                }
            }
            continue;
        }
        let mut nested: Fields<'a> = recycle(scratch.pool.pop().unwrap_or_default());
        if parse_nested(raw, &mut nested) {
            match extra.as_deref_mut() {
                Some(x) if !child.consumes() => {
                    // Unmapped members inside keep their place under this key.
                    let mark = (x.buf.len(), x.has_member);
                    x.key(key);
                    x.buf.push('{');
                    x.has_member = false;
                    let before = x.buf.len();
                    walk(child, &nested, |_| false, slots, Some(x), scratch);
                    if x.buf.len() == before {
                        x.buf.truncate(mark.0);
                        x.has_member = mark.1;
                    } else {
                        x.buf.push('}');
                        x.has_member = true;
                    }
                }
                _ => walk(child, &nested, |_| false, slots, None, scratch),
            }
        } else if !child.consumes() {
            // Not an object where the mapping expected one: nothing inside is mapped.
            if let Some(x) = extra.as_deref_mut() {
                x.member(key, raw);
            }
        }
        scratch.pool.push(recycle(nested));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::decode::object::parse_object;

    fn trie() -> Node {
        let mut root = Node::default();
        root.insert(
            "amount_minor",
            Target {
                slot: 0,
                rank: 0,
                consumes: true,
            },
        );
        root.insert(
            "amount",
            Target {
                slot: 0,
                rank: 1,
                consumes: true,
            },
        );
        root.insert(
            "card.bin",
            Target {
                slot: 1,
                rank: 0,
                consumes: true,
            },
        );
        root.insert(
            "card.network",
            Target {
                slot: 2,
                rank: 0,
                consumes: true,
            },
        );
        root.insert(
            "currency",
            Target {
                slot: 3,
                rank: 0,
                consumes: false,
            },
        );
        root
    }

    fn run(text: &str) -> (Vec<Option<(usize, String)>>, Option<String>) {
        let root = trie();
        let mut fields = Fields::new();
        parse_object(text, &mut fields, None).unwrap();
        let mut slots: Slots<'_> = vec![None; 4];
        let mut x = ExtraWriter::default();
        x.start();
        let mut scratch = NestedScratch::default();
        walk(
            &root,
            &fields,
            |k| k == "event_id",
            &mut slots,
            Some(&mut x),
            &mut scratch,
        );
        let slots = slots
            .into_iter()
            .map(|s| s.map(|(r, v)| (r, v.to_owned())))
            .collect();
        (slots, x.finish().map(str::to_owned))
    }

    #[test]
    fn earliest_listed_path_wins_whatever_the_order() {
        let (slots, extra) = run(r#"{"amount":"19.99","amount_minor":1999,"event_id":"e"}"#);
        assert_eq!(slots[0], Some((0, "1999".to_owned())));
        assert_eq!(extra, None);
        let (slots, _) = run(r#"{"amount":"19.99","amount_minor":null}"#);
        assert_eq!(slots[0], Some((1, "\"19.99\"".to_owned())));
    }

    #[test]
    fn nested_paths_and_extra() {
        let (slots, extra) = run(
            r#"{"card":{"bin":"411111","exp":"12/29","network":"visa"},"note":{"a":[1, 2]},"currency":"EUR","k\"q":1}"#,
        );
        assert_eq!(slots[1], Some((0, "\"411111\"".to_owned())));
        assert_eq!(slots[2], Some((0, "\"visa\"".to_owned())));
        assert_eq!(slots[3], Some((0, "\"EUR\"".to_owned())));
        let extra = extra.unwrap();
        assert_eq!(
            extra,
            r#"{"card":{"exp":"12/29"},"note":{"a":[1, 2]},"currency":"EUR","k\"q":1}"#
        );
        serde_json::from_str::<serde_json::Value>(&extra).unwrap();
    }

    #[test]
    fn fully_mapped_nested_object_leaves_no_trace_in_extra() {
        let (_, extra) = run(r#"{"card":{"bin":"4","network":"v"},"x":1}"#);
        assert_eq!(extra.as_deref(), Some(r#"{"x":1}"#));
        // A non-object where an object was expected goes to extra as it is.
        let (slots, extra) = run(r#"{"card":"visa"}"#);
        assert_eq!(slots[1], None);
        assert_eq!(extra.as_deref(), Some(r#"{"card":"visa"}"#));
    }
}
