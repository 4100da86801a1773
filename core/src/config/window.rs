//! `[transforms.<id>]` with `type = "window"`: an aggregation over event-time windows.
//!
//! A window transform reads exactly one input, cuts its rows into windows on `time_column`
//! and runs `sql` over each window; the results go to a Delta table of their own (`table`, by
//! default the transform id) and, unless `metrics = false`, to `/metrics`. Which length keys
//! apply depends on `window`: `size` for tumbling, `size` and `slide` for hopping (alias
//! sliding), `gap` for session. A length that does not belong to the kind is refused rather
//! than ignored, so that a config switched from one kind to another says what is left to
//! change. When `window` itself is missing or unknown the lengths are still checked on their
//! own, so that every problem shows up at once.

use std::time::Duration;

use super::components::{inputs, Inputs};
use super::model::*;
use super::reader::{to_bool, to_duration, to_positive, to_text, Cx, Node, Scalar};
use super::suggest::did_you_mean;
use super::units::format_duration;
use crate::schema::{DLQ_TABLE, SPANS_TABLE};

/// The accepted values of `window`; `sliding` is another name for `hopping`.
const KINDS: &[&str] = &["tumbling", "hopping", "sliding", "session"];
/// Shortest `emit_every`: more often would only re-send the same partial results.
const MIN_EMIT_EVERY: Duration = Duration::from_millis(10);
/// Lake tables paystream writes itself, which a window transform must not write into.
const BUILT_IN_TABLES: &[&str] = &[
    "payments",
    "orders",
    "refunds",
    DLQ_TABLE,
    "late_events",
    SPANS_TABLE,
];

/// `window` as read, before its lengths are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tumbling,
    Hopping,
    Session,
}

/// Reads a window transform whose `type` was already taken from `node`; `id` is the transform
/// id (the default `table`). Also returns its inputs with their spans for the graph checks,
/// even when there are too many of them, so that unknown ones are reported as well.
pub fn parse(
    cx: &mut Cx<'_>,
    id: &str,
    mut node: Node<'_, '_>,
) -> (Option<WindowTransformConfig>, Inputs) {
    let inputs = inputs(cx, &mut node);
    let one_input = match &inputs.list {
        Some(list) if list.len() > 1 => {
            let names: Vec<&str> = list.iter().map(|s| s.get_ref().as_str()).collect();
            let span = node.span_of("inputs").unwrap_or_else(|| node.span.clone());
            cx.error(
                &span,
                node.key("inputs"),
                format!(
                    "a window transform reads exactly one input, found {} (`{}`); combine them in a sql transform first",
                    names.len(),
                    names.join("`, `")
                ),
            );
            false
        }
        _ => true,
    };
    let sql = cx.required_value(&mut node, "sql", |s| to_text(s).map(str::to_owned));
    let kind = window_kind(cx, &mut node);
    let window = lengths(cx, &mut node, kind);
    let time_column = cx
        .optional(&mut node, "time_column", |s| {
            let name = to_text(s)?;
            if name.trim().is_empty() {
                return Err("must not be blank".to_owned());
            }
            Ok(name.to_owned())
        })
        .unwrap_or_else(|| DEFAULT_WINDOW_TIME_COLUMN.to_owned());
    let allowed_lateness = cx
        .optional(&mut node, "allowed_lateness", to_duration)
        .unwrap_or(DEFAULT_ALLOWED_LATENESS);
    let emit_every = cx
        .optional(&mut node, "emit_every", emit_every)
        .unwrap_or(Some(DEFAULT_EMIT_EVERY));
    let max_series = cx
        .optional(&mut node, "max_series", to_positive)
        .unwrap_or(DEFAULT_MAX_SERIES);
    let metrics = cx.optional(&mut node, "metrics", to_bool).unwrap_or(true);
    let table = table(cx, &mut node, id);
    node.finish(cx);

    let config = match (inputs.names(), one_input, sql, window, table) {
        (Some(inputs), true, Some(sql), Some(window), Some(table)) => Some(WindowTransformConfig {
            inputs,
            sql,
            window,
            time_column,
            allowed_lateness,
            emit_every,
            max_series,
            metrics,
            table,
        }),
        _ => None,
    };
    (config, inputs)
}

