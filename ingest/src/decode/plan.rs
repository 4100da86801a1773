//! A table's decoding plan: its columns, their path trie, and the typed read of each column.
//!
//! Everything that can be worked out from the [`TableSpec`] is worked out once, at start-up:
//! the slot of every path, the money columns' currency lookups, and the JSONPath text every
//! error message will name (for both field prefixes, `$.` and `$.data.`), so the per-event
//! path allocates nothing unless the event is bad.

use std::borrow::Cow;

use arrow::datatypes::SchemaRef;
use paystream_core::dlq::ErrorKind;
use paystream_core::schema::{ColumnType, TableSpec, COMMON_COLUMNS, EXTRA_COLUMN};

use super::currency::currency_exponent;
use super::envelope::WireForm;
use super::money::{form_of, read_decimal, read_minor, AmountForm};
use super::paths::{Node, Slots, Target};
use super::time::read_timestamp;
use super::value::{read_bool, read_f64, read_i32, read_i64, read_str, shown, FieldError};

/// A typed value of one column of one event, borrowed from the payload where possible.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Null,
    Str(Cow<'a, str>),
    I32(i32),
    I64(i64),
    F64(f64),
    Bool(bool),
}

/// JSONPath texts of one path, per field prefix.
#[derive(Debug, Clone)]
struct Shown {
    plain: String,
    data: String,
}

impl Shown {
    fn new(path: &str) -> Self {
        Shown {
            plain: format!("$.{path}"),
            data: format!("$.data.{path}"),
        }
    }

    fn get(&self, form: WireForm) -> &str {
        match form {
            WireForm::Structured => &self.data,
            WireForm::Binary | WireForm::Plain => &self.plain,
        }
    }
}

/// One mapped column.
#[derive(Debug, Clone)]
pub(crate) struct ColumnPlan {
    pub kind: ColumnType,
    pub required: bool,
    /// The columns's paths in order, as written in messages.
    shown: Vec<Shown>,
    /// Whether each path holds integer minor units (money columns).
    minor: Vec<bool>,
    /// Money columns: the slot and path of the currency code.
    currency: Option<(usize, Shown)>,
}

/// How one table's events are decoded.
#[derive(Debug)]
pub(crate) struct TablePlan {
    pub name: String,
    pub schema: SchemaRef,
    pub columns: Vec<ColumnPlan>,
    pub root: Node,
    /// Columns first, then one currency lookup per money column.
    pub n_slots: usize,
}

/// Default path of a money column's currency when the spec names none.
const DEFAULT_CURRENCY_PATH: &str = "currency";

impl TablePlan {
    /// Plans `spec`, refusing specs whose Arrow schema would be ambiguous or whose paths are
    /// empty.
    pub fn try_new(spec: &TableSpec) -> Result<Self, String> {
        let mut seen: std::collections::HashSet<&str> = COMMON_COLUMNS.iter().copied().collect();
        seen.insert(EXTRA_COLUMN);
        let mut root = Node::default();
        let mut columns = Vec::with_capacity(spec.columns.len());
        let mut n_slots = spec.columns.len();
        for (slot, c) in spec.columns.iter().enumerate() {
            if !seen.insert(c.name.as_str()) {
                return Err(format!(
                    "table {}: column {} is declared twice or is a reserved column",
                    spec.name, c.name
                ));
            }
            let paths = c.paths();
            for (rank, path) in paths.iter().enumerate() {
                check_path(&spec.name, &c.name, path)?;
                root.insert(
                    path,
                    Target {
                        slot,
                        rank,
                        consumes: true,
                    },
                );
            }
            let currency = if c.kind == ColumnType::Money {
                let path = c.currency.as_deref().unwrap_or(DEFAULT_CURRENCY_PATH);
                check_path(&spec.name, &c.name, path)?;
                let cslot = n_slots;
                n_slots += 1;
                root.insert(
                    path,
                    Target {
                        slot: cslot,
                        rank: 0,
                        consumes: false,
                    },
                );
                Some((cslot, Shown::new(path)))
            } else {
                None
            };
            columns.push(ColumnPlan {
                kind: c.kind,
                required: c.required,
                shown: paths.iter().map(|p| Shown::new(p)).collect(),
                minor: paths
                    .iter()
                    .map(|p| form_of(p) == AmountForm::Minor)
                    .collect(),
                currency,
            });
        }
        Ok(TablePlan {
            name: spec.name.clone(),
            schema: spec.arrow_schema(),
            columns,
            root,
            n_slots,
        })
    }

