//! `[sources.*]`, `[transforms.*]` and `[sinks.*]`: dispatch on each component's `type`,
//! the `sql` transform, and the `inputs` list shared by transforms and sinks. The `window`
//! transform has a module of its own ([`super::window`]).
//!
//! Adding a component type means: a variant in [`super::model`], a parse function, and a
//! line in the `*_TYPES` table below (which also feeds the "known types" messages).

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::graph::{Component, Kind};
use super::model::*;
use super::reader::{join_key, to_text, Cx, Node, Val};
use super::suggest::did_you_mean;
use super::{delta, kafka, otlp, window};

const SOURCE_TYPES: &[&str] = &["kafka", "otlp"];
const TRANSFORM_TYPES: &[&str] = &["sql", "window"];
const SINK_TYPES: &[&str] = &["delta"];

impl Kind {
    fn types(self) -> &'static [&'static str] {
        match self {
            Kind::Source => SOURCE_TYPES,
            Kind::Transform => TRANSFORM_TYPES,
            Kind::Sink => SINK_TYPES,
        }
    }
}

/// Every component read from the document, plus what the graph checks need.
#[derive(Default)]
pub struct Components {
    pub sources: BTreeMap<String, SourceConfig>,
    pub transforms: BTreeMap<String, TransformConfig>,
    pub sinks: BTreeMap<String, SinkConfig>,
    pub graph: Vec<Component>,
    /// Span of each section's table when present (for "no source" messages).
    pub section_spans: [Option<Range<usize>>; 3],
}

/// The `inputs` of a transform or sink, with where each was written.
pub struct Inputs {
    /// `None` when missing or invalid (already reported).
    pub list: Option<Vec<Spanned<String>>>,
}

impl Inputs {
    pub fn names(&self) -> Option<Vec<String>> {
        self.list
            .as_ref()
            .map(|l| l.iter().map(|s| s.get_ref().clone()).collect())
    }
}

/// Reads the required, non-empty, duplicate-free `inputs` of `node`.
pub fn inputs(cx: &mut Cx<'_>, node: &mut Node<'_, '_>) -> Inputs {
    let none = Inputs { list: None };
    let Some(v) = cx.required(node, "inputs") else {
        return none;
    };
    let key = node.key("inputs");
    let Some(list) = cx.string_list(&key, v) else {
        return none;
    };
    if list.is_empty() {
        cx.error(
            &v.span(),
            key,
            "must list at least one input (a source or transform id)",
        );
        return none;
    }
    let mut ok = true;
    for (i, item) in list.iter().enumerate() {
        if list[..i]
            .iter()
            .any(|earlier| earlier.get_ref() == item.get_ref())
        {
            cx.error(
                &item.span(),
                key.clone(),
                format!("input `{}` is listed twice", item.get_ref()),
            );
            ok = false;
        }
    }
    Inputs {
        list: ok.then_some(list),
    }
}

/// Reads the three component sections of the root table.
pub fn parse(cx: &mut Cx<'_>, root: &mut Node<'_, '_>) -> Components {
    let mut out = Components::default();
    for (i, kind) in [Kind::Source, Kind::Transform, Kind::Sink]
        .into_iter()
        .enumerate()
    {
        let Some(section) = root.take(kind.section()) else {
            continue;
        };
        out.section_spans[i] = Some(section.span());
        let Some(node) = cx.table(kind.section(), section) else {
            continue;
        };
        for (id, value) in node.entries() {
            component(cx, kind, id, value, &mut out);
        }
    }
    out
}

fn component(
    cx: &mut Cx<'_>,
    kind: Kind,
    id: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Val<'_>,
    out: &mut Components,
) {
    let name = id.get_ref().to_string();
    let path = join_key(kind.section(), &name);
    let mut entry = Component {
        kind,
        id: name.clone(),
        id_span: id.span(),
        inputs: None,
        inputs_key: join_key(&path, "inputs"),
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        || name.is_empty()
    {
        cx.error(
            &id.span(),
            path.clone(),
            format!(
                "invalid {} id {name:?}: use letters, digits, '_' and '-'",
                kind.noun()
            ),
        );
    }
    let Some(mut node) = cx.table(&path, value) else {
        out.graph.push(entry);
        return;
    };
    let Some(ty) = component_type(cx, kind, &mut node) else {
        out.graph.push(entry);
        return;
    };
    match (kind, ty.as_str()) {
        (Kind::Source, "kafka") => {
            if let Some(c) = kafka::parse(cx, node) {
                out.sources.insert(name, SourceConfig::Kafka(c));
            }
        }
        (Kind::Source, "otlp") => {
            if let Some(c) = otlp::parse(cx, node) {
                out.sources.insert(name, SourceConfig::Otlp(c));
            }
        }
        (Kind::Transform, "sql") => {
            let inputs = inputs(cx, &mut node);
            let sql = cx.required_value(&mut node, "sql", |s| to_text(s).map(str::to_owned));
            node.finish(cx);
            if let (Some(inputs), Some(sql)) = (inputs.names(), sql) {
                out.transforms.insert(
                    name,
                    TransformConfig::Sql(SqlTransformConfig { inputs, sql }),
                );
            }
            entry.inputs = inputs.list;
        }
        (Kind::Transform, "window") => {
            let (config, inputs) = window::parse(cx, &name, node);
            if let Some(c) = config {
                out.transforms.insert(name, TransformConfig::Window(c));
            }
            entry.inputs = inputs.list;
        }
        (Kind::Sink, "delta") => {
            let (config, inputs) = delta::parse(cx, node);
            if let Some(c) = config {
                out.sinks.insert(name, SinkConfig::Delta(c));
            }
            entry.inputs = inputs.list;
        }
        // `component_type` only returns known types.
        _ => {}
    }
    out.graph.push(entry);
}

/// The component's `type`, if present and known for its kind; reported otherwise.
fn component_type(cx: &mut Cx<'_>, kind: Kind, node: &mut Node<'_, '_>) -> Option<String> {
    let known = kind.types();
    let Some(v) = node.take("type") else {
        cx.error(
            &node.span.clone(),
            node.key("type"),
            format!("missing required key `type` (one of: {})", known.join(", ")),
        );
        return None;
    };
    let key = node.key("type");
    let ty = cx.string(&key, v, false)?;
    if known.contains(&ty.as_str()) {
        return Some(ty);
    }
    let mut message = format!("unknown {} type {ty:?}", kind.noun());
    if let Some(close) = did_you_mean(&ty, known.iter().copied()) {
        message.push_str(&format!(", did you mean {close:?}?"));
    }
    message.push_str(&format!(
        " (known {} types: {})",
        kind.noun(),
        known.join(", ")
    ));
    if let Some(other) = [Kind::Source, Kind::Transform, Kind::Sink]
        .into_iter()
        .find(|k| k.types().contains(&ty.as_str()))
    {
        message.push_str(&format!("; {ty:?} is a {} type", other.noun()));
    }
    cx.error(&v.span(), key, message);
    None
}
