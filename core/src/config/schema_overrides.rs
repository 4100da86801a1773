//! `[schema.tables.<name>]`: event tables that replace or extend the built-in preset.
//!
//! Read by hand rather than through `SchemaSpec`'s serde impl so that every bad column is
//! reported with its place, and checked for what would only fail later: a column named like
//! an envelope column, a money column without its currency, one event type routed to two
//! tables.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::de::DeValue;
use toml::Spanned;

use super::reader::{join_key, to_bool, Cx, Node, Val};
use super::suggest::did_you_mean;
use crate::schema::{
    ColumnSpec, ColumnType, SchemaSpec, TableSpec, COMMON_COLUMNS, DLQ_TABLE, EXTRA_COLUMN,
};

/// Column types by their config spelling (as `ColumnType`'s serde names).
pub const COLUMN_TYPES: &[(&str, ColumnType)] = &[
    ("string", ColumnType::String),
    ("dict", ColumnType::Dict),
    ("int32", ColumnType::Int32),
    ("int64", ColumnType::Int64),
    ("float64", ColumnType::Float64),
    ("bool", ColumnType::Bool),
    ("timestamp", ColumnType::Timestamp),
    ("money", ColumnType::Money),
    ("currency", ColumnType::Currency),
];

/// The overrides read, and where each table's event types were written.
#[derive(Default)]
pub struct Overrides {
    pub spec: SchemaSpec,
    event_types: BTreeMap<String, (String, Vec<Spanned<String>>)>,
}

/// Reads `[schema]`.
pub fn parse(cx: &mut Cx<'_>, value: Option<&Val<'_>>) -> Overrides {
    let mut out = Overrides::default();
    let Some(mut schema) = value.and_then(|v| cx.table("schema", v)) else {
        return out;
    };
    if let Some(tables) = schema.take("tables") {
        if let Some(tables) = cx.table("schema.tables", tables) {
            for (name, v) in tables.entries() {
                let name = name.get_ref().to_string();
                let path = join_key("schema.tables", &name);
                let Some(node) = cx.table(&path, v) else {
                    continue;
                };
                if let Some((table, spans)) = table(cx, &name, node) {
                    out.event_types.insert(name.clone(), (path, spans));
                    out.spec.tables.insert(name, table);
                }
            }
        }
    }
    schema.finish(cx);
    out
}

fn table(
    cx: &mut Cx<'_>,
    name: &str,
    mut node: Node<'_, '_>,
) -> Option<(TableSpec, Vec<Spanned<String>>)> {
    let mut ok = true;
    if name == DLQ_TABLE {
        cx.error(
            &node.span.clone(),
            node.path.clone(),
            format!("`{DLQ_TABLE}` is the table of bad records and cannot be redefined"),
        );
        ok = false;
    } else if !is_identifier(name) {
        cx.error(
            &node.span.clone(),
            node.path.clone(),
            format!("invalid table name {name:?}: use letters, digits and '_', not starting with a digit"),
        );
        ok = false;
    }
    let event_types = event_types(cx, &mut node);
    let columns = match cx.required(&mut node, "columns") {
        Some(v) => columns(cx, &node.key("columns"), v),
        None => None,
    };
    node.finish(cx);
    let event_types = event_types?;
    let spec = TableSpec {
        name: name.to_owned(),
        event_types: event_types.iter().map(|s| s.get_ref().clone()).collect(),
        columns: columns?,
    };
    ok.then_some((spec, event_types))
}

fn event_types(cx: &mut Cx<'_>, node: &mut Node<'_, '_>) -> Option<Vec<Spanned<String>>> {
    let v = cx.required(node, "event_types")?;
    let key = node.key("event_types");
    let list = cx.string_list(&key, v)?;
    if list.is_empty() {
        cx.error(&v.span(), key, "must list at least one event type");
        return None;
    }
    let mut ok = true;
    for (i, item) in list.iter().enumerate() {
        if item.get_ref().trim().is_empty() {
            cx.error(&item.span(), key.clone(), "an event type must not be empty");
            ok = false;
        } else if list[..i].iter().any(|e| e.get_ref() == item.get_ref()) {
            cx.error(
                &item.span(),
                key.clone(),
                format!("event type {:?} is listed twice", item.get_ref()),
            );
            ok = false;
        }
    }
    ok.then_some(list)
}

