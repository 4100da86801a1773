//! Why a record went to the dead-letter queue. The kinds are stable strings: they are stored in
//! the `dlq` table's `error_kind` column and used as metric labels, so renaming one is a
//! breaking change for users' queries and alerts.

use std::fmt;

/// The class of a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The message has no payload.
    EmptyPayload,
    /// The message is larger than the source's `max_message_bytes`.
    Oversized,
    /// The payload is not valid UTF-8.
    InvalidUtf8,
    /// The payload is not valid JSON, or not a JSON object.
    InvalidJson,
    /// A required envelope attribute (id, type, time) is missing.
    MissingField,
    /// The event type is routed to no table.
    UnknownEventType,
    /// A field has the wrong JSON type or a value out of range for its column.
    WrongType,
    /// The event time (or another timestamp) cannot be parsed.
    InvalidTimestamp,
    /// An amount is not exact in its currency's minor units.
    InexactAmount,
    /// An amount is negative.
    NegativeAmount,
    /// The currency code is not a known ISO 4217 code.
    UnknownCurrency,
}

impl ErrorKind {
    /// Every kind, in a stable order.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::EmptyPayload,
        ErrorKind::Oversized,
        ErrorKind::InvalidUtf8,
        ErrorKind::InvalidJson,
        ErrorKind::MissingField,
        ErrorKind::UnknownEventType,
        ErrorKind::WrongType,
        ErrorKind::InvalidTimestamp,
        ErrorKind::InexactAmount,
        ErrorKind::NegativeAmount,
        ErrorKind::UnknownCurrency,
    ];

    /// The stable name stored in the lake and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::EmptyPayload => "empty_payload",
            ErrorKind::Oversized => "oversized",
            ErrorKind::InvalidUtf8 => "invalid_utf8",
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::MissingField => "missing_field",
            ErrorKind::UnknownEventType => "unknown_event_type",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::InvalidTimestamp => "invalid_timestamp",
            ErrorKind::InexactAmount => "inexact_amount",
            ErrorKind::NegativeAmount => "negative_amount",
            ErrorKind::UnknownCurrency => "unknown_currency",
        }
    }

    /// The kind named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ErrorKind::parse("nope"), None);
    }
}
