//! Reading typed values out of the spanned TOML tree while collecting every problem.
//!
//! Serde stops at the first error; a config author wants all of them with their places.
//! So the document is parsed into `toml`'s spanned tree and walked by hand: [`Cx`] holds the
//! diagnostics and turns byte spans into line and column, [`Node`] is one table being read
//! and remembers which keys were asked for, so that whatever is left over is reported as an
//! unknown key (with a suggestion). Getters return `None` after reporting, and callers carry
//! on so that later problems are found too.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::env::substitute;
use super::suggest::did_you_mean;
use super::{Diagnostic, Diagnostics};

pub type Val<'i> = Spanned<DeValue<'i>>;

/// Byte offset to 1-based line and column (in characters, as `toml` counts them).
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1) - 1;
        let start = self.starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }
}

/// Where diagnostics are collected while a document is read.
pub struct Cx<'a> {
    file: &'a str,
    lines: LineIndex<'a>,
    env: &'a dyn Fn(&str) -> Option<String>,
    diags: Vec<Diagnostic>,
}

impl<'a> Cx<'a> {
    pub fn new(file: &'a str, text: &'a str, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            file,
            lines: LineIndex::new(text),
            env,
            diags: Vec::new(),
        }
    }

    /// Records a problem at the start of `span`.
    pub fn error(
        &mut self,
        span: &Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = self.lines.position(span.start);
        self.diags.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    /// A variable of the environment the document is read with (the standard
    /// `OTEL_EXPORTER_OTLP_*` fallbacks of `[telemetry]`); an empty value counts as unset.
    /// Line and column of a byte offset of the document.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        self.lines.position(offset)
    }

    /// The file name diagnostics carry.
    pub fn file(&self) -> &str {
        self.file
    }

    pub fn env_var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    pub fn has_errors(&self) -> bool {
        !self.diags.is_empty()
    }

    /// Every diagnostic, by position (ties keep a stable, content-based order).
    pub fn into_diagnostics(self) -> Diagnostics {
        let mut diags = self.diags;
        diags.sort_by(|a, b| {
            (a.line, a.column, &a.key, &a.message).cmp(&(b.line, b.column, &b.key, &b.message))
        });
        diags.dedup();
        Diagnostics(diags)
    }

    /// A string value with `${VAR}` substituted; `None` (reported) if it is not a string or
    /// a variable is missing. `secret` keeps the value out of every message.
    pub fn string(&mut self, key: &str, v: &Val<'_>, secret: bool) -> Option<String> {
        match self.scalar(key, v)? {
            Scalar::Str(s) => Some(s),
            other => {
                let found = other.describe(secret);
                self.error(&v.span(), key, format!("expected a string, found {found}"));
                None
            }
        }
    }

    /// A value as a [`Scalar`], strings substituted; arrays, tables and datetimes become
    /// [`Scalar::Other`] so that each converter can say what it expected instead.
    pub fn scalar(&mut self, key: &str, v: &Val<'_>) -> Option<Scalar> {
        let scalar = match v.get_ref() {
            DeValue::String(s) => match substitute(s, self.env) {
                Ok(s) => Scalar::Str(s),
                Err(messages) => {
                    for m in messages {
                        self.error(&v.span(), key, m);
                    }
                    return None;
                }
            },
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Scalar::Int(n),
                Err(_) => {
                    self.error(&v.span(), key, "integer out of range");
                    return None;
                }
            },
            DeValue::Float(f) => Scalar::Float(f.as_str().to_owned()),
            DeValue::Boolean(b) => Scalar::Bool(*b),
            other => Scalar::Other(describe_kind(other)),
        };
        Some(scalar)
    }

    /// The source text of `span` (empty if out of range).
    pub fn source(&self, span: &Range<usize>) -> &str {
        self.lines.text.get(span.clone()).unwrap_or("")
    }

    /// An array of strings (each substituted) with the span of each element.
    pub fn string_list(&mut self, key: &str, v: &Val<'_>) -> Option<Vec<Spanned<String>>> {
        let DeValue::Array(items) = v.get_ref() else {
            let found = describe_kind(v.get_ref());
            self.error(
                &v.span(),
                key,
                format!(r#"expected an array of strings like ["a", "b"], found {found}"#),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            match self.string(key, item, false) {
                Some(s) => out.push(Spanned::new(item.span(), s)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A table value as a [`Node`] to read from; reported if it is something else.
    pub fn table<'t, 'i>(&mut self, key: &str, v: &'t Val<'i>) -> Option<Node<'t, 'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(Node::new(key.to_owned(), v.span(), t)),
            other => {
                let found = describe_kind(other);
                self.error(&v.span(), key, format!("expected a table, found {found}"));
                None
            }
        }
    }

    /// A required key of `node`: reported at the table when missing.
    pub fn required<'t, 'i>(
        &mut self,
        node: &mut Node<'t, 'i>,
        key: &'static str,
    ) -> Option<&'t Val<'i>> {
        let v = node.take(key);
        if v.is_none() {
            let path = node.key(key);
            let span = node.span.clone();
            self.error(&span, path, format!("missing required key `{key}`"));
        }
        v
    }

    /// A required non-empty string.
    pub fn required_string(
        &mut self,
        node: &mut Node<'_, '_>,
        key: &'static str,
        secret: bool,
    ) -> Option<String> {
        let v = self.required(node, key)?;
        let path = node.key(key);
        let s = self.string(&path, v, secret)?;
        if s.trim().is_empty() {
            self.error(&v.span(), path, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// An optional string; an empty one (after substitution) counts as not set.
    pub fn optional_string(
        &mut self,
        node: &mut Node<'_, '_>,
        key: &'static str,
        secret: bool,
    ) -> Option<String> {
        let v = node.take(key)?;
        let s = self.string(&node.key(key), v, secret)?;
        (!s.is_empty()).then_some(s)
    }

    /// A required value converted by `convert`: reported at the table when missing, at the
    /// value when empty or when `convert` refuses it.
    pub fn required_value<T>(
        &mut self,
        node: &mut Node<'_, '_>,
        key: &'static str,
        convert: impl FnOnce(&Scalar) -> Result<T, String>,
    ) -> Option<T> {
        let v = self.required(node, key)?;
        let path = node.key(key);
        let scalar = self.scalar(&path, v)?;
        if matches!(&scalar, Scalar::Str(s) if s.trim().is_empty()) {
            self.error(&v.span(), path, "must not be empty");
            return None;
        }
        match convert(&scalar) {
            Ok(t) => Some(t),
            Err(message) => {
                self.error(&v.span(), path, message);
                None
            }
        }
    }

    /// An optional value converted by `convert`; an empty string counts as not set, so
    /// `"${VAR:-}"` falls back to the default. Conversion errors are reported at the value.
    pub fn optional<T>(
        &mut self,
        node: &mut Node<'_, '_>,
        key: &'static str,
        convert: impl FnOnce(&Scalar) -> Result<T, String>,
    ) -> Option<T> {
        let v = node.take(key)?;
        let path = node.key(key);
        let scalar = self.scalar(&path, v)?;
        if matches!(&scalar, Scalar::Str(s) if s.is_empty()) {
            return None;
        }
        match convert(&scalar) {
            Ok(t) => Some(t),
            Err(message) => {
                self.error(&v.span(), path, message);
                None
            }
        }
    }
}

/// The text of a string value, for converters that take nothing else.
pub fn to_text(s: &Scalar) -> Result<&str, String> {
    match s {
        Scalar::Str(t) => Ok(t),
        other => Err(format!(
            "expected a string, found {}",
            other.describe(false)
        )),
    }
}

/// A scalar config value after substitution.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    /// As written, so it can be handed on (to librdkafka) without rounding.
    Float(String),
    Bool(bool),
    /// An array, table or datetime, by description ("an array").
    Other(&'static str),
}

impl Scalar {
    /// For messages: the value itself unless secret.
    pub fn describe(&self, secret: bool) -> String {
        match (self, secret) {
            (Scalar::Str(s), false) => format!("{s:?}"),
            (Scalar::Int(n), false) => n.to_string(),
            (Scalar::Float(f), false) => f.clone(),
            (Scalar::Bool(b), false) => b.to_string(),
            (Scalar::Str(_), true) => "a string".to_owned(),
            (Scalar::Int(_), true) => "an integer".to_owned(),
            (Scalar::Float(_), true) => "a float".to_owned(),
            (Scalar::Bool(_), true) => "a boolean".to_owned(),
            (Scalar::Other(kind), _) => (*kind).to_owned(),
        }
    }

    /// The value as a string, as librdkafka takes every property; `None` for
    /// [`Scalar::Other`].
    pub fn into_text(self) -> Option<String> {
        match self {
            Scalar::Str(s) | Scalar::Float(s) => Some(s),
            Scalar::Int(n) => Some(n.to_string()),
            Scalar::Bool(b) => Some(b.to_string()),
            Scalar::Other(_) => None,
        }
    }
}

/// `true`/`false`, also as strings so that `"${VAR:-false}"` works.
pub fn to_bool(s: &Scalar) -> Result<bool, String> {
    match s {
        Scalar::Bool(b) => Ok(*b),
        Scalar::Str(t) if t.eq_ignore_ascii_case("true") => Ok(true),
        Scalar::Str(t) if t.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(format!(
            "expected true or false, found {}",
            other.describe(false)
        )),
    }
}

/// A positive integer, also as a string of digits (`"${BATCH:-1000}"`).
pub fn to_positive(s: &Scalar) -> Result<usize, String> {
    let n = match s {
        Scalar::Int(n) => Some(*n),
        Scalar::Str(t) => t.trim().replace('_', "").parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n > 0 => usize::try_from(n).map_err(|_| "integer out of range".to_owned()),
        Some(n) => Err(format!("must be greater than 0, found {n}")),
        None => Err(format!(
            "expected a positive integer, found {}",
            s.describe(false)
        )),
    }
}

/// A size: a string like `"64KiB"` or a whole number of bytes.
pub fn to_size(s: &Scalar) -> Result<u64, String> {
    match s {
        Scalar::Str(t) => super::units::parse_size(t),
        Scalar::Int(n) => {
            u64::try_from(*n).map_err(|_| super::units::size_expected(&n.to_string()))
        }
        other => Err(super::units::size_expected(&other.describe(false))),
    }
}

/// A duration: a string like `"250ms"`.
pub fn to_duration(s: &Scalar) -> Result<std::time::Duration, String> {
    match s {
        Scalar::Str(t) => super::units::parse_duration(t),
        Scalar::Int(n) => Err(format!(
            "{} (a duration is a string with a unit, e.g. \"{n}ms\")",
            super::units::duration_expected(&n.to_string())
        )),
        other => Err(super::units::duration_expected(&other.describe(false))),
    }
}

/// `path.key`, with `key` quoted as TOML would need it (`sources."my source"`).
pub fn join_key(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// "an array", "a table", ... for type errors (never the value: it may be secret).
pub fn describe_kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// One table being read: its dotted path, its span (the `[header]`, or the inline table) and
/// the keys asked for so far.
pub struct Node<'t, 'i> {
    pub path: String,
    pub span: Range<usize>,
    table: &'t DeTable<'i>,
    used: Vec<&'static str>,
    quiet: Vec<&'static str>,
}

impl<'t, 'i> Node<'t, 'i> {
    pub fn new(path: String, span: Range<usize>, table: &'t DeTable<'i>) -> Self {
        Self {
            path,
            span,
            table,
            used: Vec::new(),
            quiet: Vec::new(),
        }
    }

    /// The dotted path of `key` in this table.
    pub fn key(&self, key: &str) -> String {
        join_key(&self.path, key)
    }

    /// The value of `key`, marking the key as known.
    pub fn take(&mut self, key: &'static str) -> Option<&'t Val<'i>> {
        self.used.push(key);
        self.table.get(key)
    }

    /// The value of `key`, accepted (not reported as unknown) but not offered as a
    /// suggestion: for keys that are only read to explain why they do not belong.
    pub fn take_quietly(&mut self, key: &'static str) -> Option<&'t Val<'i>> {
        self.quiet.push(key);
        self.table.get(key)
    }

    /// The span of `key`'s value, without marking it.
    pub fn span_of(&self, key: &str) -> Option<Range<usize>> {
        self.table.get(key).map(|v| v.span())
    }

    /// Every entry: key (with its span) and value.
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = (&'t Spanned<std::borrow::Cow<'i, str>>, &'t Val<'i>)> {
        self.table.iter()
    }

    /// Reports every key that was never asked for.
    pub fn finish(self, cx: &mut Cx<'_>) {
        for (key, _) in self.table.iter() {
            let name: &str = key.get_ref();
            if self.used.iter().chain(&self.quiet).any(|k| *k == name) {
                continue;
            }
            let message = match did_you_mean(name, self.used.iter().copied()) {
                Some(close) => format!("unknown key `{name}`, did you mean `{close}`?"),
                None => {
                    let mut known = self.used.clone();
                    known.sort_unstable();
                    known.dedup();
                    format!("unknown key `{name}`; known keys: {}", known.join(", "))
                }
            };
            cx.error(&key.span(), self.key(name), message);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let idx = LineIndex::new("ab\nçd = 1\n\nx");
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(1), (1, 2));
        assert_eq!(idx.position(3), (2, 1));
        // `ç` is two bytes but one column.
        assert_eq!(idx.position(5), (2, 2));
        assert_eq!(idx.position(11), (3, 1));
        assert_eq!(idx.position(12), (4, 1));
        // Past the end (an error at end of file) stays on the last line.
        assert_eq!(idx.position(999), (4, 2));
    }

    #[test]
    fn scalar_conversions() {
        assert_eq!(to_bool(&Scalar::Str("TRUE".into())), Ok(true));
        assert_eq!(to_bool(&Scalar::Bool(false)), Ok(false));
        assert!(to_bool(&Scalar::Str("yes".into())).is_err());
        assert_eq!(to_positive(&Scalar::Str("100_000".into())), Ok(100_000));
        assert_eq!(to_positive(&Scalar::Int(5)), Ok(5));
        assert_eq!(
            to_positive(&Scalar::Int(0)),
            Err("must be greater than 0, found 0".to_owned())
        );
        assert_eq!(to_size(&Scalar::Int(512)), Ok(512));
        assert!(to_size(&Scalar::Int(-1)).is_err());
        assert!(to_duration(&Scalar::Int(250))
            .unwrap_err()
            .contains(r#"found 250 (a duration is a string with a unit, e.g. "250ms")"#));
        assert_eq!(
            to_text(&Scalar::Other("an array")).unwrap_err(),
            "expected a string, found an array"
        );
        assert_eq!(join_key("sources", "my source"), r#"sources."my source""#);
        assert_eq!(join_key("", "sinks"), "sinks");
        assert_eq!(Scalar::Str("pw".into()).describe(true), "a string");
        assert_eq!(Scalar::Float("0.5".into()).into_text().unwrap(), "0.5");
        assert_eq!(Scalar::Other("a table").into_text(), None);
    }
}
