//! Rendering query results for people (an aligned table) and for tools (CSV, JSON lines).

use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::Result;

/// Output formats of `paystream query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    /// One JSON object per row, per line.
    Json,
}

/// Render `batches` in `format`.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => Ok(pretty_format_batches(batches)?.to_string()),
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut w = WriterBuilder::new().with_header(true).build(&mut out);
                for b in batches {
                    w.write(b)?;
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut w = LineDelimitedWriter::new(&mut out);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("currency", DataType::Utf8, false),
            Field::new("total", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["EUR", "JPY"])),
                Arc::new(Int64Array::from(vec![1999, 500])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn csv_has_header_and_rows() {
        let s = render(&[batch()], Format::Csv).unwrap();
        assert_eq!(s, "currency,total\nEUR,1999\nJPY,500\n");
    }

    #[test]
    fn json_is_one_object_per_line() {
        let s = render(&[batch()], Format::Json).unwrap();
        let lines: Vec<_> = s.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"currency":"EUR","total":1999}"#,
                r#"{"currency":"JPY","total":500}"#
            ]
        );
    }

    #[test]
    fn table_is_aligned() {
        let s = render(&[batch()], Format::Table).unwrap();
        assert!(s.contains("| currency | total |"), "{s}");
    }
}