/// The required `window`, with the word as written (`"sliding"` stays `"sliding"` in
/// messages); reported when missing or unknown.
fn window_kind(cx: &mut Cx<'_>, node: &mut Node<'_, '_>) -> Option<(Kind, &'static str)> {
    let known = KINDS.join(", ");
    let Some(v) = node.take("window") else {
        let span = node.span.clone();
        cx.error(
            &span,
            node.key("window"),
            format!("missing required key `window` (one of: {known})"),
        );
        return None;
    };
    let key = node.key("window");
    let word = cx.string(&key, v, false)?;
    let kind = match word.as_str() {
        "tumbling" => (Kind::Tumbling, "tumbling"),
        "hopping" => (Kind::Hopping, "hopping"),
        "sliding" => (Kind::Hopping, "sliding"),
        "session" => (Kind::Session, "session"),
        other => {
            let mut message = if other.trim().is_empty() {
                "must not be empty".to_owned()
            } else {
                format!("unknown window {other:?}")
            };
            if let Some(close) = did_you_mean(other, KINDS.iter().copied()) {
                message.push_str(&format!(", did you mean {close:?}?"));
            }
            message.push_str(&format!(" (known windows: {known})"));
            cx.error(&v.span(), key, message);
            return None;
        }
    };
    Some(kind)
}

/// Reads `size`, `slide` and `gap`: required where the kind needs them, refused where it
/// does not, and (when the kind is unknown) checked as durations only. The window, when its
/// kind and lengths are all good.
fn lengths(
    cx: &mut Cx<'_>,
    node: &mut Node<'_, '_>,
    kind: Option<(Kind, &'static str)>,
) -> Option<WindowKind> {
    let (size_use, slide_use, gap_use) = match kind.map(|(k, _)| k) {
        None => (Use::Check, Use::Check, Use::Check),
        Some(Kind::Tumbling) => (Use::Require, Use::Refuse, Use::Refuse),
        Some(Kind::Hopping) => (Use::Require, Use::Require, Use::Refuse),
        Some(Kind::Session) => (Use::Refuse, Use::Refuse, Use::Require),
    };
    let word = kind.map_or("", |(_, w)| w);
    let size = length(cx, node, "size", size_use, word);
    let mut slide = length(cx, node, "slide", slide_use, word);
    let gap = length(cx, node, "gap", gap_use, word);
    if let (Some(size), Some(s), Some(span)) = (size, slide, node.span_of("slide")) {
        let problem = if s > size {
            Some(format!(
                "must be at most size ({}), found {:?}",
                format_duration(size),
                format_duration(s)
            ))
        } else if size.as_millis() % s.as_millis() != 0 {
            Some(format!(
                "size ({}) must be a whole multiple of slide, found {:?}",
                format_duration(size),
                format_duration(s)
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            cx.error(&span, node.key("slide"), message);
            slide = None;
        }
    }
    match (kind.map(|(k, _)| k), size, slide, gap) {
        (Some(Kind::Tumbling), Some(size), _, _) => Some(WindowKind::Tumbling { size }),
        (Some(Kind::Hopping), Some(size), Some(slide), _) => {
            Some(WindowKind::Hopping { size, slide })
        }
        (Some(Kind::Session), _, _, Some(gap)) => Some(WindowKind::Session { gap }),
        _ => None,
    }
}

/// How a length key is read for the kind of window at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// The kind needs it: reported when missing.
    Require,
    /// The kind has no such length: reported when set.
    Refuse,
    /// The kind is unknown (already reported): only the value is checked.
    Check,
}

/// One length key read as `usage` says; `kind` is the `window` as written, for messages. An
/// empty string is "not set", as for every optional key.
fn length(
    cx: &mut Cx<'_>,
    node: &mut Node<'_, '_>,
    key: &'static str,
    usage: Use,
    kind: &str,
) -> Option<Duration> {
    let Some(v) = node.take(key) else {
        if usage == Use::Require {
            let span = node.span.clone();
            cx.error(
                &span,
                node.key(key),
                format!(
                    "missing required key `{key}`: a {kind} window needs {}",
                    needs(key)
                ),
            );
        }
        return None;
    };
    let path = node.key(key);
    let scalar = cx.scalar(&path, v)?;
    if matches!(&scalar, Scalar::Str(s) if s.trim().is_empty()) {
        if usage == Use::Require {
            cx.error(&v.span(), path, "must not be empty");
        }
        return None;
    }
    if usage == Use::Refuse {
        cx.error(
            &v.span(),
            path,
            format!("{kind} windows have no {key}; {}", instead(kind, key)),
        );
        return None;
    }
    match positive_duration(&scalar) {
        Ok(d) => Some(d),
        Err(message) => {
            cx.error(&v.span(), path, message);
            None
        }
    }
}

/// What a required length is, for "missing required key" messages.
fn needs(key: &str) -> &'static str {
    match key {
        "size" => "the length of each window, e.g. size = \"1m\"",
        "slide" => "the time between the starts of two windows, e.g. slide = \"10s\"",
        _ => "the idle time that closes a session, e.g. gap = \"30s\"",
    }
}

/// What to write instead of a length the kind has no use for.
fn instead(kind: &str, key: &str) -> &'static str {
    match (kind, key) {
        ("session", _) => "use gap",
        ("tumbling", "slide") => "use window = \"hopping\" for windows that overlap",
        ("tumbling", _) => "use size, or window = \"session\" for windows closed by a gap",
        (_, _) => "use size and slide, or window = \"session\" for windows closed by a gap",
    }
}

