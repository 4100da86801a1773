//! Window results as Prometheus gauges: one family per numeric result column,
//! `paystream_window_<transform>_<column>`, labelled by the other result columns and by
//! `window` ("current": the newest open window, "last": the last closed window's final
//! values). At most `max_series` series per family; the rest are counted, not shown.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use paystream_transforms::window::{WINDOW_END, WINDOW_START};

/// The rows to show for one transform.
pub(super) struct Shown<'a> {
    pub id: &'a str,
    pub max_series: usize,
    /// Result columns that are group keys: labels even when numeric.
    pub keys: &'a [String],
    /// (value of the `window` label, result rows).
    pub windows: Vec<(&'static str, &'a [RecordBatch])>,
}

/// A numeric column that is not a group key holds values; everything else labels them.
fn is_value(name: &str, t: &DataType, keys: &[String]) -> bool {
    t.is_numeric() && !keys.iter().any(|k| k == name)
}

/// The label name of result column `name`: `window` is ours, so a column of that name is
/// `window_key`.
fn label_name(name: &str) -> String {
    match metric_part(name) {
        w if w == "window" => "window_key".to_string(),
        other => other,
    }
}

/// A sample value as OpenMetrics spells it.
fn sample(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        v.to_string()
    }
}

/// A name made of `[a-zA-Z0-9_]`.
fn metric_part(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// OpenMetrics text of `shown`, and the number of series left out per transform.
pub(super) fn render(shown: &[Shown<'_>]) -> (String, Vec<(String, usize)>) {
    let mut out = String::new();
    let mut dropped = Vec::new();
    for t in shown {
        let mut left_out = 0;
        let Some(schema) = t
            .windows
            .iter()
            .flat_map(|(_, b)| b.iter())
            .next()
            .map(|b| b.schema())
        else {
            dropped.push((t.id.to_string(), 0));
            continue;
        };
        let labels: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| {
                let f = schema.field(i);
                f.name() != WINDOW_START
                    && f.name() != WINDOW_END
                    && !is_value(f.name(), f.data_type(), t.keys)
            })
            .collect();
        for (col, field) in schema.fields().iter().enumerate() {
            if !is_value(field.name(), field.data_type(), t.keys) {
                continue;
            }
            let name = format!(
                "paystream_window_{}_{}",
                metric_part(t.id),
                metric_part(field.name())
            );
            let _ = writeln!(
                out,
                "# HELP {name} {} of window transform {}, per window (current: newest open, last: last closed)",
                field.name(),
                t.id
            );
            let _ = writeln!(out, "# TYPE {name} gauge");
            let mut seen = BTreeSet::new();
            let mut over = 0;
            for (window, batches) in &t.windows {
                for b in batches.iter() {
                    let Ok(values) = cast(b.column(col), &DataType::Float64) else {
                        continue;
                    };
                    let values = values.as_primitive::<Float64Type>();
                    let label_cols: Vec<&ArrayRef> = labels.iter().map(|&i| b.column(i)).collect();
                    let formatters: Vec<Option<ArrayFormatter<'_>>> = label_cols
                        .iter()
                        .map(|c| {
                            ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).ok()
                        })
                        .collect();
                    for row in 0..b.num_rows() {
                        if values.is_null(row) {
                            continue;
                        }
                        let mut set = String::new();
                        for ((&i, c), f) in labels.iter().zip(&label_cols).zip(&formatters) {
                            let v = match f {
                                Some(f) if c.is_valid(row) => f.value(row).to_string(),
                                _ => String::new(),
                            };
                            let _ = write!(
                                set,
                                "{}=\"{}\",",
                                label_name(schema.field(i).name()),
                                escape(&v)
                            );
                        }
                        let _ = write!(set, "window=\"{window}\"");
                        if !seen.contains(&set) && seen.len() >= t.max_series {
                            over += 1;
                            continue;
                        }
                        if seen.insert(set.clone()) {
                            let _ = writeln!(out, "{name}{{{set}}} {}", sample(values.value(row)));
                        }
                    }
                }
            }
            left_out = left_out.max(over);
        }
        dropped.push((t.id.to_string(), left_out));
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    fn rows(currencies: &[Option<&str>], n: &[i64]) -> RecordBatch {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new(WINDOW_START, ts.clone(), false),
            Field::new(WINDOW_END, ts, false),
            Field::new("currency", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let len = n.len();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMicrosecondArray::from(vec![0; len]).with_timezone("UTC")),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![60_000_000; len]).with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(currencies.to_vec())),
                Arc::new(Int64Array::from(n.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn gauges_carry_group_keys_as_labels_and_respect_the_series_cap() {
        let current = [rows(&[Some("EUR"), Some("a\"b")], &[3, 4])];
        let last = [rows(&[Some("EUR"), None], &[7, 8])];
        let (text, dropped) = render(&[Shown {
            id: "per-minute",
            max_series: 3,
            keys: &[],
            windows: vec![("current", &current), ("last", &last)],
        }]);
        assert!(
            text.contains("# TYPE paystream_window_per_minute_n gauge"),
            "{text}"
        );
        assert!(
            text.contains("paystream_window_per_minute_n{currency=\"EUR\",window=\"current\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "paystream_window_per_minute_n{currency=\"a\\\"b\",window=\"current\"} 4"
            ),
            "{text}"
        );
        assert!(
            text.contains("paystream_window_per_minute_n{currency=\"EUR\",window=\"last\"} 7"),
            "{text}"
        );
        // The fourth series is over the cap of three.
        assert!(!text.contains("window=\"last\"} 8"), "{text}");
        assert_eq!(dropped, vec![("per-minute".to_string(), 1)]);
        // Window bounds are not values.
        assert!(!text.contains("window_start"), "{text}");
    }
}

#[cfg(test)]
mod key_tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn numeric_group_keys_are_labels_and_infinities_are_spelled_out() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("merchant_id", DataType::Int64, false),
            Field::new("window", DataType::Int64, false),
            Field::new("ratio", DataType::Float64, false),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![7, 8])),
                Arc::new(Int64Array::from(vec![1, 1])),
                Arc::new(Float64Array::from(vec![f64::INFINITY, 0.5])),
            ],
        )
        .unwrap();
        let keys = ["merchant_id".to_string(), "window".to_string()];
        let (text, _) = render(&[Shown {
            id: "w",
            max_series: 10,
            keys: &keys,
            windows: vec![("last", std::slice::from_ref(&b))],
        }]);
        assert!(
            text.contains(
                "paystream_window_w_ratio{merchant_id=\"7\",window_key=\"1\",window=\"last\"} +Inf"
            ),
            "{text}"
        );
        assert!(text.contains("merchant_id=\"8\""), "{text}");
        assert!(!text.contains("paystream_window_w_merchant_id"), "{text}");
    }
}
