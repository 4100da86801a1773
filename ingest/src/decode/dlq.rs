//! Rows of the `dlq` table: a bad record as received, where it came from, and why it is bad.
//!
//! Nothing is lost: the payload, key and headers are kept byte for byte, except that card
//! numbers are masked (EVENTS.md: a full card number is never written anywhere). Headers become
//! a JSON object of name to value, a value that is not UTF-8 is written as `b64:` and its
//! base64, a header without a value is `null`, and a name that repeats keeps all its values in
//! an array.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Date32Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use paystream_core::record::RawRecord;
use paystream_core::schema::dlq_schema;

use super::pan::{mask_bytes, mask_pans};
use super::table::{ts_builder, DictBuilder};
use super::time::{date_of, millis_to_micros};
use super::value::FieldError;

/// Buffered rows of the `dlq` table.
pub(crate) struct DlqBuilders {
    schema: SchemaRef,
    raw: BinaryBuilder,
    kafka_topic: StringBuilder,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    kafka_timestamp: TimestampMicrosecondBuilder,
    key: BinaryBuilder,
    headers: StringBuilder,
    error_kind: DictBuilder,
    error: StringBuilder,
    received_at: TimestampMicrosecondBuilder,
    event_date: Date32Builder,
    pub rows: usize,
    /// Reused for the headers' JSON.
    scratch: String,
}

impl DlqBuilders {
    pub fn new() -> Self {
        DlqBuilders {
            schema: dlq_schema(),
            raw: BinaryBuilder::new(),
            kafka_topic: StringBuilder::new(),
            kafka_partition: Int32Builder::new(),
            kafka_offset: Int64Builder::new(),
            kafka_timestamp: ts_builder(),
            key: BinaryBuilder::new(),
            headers: StringBuilder::new(),
            error_kind: DictBuilder::new(),
            error: StringBuilder::new(),
            received_at: ts_builder(),
            event_date: Date32Builder::new(),
            rows: 0,
            scratch: String::new(),
        }
    }

    /// Appends one bad record.
    pub fn append(
        &mut self,
        rec: &RawRecord<'_>,
        ingest_time_us: i64,
        err: &FieldError,
    ) -> Result<(), ArrowError> {
        self.error_kind.append(err.kind.as_str())?;
        self.raw.append_option(rec.payload.map(mask_bytes));
        self.kafka_topic.append_value(rec.topic);
        self.kafka_partition.append_value(rec.partition);
        self.kafka_offset.append_value(rec.offset);
        self.kafka_timestamp
            .append_option(rec.timestamp_ms.and_then(millis_to_micros));
        self.key.append_option(rec.key.map(mask_bytes));
        if rec.headers.is_empty() {
            self.headers.append_null();
        } else {
            headers_json(rec.headers, &mut self.scratch);
            self.headers.append_value(&self.scratch);
        }
        self.error.append_value(mask_pans(&err.message));
        self.received_at.append_value(ingest_time_us);
        self.event_date.append_value(date_of(ingest_time_us));
        self.rows += 1;
        Ok(())
    }

    /// Takes the buffered rows as a batch of `dlq_schema()`, if there are any, and resets.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        if self.rows == 0 {
            return Ok(None);
        }
        self.rows = 0;
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.raw.finish()),
            Arc::new(self.kafka_topic.finish()),
            Arc::new(self.kafka_partition.finish()),
            Arc::new(self.kafka_offset.finish()),
            Arc::new(self.kafka_timestamp.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.headers.finish()),
            Arc::new(self.error_kind.finish()),
            Arc::new(self.error.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.event_date.finish()),
        ];
        RecordBatch::try_new(self.schema.clone(), arrays).map(Some)
    }
}

/// Writes `headers` as a JSON object into `out` (cleared first), values masked.
pub(crate) fn headers_json(headers: &[(&str, Option<&[u8]>)], out: &mut String) {
    out.clear();
    out.push('{');
    let mut first = true;
    for (i, &(name, _)) in headers.iter().enumerate() {
        // Headers are few; a quadratic scan keeps names in first-seen order without a map.
        if headers[..i].iter().any(|(n, _)| *n == name) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        json_string(&mask_pans(name), out);
        out.push(':');
        let values: Vec<Option<&[u8]>> = headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect();
        if let [single] = values.as_slice() {
            header_value(*single, out);
        } else {
            out.push('[');
            for (j, v) in values.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                header_value(*v, out);
            }
            out.push(']');
        }
    }
    out.push('}');
}

fn header_value(value: Option<&[u8]>, out: &mut String) {
    let Some(bytes) = value else {
        out.push_str("null");
        return;
    };
    let masked = mask_bytes(bytes);
    match std::str::from_utf8(&masked) {
        Ok(s) => json_string(s, out),
        Err(_) => {
            out.push_str("\"b64:");
            base64(&masked, out);
            out.push('"');
        }
    }
}

/// Writes `s` as a JSON string.
pub(crate) fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Standard base64 with padding (RFC 4648 §4).
pub(crate) fn base64(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        let mut s = String::new();
        base64(bytes, &mut s);
        s
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foob"), "Zm9vYg==");
        assert_eq!(b64(b"fooba"), "Zm9vYmE=");
        assert_eq!(b64(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn headers_as_json() {
        let headers: &[(&str, Option<&[u8]>)] = &[
            ("traceparent", Some(b"00-ab")),
            ("bin", Some(&[0xff, 0x00])),
            ("none", None),
            ("q\"uote", Some(b"a\nb")),
            ("dup", Some(b"1")),
            ("dup", Some(b"2")),
            ("pan", Some(b"4111111111111111")),
        ];
        let mut out = String::new();
        headers_json(headers, &mut out);
        assert_eq!(
            out,
            r#"{"traceparent":"00-ab","bin":"b64:/wA=","none":null,"q\"uote":"a\nb","dup":["1","2"],"pan":"************1111"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["dup"][1], "2");
    }
}