/// A duration greater than zero.
fn positive_duration(s: &Scalar) -> Result<Duration, String> {
    let d = to_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "must be greater than 0, found {}",
            s.describe(false)
        ));
    }
    Ok(d)
}

/// `emit_every`: `"off"` (only final results) or a duration of at least [`MIN_EMIT_EVERY`].
fn emit_every(s: &Scalar) -> Result<Option<Duration>, String> {
    if matches!(s, Scalar::Str(t) if t.trim() == "off") {
        return Ok(None);
    }
    // "expected a duration like ..." becomes "expected \"off\" or a duration like ...".
    let d = to_duration(s).map_err(|e| e.replacen("a duration", "\"off\" or a duration", 1))?;
    if d < MIN_EMIT_EVERY {
        return Err(format!(
            "must be at least {} (or \"off\" for final results only), found {}",
            format_duration(MIN_EMIT_EVERY),
            s.describe(false)
        ));
    }
    Ok(Some(d))
}

/// The optional `table`, defaulting to the transform id; either way a valid name that is not
/// a built-in table, reported at the value or (for the default) at the transform's table.
fn table(cx: &mut Cx<'_>, node: &mut Node<'_, '_>, id: &str) -> Option<String> {
    if let Some(v) = node.take("table") {
        let path = node.key("table");
        let name = cx.string(&path, v, false)?;
        if !name.is_empty() {
            let message = match check_table(&name) {
                Ok(()) => return Some(name),
                Err(TableProblem::Invalid) => {
                    format!("invalid table name {name:?}: use {TABLE_NAME_RULE}")
                }
                Err(TableProblem::BuiltIn) => {
                    format!("table `{name}` is a built-in table; pick another name")
                }
            };
            cx.error(&v.span(), path, message);
            return None;
        }
    }
    match check_table(id) {
        Ok(()) => Some(id.to_owned()),
        Err(problem) => {
            let why = match problem {
                TableProblem::Invalid => {
                    format!("the transform id {id:?} is not a valid table name ({TABLE_NAME_RULE})")
                }
                TableProblem::BuiltIn => format!("the transform id `{id}` is a built-in table"),
            };
            let span = node.span.clone();
            cx.error(
                &span,
                node.key("table"),
                format!("no `table` is set and {why}; set `table` to another name"),
            );
            None
        }
    }
}

