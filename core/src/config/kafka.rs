//! `[sources.<id>]` with `type = "kafka"`: reading and checking a Kafka source.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use toml::de::DeValue;

use super::model::*;
use super::reader::{
    describe_kind, to_duration, to_positive, to_size, to_text, Cx, Node, Scalar, Val,
};
use super::secret::SecretString;
use super::units::format_duration;

/// librdkafka's ceiling for `fetch.wait.max.ms`.
const FETCH_WAIT_MAX_LIMIT: Duration = Duration::from_secs(300);

/// librdkafka properties that have a key of their own here (or that paystream must control).
const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `brokers` instead"),
    ("metadata.broker.list", "set `brokers` instead"),
    ("group.id", "set `group_id` instead"),
    ("fetch.wait.max.ms", "set `fetch_wait_max` instead"),
    ("auto.offset.reset", "set `start_from` instead"),
    (
        "enable.auto.commit",
        "paystream resumes from the offsets stored in the lake and commits group offsets itself",
    ),
    (
        "enable.auto.offset.store",
        "paystream resumes from the offsets stored in the lake and commits group offsets itself",
    ),
];

/// Reads a kafka source whose `type` was already taken from `node`.
pub fn parse(cx: &mut Cx<'_>, mut node: Node<'_, '_>) -> Option<KafkaSourceConfig> {
    if let Some(v) = node.take_quietly("inputs") {
        cx.error(
            &v.span(),
            node.key("inputs"),
            "a source takes no `inputs`: it reads from Kafka `topics`",
        );
    }
    let brokers = cx.required_value(&mut node, "brokers", |s| check_brokers(to_text(s)?));
    let topics = topics(cx, &mut node);
    let group_id = cx
        .optional_string(&mut node, "group_id", false)
        .unwrap_or_else(|| DEFAULT_GROUP_ID.to_owned());
    let start_from = cx
        .optional(&mut node, "start_from", |s| match to_text(s)? {
            "earliest" => Ok(StartFrom::Earliest),
            "latest" => Ok(StartFrom::Latest),
            other => Err(format!(
                r#"expected "earliest" or "latest", found {other:?}"#
            )),
        })
        .unwrap_or_default();
    let batch_max_events = cx
        .optional(&mut node, "batch_max_events", to_positive)
        .unwrap_or(DEFAULT_BATCH_MAX_EVENTS);
    let batch_max_wait = cx
        .optional(&mut node, "batch_max_wait", to_duration)
        .unwrap_or(DEFAULT_BATCH_MAX_WAIT);
    let max_message_bytes = cx
        .optional(&mut node, "max_message_bytes", |s| match to_size(s)? {
            0 => Err("must be greater than 0".to_owned()),
            n => Ok(n),
        })
        .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
    let fetch_wait_max = cx
        .optional(&mut node, "fetch_wait_max", |s| {
            let d = to_duration(s)?;
            if d > FETCH_WAIT_MAX_LIMIT {
                return Err(format!(
                    "must be at most {} (librdkafka's limit for fetch.wait.max.ms), found {}",
                    format_duration(FETCH_WAIT_MAX_LIMIT),
                    s.describe(false)
                ));
            }
            Ok(d)
        })
        .unwrap_or(DEFAULT_FETCH_WAIT_MAX);
    let resume_rewind = cx
        .optional(&mut node, "resume_rewind", to_positive)
        .unwrap_or(0);
    let librdkafka = match node.take("librdkafka") {
        Some(v) => properties(cx, &node.key("librdkafka"), v),
        None => BTreeMap::new(),
    };
    node.finish(cx);
    Some(KafkaSourceConfig {
        brokers: brokers?,
        topics: topics?,
        group_id,
        start_from,
        batch_max_events,
        batch_max_wait,
        max_message_bytes,
        fetch_wait_max,
        resume_rewind,
        librdkafka,
    })
}

fn topics(cx: &mut Cx<'_>, node: &mut Node<'_, '_>) -> Option<Vec<String>> {
    let v = cx.required(node, "topics")?;
    let key = node.key("topics");
    let list = cx.string_list(&key, v)?;
    if list.is_empty() {
        cx.error(&v.span(), key, "must list at least one topic");
        return None;
    }
    let mut topics: Vec<String> = Vec::with_capacity(list.len());
    let mut ok = true;
    for item in list {
        let name = item.get_ref();
        if let Err(message) = check_topic(name) {
            cx.error(&item.span(), key.clone(), message);
            ok = false;
        } else if topics.contains(name) {
            cx.error(
                &item.span(),
                key.clone(),
                format!("topic {name:?} is listed twice"),
            );
            ok = false;
        } else {
            topics.push(item.into_inner());
        }
    }
    ok.then_some(topics)
}

