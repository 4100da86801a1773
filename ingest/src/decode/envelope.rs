//! The event envelope in its three wire forms, and W3C trace context.
//!
//! Whatever form a producer chose, an event has the same envelope: id, type, time, source,
//! schema version and trace context. This module finds them (in the body for CloudEvents
//! structured mode and plain events, in Kafka headers for CloudEvents binary mode), tells the
//! caller where the event's own fields are, and validates the envelope in a fixed order so that
//! a record with several faults is always classified the same way:
//! missing id, type or time first, then their types, then routing, then the time's syntax.

use std::borrow::Cow;

use paystream_core::dlq::ErrorKind;
use paystream_core::record::RawRecord;

use super::object::Fields;
use super::time::{read_header_timestamp, read_timestamp};
use super::trace::parse_traceparent;
use super::value::{as_str, integer_text, is_null, shown, wrong_type, FieldError};

/// How a message was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireForm {
    /// CloudEvents structured mode: attributes and `data` in the body.
    Structured,
    /// CloudEvents binary mode: attributes in `ce_*` headers, the body is `data`.
    Binary,
    /// A flat object with `event_id`, `event_type`, `event_time`, … and the fields.
    Plain,
}

/// Where an envelope attribute came from.
#[derive(Debug, Clone, Copy)]
enum Src<'a> {
    Json(&'a str),
    Header(&'a [u8]),
}

/// An attribute with the name it is reported under.
#[derive(Debug, Clone, Copy)]
struct Attr<'a> {
    path: &'static str,
    src: Option<Src<'a>>,
}

impl<'a> Attr<'a> {
    fn absent(path: &'static str) -> Self {
        Attr { path, src: None }
    }

    fn json(path: &'static str, raw: Option<&'a str>) -> Self {
        Attr {
            path,
            src: raw.filter(|r| !is_null(r)).map(Src::Json),
        }
    }

    fn header(path: &'static str, value: Option<&'a [u8]>) -> Self {
        Attr {
            path,
            src: value.map(Src::Header),
        }
    }

    fn missing(&self) -> FieldError {
        let what = if self.path.starts_with("header") {
            "required header missing"
        } else {
            "required field missing"
        };
        FieldError::new(ErrorKind::MissingField, format!("{}: {what}", self.path))
    }

    /// A string attribute; `None` when absent.
    fn string(&self) -> Result<Option<Cow<'a, str>>, FieldError> {
        match self.src {
            None => Ok(None),
            Some(Src::Json(raw)) => as_str(raw)
                .map(Some)
                .ok_or_else(|| wrong_type(self.path, "a string", raw)),
            Some(Src::Header(bytes)) => {
                header_str(self.path, bytes).map(|s| Some(Cow::Borrowed(s)))
            }
        }
    }

    /// A required, non-empty string attribute.
    fn required_string(&self) -> Result<Cow<'a, str>, FieldError> {
        match self.string()? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(FieldError::new(
                ErrorKind::MissingField,
                format!("{}: empty", self.path),
            )),
            None => Err(self.missing()),
        }
    }

    /// A schema version: a string, or an integer kept as its text.
    fn version(&self) -> Result<Option<Cow<'a, str>>, FieldError> {
        match self.src {
            Some(Src::Json(raw)) => match integer_text(raw) {
                Some(text) => Ok(Some(Cow::Borrowed(text))),
                None => self.string(),
            },
            _ => self.string(),
        }
    }
}