/// Why a name cannot be a window transform's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableProblem {
    /// Not `[a-z_][a-z0-9_]*`.
    Invalid,
    /// One of [`BUILT_IN_TABLES`].
    BuiltIn,
}

const TABLE_NAME_RULE: &str = "lowercase letters, digits and '_', not starting with a digit";

/// `[a-z_][a-z0-9_]*` and not a built-in table.
fn check_table(name: &str) -> Result<(), TableProblem> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(TableProblem::Invalid);
    }
    if BUILT_IN_TABLES.contains(&name) {
        return Err(TableProblem::BuiltIn);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use crate::config::{
        from_str, TransformConfig, WindowKind, WindowTransformConfig, DEFAULT_ALLOWED_LATENESS,
        DEFAULT_EMIT_EVERY, DEFAULT_MAX_SERIES, DEFAULT_WINDOW_TIME_COLUMN,
    };

    /// A source, a sql transform and a sink, for window transforms to read from.
    const PIPE: &str = r#"
[sources.kafka]
type = "kafka"
brokers = "localhost:9092"
topics = ["payments"]

[transforms.big]
type = "sql"
inputs = ["kafka"]
sql = "SELECT * FROM input WHERE amount_minor > 100000"

[sinks.lake]
type = "delta"
inputs = ["kafka"]
uri = "./lake"
"#;

    fn window(section: &str, id: &str, env: &[(&str, &str)]) -> WindowTransformConfig {
        let text = format!("{PIPE}\n{section}");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let config = from_str(&text, "w.toml", &lookup).unwrap_or_else(|d| panic!("{d}"));
        let transform = config.transforms[id].clone();
        assert_eq!(transform.inputs().len(), 1);
        match transform {
            TransformConfig::Window(w) => w,
            other => panic!("not a window transform: {other:?}"),
        }
    }

    #[test]
    fn a_tumbling_window_takes_the_defaults() {
        let w = window(
            r#"
[transforms.payments_per_minute]
type = "window"
inputs = ["kafka"]
sql = """SELECT currency, count(*) AS payments FROM payments GROUP BY currency"""
window = "tumbling"
size = "1m"
"#,
            "payments_per_minute",
            &[],
        );
        assert_eq!(
            w,
            WindowTransformConfig {
                inputs: vec!["kafka".into()],
                sql: "SELECT currency, count(*) AS payments FROM payments GROUP BY currency".into(),
                window: WindowKind::Tumbling {
                    size: Duration::from_secs(60)
                },
                time_column: "event_time".into(),
                allowed_lateness: Duration::from_secs(5),
                emit_every: Some(Duration::from_secs(1)),
                max_series: 10_000,
                metrics: true,
                table: "payments_per_minute".into(),
            }
        );
        // The constants say the same as the documentation.
        assert_eq!(w.time_column, DEFAULT_WINDOW_TIME_COLUMN);
        assert_eq!(w.allowed_lateness, DEFAULT_ALLOWED_LATENESS);
        assert_eq!(w.emit_every, Some(DEFAULT_EMIT_EVERY));
        assert_eq!(w.max_series, DEFAULT_MAX_SERIES);
    }

    #[test]
    fn a_tumbling_window_reads_every_key() {
        let w = window(
            r#"
[transforms.per_minute]
type = "window"
inputs = ["kafka"]
sql = "SELECT count(*) AS n FROM payments"
window = "tumbling"
size = "1m30s"
time_column = "created_at"
allowed_lateness = "2m"
emit_every = "250ms"
max_series = 50
metrics = false
table = "payments_per_90s"
"#,
            "per_minute",
            &[],
        );
        assert_eq!(
            w,
            WindowTransformConfig {
                inputs: vec!["kafka".into()],
                sql: "SELECT count(*) AS n FROM payments".into(),
                window: WindowKind::Tumbling {
                    size: Duration::from_secs(90)
                },
                time_column: "created_at".into(),
                allowed_lateness: Duration::from_secs(120),
                emit_every: Some(Duration::from_millis(250)),
                max_series: 50,
                metrics: false,
                table: "payments_per_90s".into(),
            }
        );
    }

    #[test]
    fn a_hopping_window_reads_every_key() {
        // `sliding` is `hopping`; a transform is a valid input; "off" and "0s" are allowed;
        // an empty string (an unset variable) leaves the default.
        let w = window(
            r#"
[transforms.big-per-minute]
type = "window"
inputs = ["big"]
sql = "SELECT merchant_id, sum(amount_minor) AS total FROM big GROUP BY merchant_id"
window = "sliding"
size = "1m"
slide = "10s"
time_column = "${TIME_COLUMN:-}"
allowed_lateness = "0s"
emit_every = "off"
max_series = "${MAX_SERIES:-500}"
metrics = "${WINDOW_METRICS:-true}"
table = "_big_per_minute"
"#,
            "big-per-minute",
            &[("MAX_SERIES", "1_000")],
        );
        assert_eq!(
            w,
            WindowTransformConfig {
                inputs: vec!["big".into()],
                sql: "SELECT merchant_id, sum(amount_minor) AS total FROM big GROUP BY merchant_id"
                    .into(),
                window: WindowKind::Hopping {
                    size: Duration::from_secs(60),
                    slide: Duration::from_secs(10),
                },
                time_column: "event_time".into(),
                allowed_lateness: Duration::ZERO,
                emit_every: None,
                max_series: 1_000,
                metrics: true,
                table: "_big_per_minute".into(),
            }
        );
        // A slide as long as the window is allowed (it is a tumbling window then).
        let w = window(
            "[transforms.h]\ntype = \"window\"\ninputs = [\"kafka\"]\nsql = \"SELECT 1\"\nwindow = \"hopping\"\nsize = \"1m\"\nslide = \"60000ms\"\n",
            "h",
            &[],
        );
        assert_eq!(
            w.window,
            WindowKind::Hopping {
                size: Duration::from_secs(60),
                slide: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn a_session_window_reads_every_key() {
        let w = window(
            r#"
[transforms.checkout_sessions]
type = "window"
inputs = ["kafka"]
sql = "SELECT customer_id, count(*) AS events FROM payments GROUP BY customer_id"
window = "session"
gap = "30s"
time_column = "occurred_at"
allowed_lateness = "1s"
emit_every = "10ms"
max_series = 1
metrics = true
"#,
            "checkout_sessions",
            &[],
        );
        assert_eq!(
            w,
            WindowTransformConfig {
                inputs: vec!["kafka".into()],
                sql: "SELECT customer_id, count(*) AS events FROM payments GROUP BY customer_id"
                    .into(),
                window: WindowKind::Session {
                    gap: Duration::from_secs(30)
                },
                time_column: "occurred_at".into(),
                allowed_lateness: Duration::from_secs(1),
                emit_every: Some(Duration::from_millis(10)),
                max_series: 1,
                metrics: true,
                table: "checkout_sessions".into(),
            }
        );
    }

    #[test]
    fn table_names() {
        use super::{check_table, TableProblem};
        for ok in ["per_minute", "_x", "a1_b2", "payments_1m", "dlq2"] {
            assert_eq!(check_table(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1m", "Per_minute", "per-minute", "per minute", "é"] {
            assert_eq!(check_table(bad), Err(TableProblem::Invalid), "{bad}");
        }
        for built_in in [
            "payments",
            "orders",
            "refunds",
            "dlq",
            "late_events",
            "spans",
        ] {
            assert_eq!(
                check_table(built_in),
                Err(TableProblem::BuiltIn),
                "{built_in}"
            );
        }
    }
}