fn columns(cx: &mut Cx<'_>, key: &str, v: &Val<'_>) -> Option<Vec<ColumnSpec>> {
    let DeValue::Array(items) = v.get_ref() else {
        cx.error(&v.span(), key, format!("expected an array of column tables like [{{ name = \"order_id\", type = \"string\" }}], found {}", super::reader::describe_kind(v.get_ref())));
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = format!("{key}[{i}]");
        let Some(node) = cx.table(&path, item) else {
            ok = false;
            continue;
        };
        match column(cx, node) {
            Some((c, name_span)) => {
                if out.iter().any(|o: &ColumnSpec| o.name == c.name) {
                    cx.error(
                        &name_span,
                        format!("{path}.name"),
                        format!("column `{}` is defined twice", c.name),
                    );
                    ok = false;
                }
                out.push(c);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn column(cx: &mut Cx<'_>, mut node: Node<'_, '_>) -> Option<(ColumnSpec, Range<usize>)> {
    let name_span = node.span_of("name").unwrap_or_else(|| node.span.clone());
    let name = cx.required_string(&mut node, "name", false);
    let mut ok = true;
    if let Some(n) = &name {
        let problem = if COMMON_COLUMNS.contains(&n.as_str()) || n == EXTRA_COLUMN {
            Some(format!(
                "`{n}` is an envelope column of every table; pick another name"
            ))
        } else if !is_identifier(n) {
            Some(format!(
                "invalid column name {n:?}: use letters, digits and '_', not starting with a digit"
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            cx.error(&name_span, node.key("name"), message);
            ok = false;
        }
    }
    let kind = column_type(cx, &mut node);
    let fields = match node.take("fields") {
        Some(v) => cx
            .string_list(&node.key("fields"), v)
            .map(|l| l.into_iter().map(Spanned::into_inner).collect()),
        None => Some(Vec::new()),
    };
    let currency_span = node.span_of("currency");
    let currency = cx.optional_string(&mut node, "currency", false);
    let required = cx.optional(&mut node, "required", to_bool).unwrap_or(false);
    match (kind, &currency, currency_span) {
        (Some(ColumnType::Money), None, _) => {
            cx.error(
                &node.span.clone(),
                node.key("currency"),
                "a money column needs `currency`: the JSON path of its ISO 4217 currency code",
            );
            ok = false;
        }
        (Some(k), Some(_), Some(span)) if k != ColumnType::Money => {
            cx.error(
                &span,
                node.key("currency"),
                "only money columns take `currency`",
            );
            ok = false;
        }
        _ => {}
    }
    node.finish(cx);
    let spec = ColumnSpec {
        name: name?,
        kind: kind?,
        fields: fields?,
        currency,
        required,
    };
    ok.then_some((spec, name_span))
}

fn column_type(cx: &mut Cx<'_>, node: &mut Node<'_, '_>) -> Option<ColumnType> {
    let v = cx.required(node, "type")?;
    let key = node.key("type");
    let ty = cx.string(&key, v, false)?;
    if let Some((_, t)) = COLUMN_TYPES.iter().find(|(n, _)| *n == ty) {
        return Some(*t);
    }
    let names: Vec<&str> = COLUMN_TYPES.iter().map(|(n, _)| *n).collect();
    let hint = did_you_mean(&ty, names.iter().copied())
        .map(|c| format!(", did you mean {c:?}?"))
        .unwrap_or_default();
    cx.error(
        &v.span(),
        key,
        format!(
            "unknown column type {ty:?}{hint} (known types: {})",
            names.join(", ")
        ),
    );
    None
}

/// After merging with the preset: every event type must go to exactly one table.
pub fn check_routing(cx: &mut Cx<'_>, merged: &SchemaSpec, overrides: &Overrides) {
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    // Preset tables first, so that the message points at the override that collides.
    let preset_first = merged
        .tables
        .iter()
        .filter(|(n, _)| !overrides.event_types.contains_key(*n))
        .chain(
            merged
                .tables
                .iter()
                .filter(|(n, _)| overrides.event_types.contains_key(*n)),
        );
    for (table, spec) in preset_first {
        for (i, event_type) in spec.event_types.iter().enumerate() {
            match owner.get(event_type.as_str()) {
                Some(first) if *first != table.as_str() => {
                    if let Some((path, spans)) = overrides.event_types.get(table) {
                        let span = spans.get(i).map_or(0..0, Spanned::span);
                        cx.error(
                            &span,
                            format!("{path}.event_types"),
                            format!("event type {event_type:?} is already routed to table `{first}`; an event type goes to one table"),
                        );
                    }
                }
                _ => {
                    owner.insert(event_type, table);
                }
            }
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn column_type_names_match_the_serde_names() {
        for (name, ty) in COLUMN_TYPES {
            let parsed = ColumnType::deserialize(serde::de::value::StrDeserializer::<
                serde::de::value::Error,
            >::new(name))
            .unwrap();
            assert_eq!(parsed, *ty, "{name}");
        }
    }
}