fn header_str<'a>(path: &str, bytes: &'a [u8]) -> Result<&'a str, FieldError> {
    std::str::from_utf8(bytes).map_err(|e| {
        FieldError::new(
            ErrorKind::WrongType,
            format!(
                "{path}: value is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Envelope attributes located in a message, before validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Located<'a> {
    pub form: WireForm,
    id: Attr<'a>,
    ty: Attr<'a>,
    time: Attr<'a>,
    source: Attr<'a>,
    version: Attr<'a>,
    /// The CloudEvents `traceparent` attribute, used when the Kafka header is absent or invalid.
    ce_traceparent: Attr<'a>,
    header_traceparent: Option<&'a [u8]>,
    /// `$.data` in structured mode.
    pub data: Option<&'a str>,
}

/// Headers that matter to the envelope, found in one pass.
#[derive(Default)]
struct Headers<'a> {
    traceparent: Option<&'a [u8]>,
    cloudevents_content_type: bool,
    ce_id: Option<&'a [u8]>,
    ce_type: Option<&'a [u8]>,
    ce_time: Option<&'a [u8]>,
    ce_source: Option<&'a [u8]>,
    ce_specversion: Option<&'a [u8]>,
    ce_schemaversion: Option<&'a [u8]>,
    ce_dataschema: Option<&'a [u8]>,
    ce_traceparent: Option<&'a [u8]>,
}

fn scan_headers<'a>(headers: &'a [(&'a str, Option<&'a [u8]>)]) -> Headers<'a> {
    let mut h = Headers::default();
    for &(name, value) in headers {
        let slot = match name {
            "traceparent" => &mut h.traceparent,
            "ce_id" => &mut h.ce_id,
            "ce_type" => &mut h.ce_type,
            "ce_time" => &mut h.ce_time,
            "ce_source" => &mut h.ce_source,
            "ce_specversion" => &mut h.ce_specversion,
            "ce_schemaversion" => &mut h.ce_schemaversion,
            "ce_dataschema" => &mut h.ce_dataschema,
            "ce_traceparent" => &mut h.ce_traceparent,
            _ => {
                if name.eq_ignore_ascii_case("content-type") {
                    h.cloudevents_content_type |= value.is_some_and(|v| {
                        let prefix = b"application/cloudevents+json";
                        v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix)
                    });
                }
                continue;
            }
        };
        if slot.is_none() {
            *slot = value;
        }
    }
    h
}

/// Body members that matter to the envelope, found in one pass.
#[derive(Default)]
struct BodyAttrs<'a> {
    specversion: bool,
    id: Option<&'a str>,
    ty: Option<&'a str>,
    time: Option<&'a str>,
    source: Option<&'a str>,
    data: Option<&'a str>,
    schemaversion: Option<&'a str>,
    dataschema: Option<&'a str>,
    traceparent: Option<&'a str>,
    event_id: Option<&'a str>,
    event_type: Option<&'a str>,
    event_time: Option<&'a str>,
    schema_version: Option<&'a str>,
}

fn scan_body<'a>(fields: &Fields<'a>) -> BodyAttrs<'a> {
    let mut b = BodyAttrs::default();
    for (key, value) in fields {
        let slot = match &**key {
            "specversion" => {
                b.specversion = true;
                continue;
            }
            "id" => &mut b.id,
            "type" => &mut b.ty,
            "time" => &mut b.time,
            "source" => &mut b.source,
            "data" => &mut b.data,
            "schemaversion" => &mut b.schemaversion,
            "dataschema" => &mut b.dataschema,
            "traceparent" => &mut b.traceparent,
            "event_id" => &mut b.event_id,
            "event_type" => &mut b.event_type,
            "event_time" => &mut b.event_time,
            "schema_version" => &mut b.schema_version,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(*value);
        }
    }
    b
}

/// Is `key` an envelope member of a plain event (so never an event field or `extra`)?
pub(crate) fn is_plain_envelope_key(key: &str) -> bool {
    matches!(
        key,
        "event_id" | "event_type" | "event_time" | "source" | "schema_version"
    )
}