/// Flattens `[sources.<id>.librdkafka]` into property -> value. A bare dotted key such as
/// `security.protocol = "SSL"` is a nested table in TOML; it is joined back into its
/// property name so that users need not quote every key.
fn properties(cx: &mut Cx<'_>, path: &str, v: &Val<'_>) -> BTreeMap<String, SecretString> {
    let mut out = BTreeMap::new();
    if let Some(node) = cx.table(path, v) {
        flatten(cx, path, "", None, &node, &mut out);
    }
    out
}

fn flatten(
    cx: &mut Cx<'_>,
    path: &str,
    prefix: &str,
    anchor: Option<&Range<usize>>,
    node: &Node<'_, '_>,
    out: &mut BTreeMap<String, SecretString>,
) {
    for (k, v) in node.entries() {
        let name = format!("{prefix}{}", k.get_ref());
        let key = format!("{path}.{name}");
        // Point at the start of the whole dotted key, not its last part.
        let key_span = anchor.cloned().unwrap_or_else(|| k.span());
        let inline = cx.source(&v.span()).starts_with('{');
        if let (DeValue::Table(_), false) = (v.get_ref(), inline) {
            if let Some(child) = cx.table(&key, v) {
                flatten(cx, path, &format!("{name}."), Some(&key_span), &child, out);
            }
            continue;
        }
        if let Some((_, why)) = RESERVED_PROPERTIES.iter().find(|(p, _)| *p == name) {
            cx.error(
                &key_span,
                key,
                format!("librdkafka property `{name}` cannot be set here: {why}"),
            );
            continue;
        }
        match cx.scalar(&key, v).map(Scalar::into_text) {
            Some(Some(text)) => {
                out.insert(name, SecretString::from(text));
            }
            Some(None) => {
                let found = describe_kind(v.get_ref());
                cx.error(
                    &v.span(),
                    key,
                    format!("expected a string, number or boolean, found {found}"),
                );
            }
            None => {}
        }
    }
}

/// `host:port[,host:port]`, returned with blanks around the commas removed.
fn check_brokers(list: &str) -> Result<String, String> {
    const FORM: &str = r#"expected "host:port[,host:port]""#;
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("empty broker address in {list:?}; {FORM}"));
        }
        if part.contains("://") {
            return Err(format!(
                "broker {part:?} has a scheme; {FORM} (set security.protocol under librdkafka)"
            ));
        }
        let Some((host, port)) = part.rsplit_once(':') else {
            return Err(format!("broker {part:?} has no port; {FORM}"));
        };
        let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => {
                !v6.is_empty()
                    && v6
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            }
            None => {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            }
        };
        if !host_ok {
            return Err(format!("invalid host in broker {part:?}; {FORM}"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("invalid port in broker {part:?}; {FORM}")),
        }
        out.push(part);
    }
    Ok(out.join(","))
}

/// Kafka's own rule: 1 to 249 of `[A-Za-z0-9._-]`, and not `.` or `..`.
fn check_topic(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name must not be empty".to_owned());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid topic name"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters long; Kafka allows at most 249",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "invalid topic name {name:?}: {bad:?} is not allowed (letters, digits, '.', '_' and '-' only)"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn brokers() {
        assert_eq!(check_brokers("localhost:9092").unwrap(), "localhost:9092");
        assert_eq!(
            check_brokers("a:1, b.example.com:9093").unwrap(),
            "a:1,b.example.com:9093"
        );
        assert_eq!(check_brokers("[::1]:9092").unwrap(), "[::1]:9092");
        assert_eq!(check_brokers("10.0.0.1:9092").unwrap(), "10.0.0.1:9092");
        assert!(check_brokers("localhost")
            .unwrap_err()
            .contains("has no port"));
        assert!(check_brokers("a:1,,b:2")
            .unwrap_err()
            .contains("empty broker"));
        assert!(check_brokers("a:0").unwrap_err().contains("invalid port"));
        assert!(check_brokers("a:99999")
            .unwrap_err()
            .contains("invalid port"));
        assert!(check_brokers("a b:1").unwrap_err().contains("invalid host"));
        assert!(check_brokers(":9092").unwrap_err().contains("invalid host"));
        assert!(check_brokers("PLAINTEXT://a:9092")
            .unwrap_err()
            .contains("scheme"));
    }

    #[test]
    fn topics() {
        assert!(check_topic("payments").is_ok());
        assert!(check_topic("team.payments-v2_eu").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("..").is_err());
        assert!(check_topic(&"a".repeat(250)).is_err());
        assert!(check_topic(&"a".repeat(249)).is_ok());
        assert_eq!(
            check_topic("pay ments").unwrap_err(),
            r#"invalid topic name "pay ments": ' ' is not allowed (letters, digits, '.', '_' and '-' only)"#
        );
    }
}