    /// Reads every column of one event from its slots into `out`, or the first error in column
    /// order.
    pub fn read<'a>(
        &self,
        slots: &Slots<'a>,
        form: WireForm,
        out: &mut Vec<Val<'a>>,
    ) -> Result<(), FieldError> {
        out.clear();
        for (i, col) in self.columns.iter().enumerate() {
            let v = match slots[i] {
                None if col.required => return Err(col.missing(form)),
                None => Val::Null,
                Some((rank, raw)) => col.read(rank, raw, slots, form)?,
            };
            out.push(v);
        }
        Ok(())
    }
}

fn check_path(table: &str, column: &str, path: &str) -> Result<(), String> {
    if path.split('.').any(str::is_empty) {
        return Err(format!(
            "table {table}: column {column}: path {path:?} has an empty segment"
        ));
    }
    Ok(())
}

impl ColumnPlan {
    fn missing(&self, form: WireForm) -> FieldError {
        let mut message = String::new();
        if let Some((first, rest)) = self.shown.split_first() {
            message.push_str(first.get(form));
            message.push_str(": required field missing");
            if !rest.is_empty() {
                let others: Vec<&str> = rest.iter().map(|s| s.get(form)).collect();
                message.push_str(&format!(" (also looked for {})", others.join(", ")));
            }
        }
        FieldError::new(ErrorKind::MissingField, message)
    }

    fn read<'a>(
        &self,
        rank: usize,
        raw: &'a str,
        slots: &Slots<'a>,
        form: WireForm,
    ) -> Result<Val<'a>, FieldError> {
        let path = self.shown.get(rank).map_or("$", |s| s.get(form));
        Ok(match self.kind {
            ColumnType::String | ColumnType::Dict => Val::Str(read_str(path, raw)?),
            ColumnType::Int32 => Val::I32(read_i32(path, raw)?),
            ColumnType::Int64 => Val::I64(read_i64(path, raw)?),
            ColumnType::Float64 => Val::F64(read_f64(path, raw)?),
            ColumnType::Bool => Val::Bool(read_bool(path, raw)?),
            ColumnType::Timestamp => Val::I64(read_timestamp(path, raw)?),
            ColumnType::Currency => Val::Str(read_currency(path, raw)?.0),
            ColumnType::Money => {
                if self.minor.get(rank).copied().unwrap_or(false) {
                    Val::I64(read_minor(path, raw)?)
                } else {
                    let (cslot, cpath) = match &self.currency {
                        Some((slot, shown)) => (*slot, shown.get(form)),
                        None => return Err(FieldError::new(ErrorKind::MissingField, path)),
                    };
                    let Some((_, craw)) = slots.get(cslot).copied().flatten() else {
                        return Err(FieldError::new(
                            ErrorKind::MissingField,
                            format!("{cpath}: required field missing (the currency of {path})"),
                        ));
                    };
                    let (code, exp) = read_currency(cpath, craw)?;
                    Val::I64(read_decimal(path, raw, &code, exp)?)
                }
            }
        })
    }
}