/// Detects the wire form and locates the envelope.
pub(crate) fn locate<'a>(rec: &RawRecord<'a>, body: &Fields<'a>) -> Located<'a> {
    let h = scan_headers(rec.headers);
    let b = scan_body(body);
    if b.specversion || h.cloudevents_content_type {
        let version = if b.schemaversion.is_some_and(|r| !is_null(r)) {
            Attr::json("$.schemaversion", b.schemaversion)
        } else {
            Attr::json("$.dataschema", b.dataschema)
        };
        Located {
            form: WireForm::Structured,
            id: Attr::json("$.id", b.id),
            ty: Attr::json("$.type", b.ty),
            time: Attr::json("$.time", b.time),
            source: Attr::json("$.source", b.source),
            version,
            ce_traceparent: Attr::json("$.traceparent", b.traceparent),
            header_traceparent: h.traceparent,
            data: b.data.filter(|r| !is_null(r)),
        }
    } else if h.ce_specversion.is_some() || h.ce_id.is_some() || h.ce_type.is_some() {
        let version = if h.ce_schemaversion.is_some() {
            Attr::header("header ce_schemaversion", h.ce_schemaversion)
        } else {
            Attr::header("header ce_dataschema", h.ce_dataschema)
        };
        Located {
            form: WireForm::Binary,
            id: Attr::header("header ce_id", h.ce_id),
            ty: Attr::header("header ce_type", h.ce_type),
            time: Attr::header("header ce_time", h.ce_time),
            source: Attr::header("header ce_source", h.ce_source),
            version,
            ce_traceparent: Attr::header("header ce_traceparent", h.ce_traceparent),
            header_traceparent: h.traceparent,
            data: None,
        }
    } else {
        Located {
            form: WireForm::Plain,
            id: Attr::json("$.event_id", b.event_id),
            ty: Attr::json("$.event_type", b.event_type),
            time: Attr::json("$.event_time", b.event_time),
            source: Attr::json("$.source", b.source),
            version: Attr::json("$.schema_version", b.schema_version),
            ce_traceparent: Attr::absent("$.traceparent"),
            header_traceparent: h.traceparent,
            data: None,
        }
    }
}

/// A validated envelope.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Envelope<'a> {
    pub id: Cow<'a, str>,
    pub event_type: Cow<'a, str>,
    /// Index of the table the type routes to.
    pub table: usize,
    pub time_us: i64,
    pub source: Option<Cow<'a, str>>,
    pub schema_version: Option<Cow<'a, str>>,
    /// `(trace_id, span_id)` from a valid `traceparent`.
    pub trace: Option<(&'a str, &'a str)>,
}

