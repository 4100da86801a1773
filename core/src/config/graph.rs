//! Checks on the pipeline as a graph: ids unique across kinds, every input names an existing
//! source or transform, no cycle among transforms, at least one source and one sink.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;

use super::reader::{join_key, Cx};
use super::suggest::did_you_mean;

/// The three kinds of component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Source,
    Transform,
    Sink,
}

impl Kind {
    /// The top-level table it lives in.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Source => "sources",
            Kind::Transform => "transforms",
            Kind::Sink => "sinks",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Transform => "transform",
            Kind::Sink => "sink",
        }
    }
}

/// One component as the graph sees it; `inputs` is `None` for sources and for components
/// whose inputs could not be read (already reported).
pub struct Component {
    pub kind: Kind,
    pub id: String,
    pub id_span: Range<usize>,
    pub inputs: Option<Vec<Spanned<String>>>,
    pub inputs_key: String,
}

/// Runs every graph check; `section_spans` are the spans of `sources`, `transforms` and
/// `sinks` when present.
pub fn check(cx: &mut Cx<'_>, components: &[Component], section_spans: &[Option<Range<usize>>; 3]) {
    let mut by_id: BTreeMap<&str, &Component> = BTreeMap::new();
    for c in components {
        match by_id.get(c.id.as_str()) {
            Some(first) if first.kind != c.kind => cx.error(
                &c.id_span,
                join_key(c.kind.section(), &c.id),
                format!(
                    "id `{}` is already used by a {}; ids must be unique across sources, transforms and sinks",
                    c.id,
                    first.kind.noun()
                ),
            ),
            Some(_) => {}
            None => {
                by_id.insert(&c.id, c);
            }
        }
    }
    check_inputs(cx, components, &by_id);
    check_cycles(cx, &by_id);
    for (i, kind) in [Kind::Source, Kind::Sink].into_iter().enumerate() {
        if components.iter().any(|c| c.kind == kind) {
            continue;
        }
        let span = section_spans[i * 2].clone().unwrap_or(0..0);
        let example = if kind == Kind::Source {
            "kafka"
        } else {
            "delta"
        };
        cx.error(
            &span,
            kind.section(),
            format!(
                "the pipeline has no {}; add a [{}.<id>] table, e.g. with type = \"{example}\"",
                kind.noun(),
                kind.section()
            ),
        );
    }
}

fn check_inputs(cx: &mut Cx<'_>, components: &[Component], by_id: &BTreeMap<&str, &Component>) {
    let feeders: Vec<&str> = by_id
        .values()
        .filter(|c| c.kind != Kind::Sink)
        .map(|c| c.id.as_str())
        .collect();
    for c in components {
        for input in c.inputs.iter().flatten() {
            let name = input.get_ref().as_str();
            let message = match by_id.get(name) {
                Some(target) if target.kind == Kind::Sink => {
                    format!("input `{name}` is a sink; inputs name sources or transforms")
                }
                Some(_) => continue,
                None => match did_you_mean(name, feeders.iter().copied()) {
                    Some(close) => format!("unknown input `{name}`, did you mean `{close}`?"),
                    None if feeders.is_empty() => {
                        format!("unknown input `{name}`; there is no source or transform")
                    }
                    None => format!(
                        "unknown input `{name}`; sources and transforms: {}",
                        feeders.join(", ")
                    ),
                },
            };
            cx.error(&input.span(), c.inputs_key.clone(), message);
        }
    }
}

/// Finds cycles among transforms by depth-first search and reports each once, in data-flow
/// order starting from its smallest id: `a -> b -> a` means `a` feeds `b` and `b` feeds `a`.
fn check_cycles(cx: &mut Cx<'_>, by_id: &BTreeMap<&str, &Component>) {
    // Only transforms that own their id: a transform clashing with a source is reported
    // already, and an input naming that id means the source.
    let transforms: BTreeMap<&str, &Component> = by_id
        .iter()
        .filter(|(_, c)| c.kind == Kind::Transform)
        .map(|(id, c)| (*id, *c))
        .collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut cycles: BTreeSet<Vec<&str>> = BTreeSet::new();
    for &start in transforms.keys() {
        if done.contains(start) {
            continue;
        }
        // Iterative DFS: the stack holds (node, its remaining successors).
        let mut path: Vec<&str> = vec![start];
        let mut stack: Vec<Vec<&str>> = vec![reads_from(&transforms, start)];
        while let Some(next) = stack.last_mut().map(|s| s.pop()) {
            match next {
                None => {
                    stack.pop();
                    if let Some(node) = path.pop() {
                        done.insert(node);
                    }
                }
                Some(n) if done.contains(n) => {}
                Some(n) => {
                    if let Some(pos) = path.iter().position(|&p| p == n) {
                        cycles.insert(canonical(&path[pos..]));
                    } else {
                        path.push(n);
                        stack.push(reads_from(&transforms, n));
                    }
                }
            }
        }
    }
    for cycle in cycles {
        // `cycle` is in reads-from order; reverse it for data-flow order.
        let mut flow: Vec<&str> = cycle.iter().rev().copied().collect();
        flow.rotate_right(1);
        let first = flow[0];
        let feeder = flow[flow.len() - 1];
        let mut names = flow.clone();
        names.push(first);
        let Some(c) = transforms.get(first) else {
            continue;
        };
        let span = c
            .inputs
            .iter()
            .flatten()
            .find(|i| i.get_ref() == feeder)
            .map_or_else(|| c.id_span.clone(), |i| i.span());
        cx.error(
            &span,
            c.inputs_key.clone(),
            format!("cycle among transforms: {}", names.join(" -> ")),
        );
    }
}

/// The transforms that `id` reads from (its inputs that are transforms).
fn reads_from<'a>(transforms: &BTreeMap<&'a str, &'a Component>, id: &str) -> Vec<&'a str> {
    transforms
        .get(id)
        .and_then(|c| c.inputs.as_ref())
        .map(|l| {
            l.iter()
                .map(|s| s.get_ref().as_str())
                .filter(|i| transforms.contains_key(i))
                .collect()
        })
        .unwrap_or_default()
}

/// The cycle rotated to start at its smallest id, so each is reported once.
fn canonical<'a>(cycle: &[&'a str]) -> Vec<&'a str> {
    let min = cycle
        .iter()
        .enumerate()
        .min_by_key(|(_, id)| **id)
        .map_or(0, |(i, _)| i);
    let mut v = cycle.to_vec();
    v.rotate_left(min);
    v
}
