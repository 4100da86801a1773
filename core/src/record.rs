//! The raw shape of one consumed message, as every source hands it to the decoder: bytes plus
//! where they came from. Borrowed, so the Kafka path never copies a payload before decoding.

/// One message as received, before decoding.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Broker or producer timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Kafka headers in order; a header may have no value.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}