impl<'a> Located<'a> {
    /// Validates the envelope; `route` maps an event type to its table.
    pub fn validate(
        &self,
        route: impl FnOnce(&str) -> Option<usize>,
    ) -> Result<Envelope<'a>, FieldError> {
        for attr in [&self.id, &self.ty, &self.time] {
            if attr.src.is_none() {
                return Err(attr.missing());
            }
        }
        let id = self.id.required_string()?;
        let event_type = self.ty.required_string()?;
        let table = route(&event_type).ok_or_else(|| {
            FieldError::new(
                ErrorKind::UnknownEventType,
                format!(
                    "{}: event type {:?} is routed to no table",
                    self.ty.path,
                    shown(&event_type)
                ),
            )
        })?;
        let time_us = match self.time.src {
            Some(Src::Json(raw)) => read_timestamp(self.time.path, raw)?,
            Some(Src::Header(bytes)) => {
                read_header_timestamp("ce_time", header_str(self.time.path, bytes)?)?
            }
            None => return Err(self.time.missing()),
        };
        let source = self.source.string()?;
        let schema_version = self.version.version()?;
        let trace = self
            .header_traceparent
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(parse_traceparent)
            .or_else(|| match self.ce_traceparent.src {
                Some(Src::Json(raw)) => raw
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .and_then(parse_traceparent),
                Some(Src::Header(b)) => std::str::from_utf8(b).ok().and_then(parse_traceparent),
                None => None,
            });
        Ok(Envelope {
            id,
            event_type,
            table,
            time_us,
            source,
            schema_version,
            trace,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::decode::object::parse_object;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn rec<'a>(payload: &'a [u8], headers: &'a [(&'a str, Option<&'a [u8]>)]) -> RawRecord<'a> {
        RawRecord {
            topic: "payments",
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            payload: Some(payload),
            headers,
        }
    }

    fn validate<'a>(
        r: &RawRecord<'a>,
        fields: &mut Fields<'a>,
    ) -> (WireForm, Result<Envelope<'a>, FieldError>) {
        let text = std::str::from_utf8(r.payload.unwrap()).unwrap();
        parse_object(text, fields, None).unwrap();
        let loc = locate(r, fields);
        (
            loc.form,
            loc.validate(|t| (t == "PaymentAuthorized").then_some(3)),
        )
    }

    #[test]
    fn plain_form() {
        let body = br#"{"event_id":"e1","event_type":"PaymentAuthorized","event_time":1714566600000,"source":"checkout","schema_version":2}"#;
        let r = rec(body, &[]);
        let mut f = Fields::new();
        let (form, env) = validate(&r, &mut f);
        let env = env.unwrap();
        assert_eq!(form, WireForm::Plain);
        assert_eq!(env.id, "e1");
        assert_eq!(env.table, 3);
        assert_eq!(env.time_us, 1_714_566_600_000_000);
        assert_eq!(env.source.as_deref(), Some("checkout"));
        assert_eq!(env.schema_version.as_deref(), Some("2"));
        assert_eq!(env.trace, None);
    }

    #[test]
    fn structured_form_with_trace_attribute() {
        let body = format!(
            r#"{{"specversion":"1.0","id":"e2","type":"PaymentAuthorized","source":"/checkout","time":"2024-05-01T14:30:00+02:00","dataschema":"urn:v3","traceparent":"{TP}","data":{{}}}}"#
        );
        let r = rec(body.as_bytes(), &[]);
        let mut f = Fields::new();
        let (form, env) = validate(&r, &mut f);
        let env = env.unwrap();
        assert_eq!(form, WireForm::Structured);
        assert_eq!(env.id, "e2");
        assert_eq!(env.time_us, 1_714_566_600_000_000);
        assert_eq!(env.schema_version.as_deref(), Some("urn:v3"));
        assert_eq!(env.trace.unwrap().1, "00f067aa0ba902b7");
    }

    #[test]
    fn header_traceparent_wins_and_invalid_is_only_null() {
        let other = "00-11111111111111111111111111111111-2222222222222222-00";
        let body = format!(
            r#"{{"specversion":"1.0","id":"e","type":"PaymentAuthorized","time":1,"traceparent":"{TP}","schemaversion":"7","dataschema":"urn:x"}}"#
        );
        let headers: &[(&str, Option<&[u8]>)] = &[("traceparent", Some(other.as_bytes()))];
        let r = rec(body.as_bytes(), headers);
        let mut f = Fields::new();
        let env = validate(&r, &mut f).1.unwrap();
        assert_eq!(env.trace.unwrap().0, "11111111111111111111111111111111");
        assert_eq!(env.schema_version.as_deref(), Some("7"));
        // An invalid header falls back to the attribute; both invalid leave no trace.
        let headers: &[(&str, Option<&[u8]>)] = &[("traceparent", Some(b"nonsense"))];
        let r = rec(body.as_bytes(), headers);
        let env = validate(&r, &mut f).1.unwrap();
        assert_eq!(env.trace.unwrap().0, "4bf92f3577b34da6a3ce929d0e0e4736");
        let body = br#"{"event_id":"e","event_type":"PaymentAuthorized","event_time":1}"#;
        let r = rec(body, headers);
        assert_eq!(validate(&r, &mut f).1.unwrap().trace, None);
    }

    #[test]
    fn binary_form_from_headers() {
        let headers: &[(&str, Option<&[u8]>)] = &[
            ("ce_specversion", Some(b"1.0")),
            ("ce_id", Some(b"e3")),
            ("ce_type", Some(b"PaymentAuthorized")),
            ("ce_source", Some(b"/checkout")),
            ("ce_time", Some(b"2024-05-01T12:30:00Z")),
            ("ce_schemaversion", Some(b"4")),
            ("ce_traceparent", Some(TP.as_bytes())),
        ];
        let r = rec(br#"{"payment_id":"p"}"#, headers);
        let mut f = Fields::new();
        let (form, env) = validate(&r, &mut f);
        let env = env.unwrap();
        assert_eq!(form, WireForm::Binary);
        assert_eq!(env.id, "e3");
        assert_eq!(env.source.as_deref(), Some("/checkout"));
        assert_eq!(env.schema_version.as_deref(), Some("4"));
        assert!(env.trace.is_some());
        // A structured content type wins over a plain-looking body.
        let headers: &[(&str, Option<&[u8]>)] = &[(
            "Content-Type",
            Some(b"application/cloudevents+json; charset=utf-8"),
        )];
        let r = rec(br#"{"event_id":"e"}"#, headers);
        let (form, env) = validate(&r, &mut f);
        assert_eq!(form, WireForm::Structured);
        assert_eq!(env.unwrap_err().message, "$.id: required field missing");
    }

    #[test]
    fn envelope_errors_in_order() {
        let mut f = Fields::new();
        let cases: &[(&[u8], ErrorKind, &str)] = &[
            (
                br#"{"event_type":"X"}"#,
                ErrorKind::MissingField,
                "$.event_id: required field missing",
            ),
            (
                br#"{"event_id":"e","event_time":1}"#,
                ErrorKind::MissingField,
                "$.event_type: required field missing",
            ),
            (
                br#"{"event_id":"e","event_type":"X","event_time":null}"#,
                ErrorKind::MissingField,
                "$.event_time: required field missing",
            ),
            (
                br#"{"event_id":"","event_type":"X","event_time":1}"#,
                ErrorKind::MissingField,
                "$.event_id: empty",
            ),
            (
                br#"{"event_id":7,"event_type":"X","event_time":1}"#,
                ErrorKind::WrongType,
                "$.event_id: expected a string, found a number 7",
            ),
            (
                br#"{"event_id":"e","event_type":"Refunded","event_time":"x"}"#,
                ErrorKind::UnknownEventType,
                r#"$.event_type: event type "Refunded" is routed to no table"#,
            ),
            (
                br#"{"event_id":"e","event_type":"PaymentAuthorized","event_time":"yesterday"}"#,
                ErrorKind::InvalidTimestamp,
                r#"$.event_time: "yesterday" is not RFC 3339 or epoch milliseconds"#,
            ),
            (
                br#"{"event_id":"e","event_type":"PaymentAuthorized","event_time":1,"source":5}"#,
                ErrorKind::WrongType,
                "$.source: expected a string, found a number 5",
            ),
            (
                br#"{"specversion":"1.0","type":"PaymentAuthorized","time":1}"#,
                ErrorKind::MissingField,
                "$.id: required field missing",
            ),
        ];
        for (body, kind, message) in cases {
            let r = rec(body, &[]);
            let err = validate(&r, &mut f).1.unwrap_err();
            assert_eq!((err.kind, err.message.as_str()), (*kind, *message));
        }
        let headers: &[(&str, Option<&[u8]>)] = &[
            ("ce_id", Some(b"e")),
            ("ce_time", Some(b"2024-05-01T12:30:00Z")),
        ];
        let r = rec(b"{}", headers);
        let err = validate(&r, &mut f).1.unwrap_err();
        assert_eq!(err.message, "header ce_type: required header missing");
        let headers: &[(&str, Option<&[u8]>)] = &[
            ("ce_id", Some(b"\xff")),
            ("ce_type", Some(b"PaymentAuthorized")),
            ("ce_time", Some(b"1")),
        ];
        let r = rec(b"{}", headers);
        let err = validate(&r, &mut f).1.unwrap_err();
        assert_eq!(err.kind, ErrorKind::WrongType);
        assert_eq!(
            err.message,
            "header ce_id: value is not valid UTF-8 (invalid byte at offset 0)"
        );
    }
}