/// A known ISO 4217 code and its exponent.
fn read_currency<'a>(path: &str, raw: &'a str) -> Result<(Cow<'a, str>, u8), FieldError> {
    let code = read_str(path, raw)?;
    match currency_exponent(&code) {
        Some(exp) => Ok((code, exp)),
        None => Err(FieldError::new(
            ErrorKind::UnknownCurrency,
            format!("{path}: unknown ISO 4217 code {}", shown(raw)),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::decode::object::{parse_object, Fields};
    use crate::decode::paths::{walk, NestedScratch};
    use paystream_core::schema::SchemaSpec;

    fn payments() -> TablePlan {
        let spec = SchemaSpec::preset().unwrap();
        TablePlan::try_new(&spec.tables["payments"]).unwrap()
    }

    fn read(plan: &TablePlan, body: &str, form: WireForm) -> Result<Vec<String>, FieldError> {
        let mut fields = Fields::new();
        parse_object(body, &mut fields, None).unwrap();
        let mut slots: Slots<'_> = vec![None; plan.n_slots];
        walk(
            &plan.root,
            &fields,
            |_| false,
            &mut slots,
            None,
            &mut NestedScratch::default(),
        );
        let mut out = Vec::new();
        plan.read(&slots, form, &mut out)?;
        Ok(out.iter().map(|v| format!("{v:?}")).collect())
    }

    const BASE: &str = r#""payment_id":"p1","merchant_id":"m1","currency":"EUR""#;

    #[test]
    fn reads_typed_columns() {
        let plan = payments();
        let body = format!(
            r#"{{{BASE},"amount":"19.99","card":{{"bin":"411111","network":"visa"}},"risk_score":0.25,"decision_latency_ms":12,"installments":3}}"#
        );
        let vals = read(&plan, &body, WireForm::Plain).unwrap();
        assert_eq!(vals[0], r#"Str("p1")"#);
        assert_eq!(vals[4], "I64(1999)");
        assert_eq!(vals[5], r#"Str("EUR")"#);
        assert_eq!(vals[7], r#"Str("411111")"#);
        assert_eq!(vals[11], "F64(0.25)");
        assert_eq!(vals[12], "I64(12)");
        assert_eq!(vals[13], "I32(3)");
        assert_eq!(vals[14], "Null");
    }

    #[test]
    fn currency_exponents_apply() {
        let plan = payments();
        for (currency, amount, minor) in [
            ("JPY", "\"1999\"", 1999),
            ("EUR", "19.99", 1999),
            ("KWD", "\"1.999\"", 1999),
            ("CLF", "\"0.1999\"", 1999),
        ] {
            let body = format!(
                r#"{{"payment_id":"p","merchant_id":"m","currency":"{currency}","amount":{amount}}}"#
            );
            let vals = read(&plan, &body, WireForm::Plain).unwrap();
            assert_eq!(vals[4], format!("I64({minor})"), "{currency}");
        }
    }

    #[test]
    fn errors_name_the_path_for_the_wire_form() {
        let plan = payments();
        let cases = [
            (
                r#"{"merchant_id":"m","currency":"EUR","amount_minor":1}"#,
                ErrorKind::MissingField,
                "$.data.payment_id: required field missing",
            ),
            (
                r#"{"payment_id":"p","merchant_id":"m","currency":"EUR"}"#,
                ErrorKind::MissingField,
                "$.data.amount_minor: required field missing (also looked for $.data.amount)",
            ),
            (
                r#"{"payment_id":"p","merchant_id":"m","amount":"1.00"}"#,
                ErrorKind::MissingField,
                "$.data.currency: required field missing (the currency of $.data.amount)",
            ),
            (
                r#"{"payment_id":"p","merchant_id":"m","currency":"XXX","amount":"1.00"}"#,
                ErrorKind::UnknownCurrency,
                r#"$.data.currency: unknown ISO 4217 code "XXX""#,
            ),
            (
                r#"{"payment_id":"p","merchant_id":"m","currency":"XXX","amount_minor":100}"#,
                ErrorKind::UnknownCurrency,
                r#"$.data.currency: unknown ISO 4217 code "XXX""#,
            ),
            (
                r#"{"payment_id":"p","merchant_id":"m","currency":"EUR","amount":"19.999"}"#,
                ErrorKind::InexactAmount,
                r#"$.data.amount: "19.999" has 3 decimal places but EUR allows 2"#,
            ),
            (
                r#"{"payment_id":"p","merchant_id":"m","currency":"EUR","amount_minor":-5}"#,
                ErrorKind::NegativeAmount,
                "$.data.amount_minor: -5 is negative",
            ),
            (
                r#"{"payment_id":"p","merchant_id":"m","currency":"EUR","amount_minor":5,"card":{"bin":411111}}"#,
                ErrorKind::WrongType,
                "$.data.card.bin: expected a string, found a number 411111",
            ),
            (
                r#"{"payment_id":"p","merchant_id":"m","currency":"EUR","amount_minor":5,"installments":1e2}"#,
                ErrorKind::WrongType,
                "$.data.installments: expected an integer, found a number 1e2",
            ),
            (
                r#"{"payment_id":"p","merchant_id":"m","currency":7,"amount_minor":5}"#,
                ErrorKind::WrongType,
                "$.data.currency: expected a string, found a number 7",
            ),
        ];
        for (body, kind, message) in cases {
            let e = read(&plan, body, WireForm::Structured).unwrap_err();
            assert_eq!((e.kind, e.message.as_str()), (kind, message), "{body}");
        }
    }

    #[test]
    fn refuses_ambiguous_specs() {
        let mut t = TableSpec {
            name: "t".into(),
            event_types: vec!["E".into()],
            columns: vec![paystream_core::schema::ColumnSpec {
                name: "event_id".into(),
                kind: ColumnType::String,
                fields: vec![],
                currency: None,
                required: false,
            }],
        };
        let e = TablePlan::try_new(&t).unwrap_err();
        assert_eq!(
            e,
            "table t: column event_id is declared twice or is a reserved column"
        );
        t.columns[0].name = "x".into();
        t.columns[0].fields = vec!["a..b".into()];
        let e = TablePlan::try_new(&t).unwrap_err();
        assert_eq!(e, r#"table t: column x: path "a..b" has an empty segment"#);
    }
}
