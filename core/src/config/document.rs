//! The whole document: TOML syntax, the top-level tables, `[pipeline]`, and the assembly of
//! a [`Config`] once nothing is left to report.
//!
//! Syntax errors are reported alone: toml recovers from them, but what it recovers is a
//! guess, and checking a guessed document would add confusing follow-on errors.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::model::{Config, PipelineSection, DEFAULT_PIPELINE_NAME};
use super::reader::{to_text, Cx, LineIndex, Node, Val};
use super::{
    components, exports, graph, metrics, schema_overrides, telemetry, Diagnostic, Diagnostics,
};
use crate::schema::SchemaSpec;

/// Parses and validates `text`; see [`super::from_str`].
pub fn from_str(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Diagnostics> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        return Err(syntax_diagnostics(
            text,
            file,
            root.get_ref(),
            &syntax_errors,
        ));
    }
    let mut cx = Cx::new(file, text, env);
    let mut root = Node::new(String::new(), root.span(), root.get_ref());

    let pipeline = pipeline(&mut cx, root.take("pipeline"));
    let overrides = schema_overrides::parse(&mut cx, root.take("schema"));
    let telemetry = telemetry::parse(&mut cx, root.take("telemetry"));
    let exports = exports::parse(&mut cx, root.take("exports"));
    let metrics = metrics::parse(&mut cx, root.take("metrics"));
    let parsed = components::parse(&mut cx, &mut root);
    graph::check(&mut cx, &parsed.graph, &parsed.section_spans);
    root.finish(&mut cx);

    let schema = match SchemaSpec::preset_with(&overrides.spec) {
        Ok(schema) => {
            schema_overrides::check_routing(&mut cx, &schema, &overrides);
            schema
        }
        Err(e) => {
            cx.error(&(0..0), "schema", e.to_string());
            SchemaSpec::default()
        }
    };

    if cx.has_errors() {
        return Err(cx.into_diagnostics());
    }
    Ok(Config {
        file: file.to_owned(),
        pipeline,
        schema,
        sources: parsed.sources,
        transforms: parsed.transforms,
        sinks: parsed.sinks,
        telemetry,
        exports,
        metrics,
    })
}

fn pipeline(cx: &mut Cx<'_>, value: Option<&Val<'_>>) -> PipelineSection {
    let Some(mut node) = value.and_then(|v| cx.table("pipeline", v)) else {
        return PipelineSection::default();
    };
    let name = cx.optional(&mut node, "name", |s| {
        let name = to_text(s)?;
        if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            Ok(name.to_owned())
        } else {
            Err(format!(
                "invalid pipeline name {name:?}: use letters, digits, '_', '.' and '-' (it is part of the lake's transaction ids)"
            ))
        }
    });
    node.finish(cx);
    PipelineSection {
        name: name.unwrap_or_else(|| DEFAULT_PIPELINE_NAME.to_owned()),
    }
}

/// toml's own message and position for each syntax error; the key is the deepest entry of
/// the recovered document around the error, or the last table header before it.
fn syntax_diagnostics(
    text: &str,
    file: &str,
    root: &DeTable<'_>,
    errors: &[toml::de::Error],
) -> Diagnostics {
    let lines = LineIndex::new(text);
    let mut diags: Vec<Diagnostic> = errors
        .iter()
        .map(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, column) = lines.position(offset);
            let mut found = Found::default();
            locate(text, root, "", offset, &mut found);
            let key = found
                .inside
                .map(|(_, k)| k)
                .or(found.header.map(|(_, k)| k))
                .unwrap_or_else(|| "toml".to_owned());
            Diagnostic {
                file: file.to_owned(),
                line,
                column,
                key,
                message: e.message().trim().to_owned(),
            }
        })
        .collect();
    diags.sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
    diags.dedup();
    Diagnostics(diags)
}

#[derive(Default)]
struct Found {
    /// Smallest key-and-value range containing the offset: (length, path).
    inside: Option<(usize, String)>,
    /// Last `[header]` starting before the offset: (start, path).
    header: Option<(usize, String)>,
}

fn locate(text: &str, table: &DeTable<'_>, path: &str, offset: usize, found: &mut Found) {
    for (k, v) in table.iter() {
        let p = if path.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{path}.{}", k.get_ref())
        };
        locate_value(text, k, v, &p, offset, found);
    }
}

fn locate_value(
    text: &str,
    k: &Spanned<std::borrow::Cow<'_, str>>,
    v: &Val<'_>,
    path: &str,
    offset: usize,
    found: &mut Found,
) {
    let vs = v.span();
    let is_header = text.get(vs.clone()).is_some_and(|s| s.starts_with('['))
        && matches!(v.get_ref(), DeValue::Table(_));
    if is_header {
        if vs.start <= offset && found.header.as_ref().is_none_or(|(s, _)| *s <= vs.start) {
            found.header = Some((vs.start, path.to_owned()));
        }
    } else {
        let start = k.span().start.min(vs.start);
        let end = k.span().end.max(vs.end);
        if start <= offset
            && offset <= end
            && found
                .inside
                .as_ref()
                .is_none_or(|(len, _)| end - start <= *len)
        {
            found.inside = Some((end - start, path.to_owned()));
        }
    }
    match v.get_ref() {
        DeValue::Table(t) => locate(text, t, path, offset, found),
        DeValue::Array(items) => {
            for item in items.iter() {
                if let DeValue::Table(t) = item.get_ref() {
                    let item_is_header = text.get(item.span()).is_some_and(|s| s.starts_with('['));
                    if item_is_header && item.span().start <= offset {
                        found.header = Some((item.span().start, path.to_owned()));
                    }
                    locate(text, t, path, offset, found);
                }
            }
        }
        _ => {}
    }
}
