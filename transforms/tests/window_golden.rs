//! Golden tests of window semantics: each `tests/window/NAME.case` gives a window, its SQL
//! and events in batches; the final results and the count of late rows must equal the case's
//! `expected:` section. `UPDATE_EXPECT=1` rewrites that section from the current output
//! (review the diff).
//!
//! Case format (durations in seconds, times in seconds after 2026-01-01T00:00:00Z):
//! ```text
//! window = tumbling 60 | hopping 60 20 | session 30
//! lateness = 5
//! sql:
//! SELECT … FROM payments GROUP BY …
//! events:
//! <secs> <event_type> <merchant> <currency> <amount> <reason or -> <partition>
//! ---            (a batch boundary; the watermark moves to the largest time seen)
//! expected:
//! …
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Ev;
use paystream_transforms::window::WindowKind;

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/window");

struct Case {
    kind: WindowKind,
    lateness: Duration,
    sql: String,
    batches: Vec<Vec<Ev>>,
    head: String,
    expected: String,
}

fn secs(s: &str) -> Duration {
    Duration::from_secs(s.parse().unwrap())
}

fn parse(path: &Path) -> Case {
    let text = fs::read_to_string(path).unwrap();
    let (head, expected) = text
        .split_once("expected:\n")
        .expect("no expected: section");
    let mut kind = None;
    let mut lateness = Duration::ZERO;
    let mut sql = String::new();
    let mut batches = vec![Vec::new()];
    let mut section = "";
    for line in head.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match trimmed {
            "sql:" | "events:" => {
                section = trimmed;
                continue;
            }
            _ => {}
        }
        if section == "sql:" {
            sql.push_str(line);
            sql.push('\n');
        } else if section == "events:" {
            if trimmed == "---" {
                batches.push(Vec::new());
                continue;
            }
            let f: Vec<&str> = trimmed.split_whitespace().collect();
            assert_eq!(f.len(), 7, "bad event line {line:?}");
            batches.last_mut().unwrap().push(Ev {
                secs: f[0].parse().unwrap(),
                event_type: f[1].into(),
                merchant: f[2].into(),
                currency: f[3].into(),
                amount: f[4].parse().unwrap(),
                reason: (f[5] != "-").then(|| f[5].to_string()),
                partition: f[6].parse().unwrap(),
            });
        } else if let Some(v) = trimmed.strip_prefix("window = ") {
            let w: Vec<&str> = v.split_whitespace().collect();
            kind = Some(match w.as_slice() {
                ["tumbling", size] => WindowKind::Tumbling { size: secs(size) },
                ["hopping", size, slide] => WindowKind::Hopping {
                    size: secs(size),
                    slide: secs(slide),
                },
                ["session", gap] => WindowKind::Session { gap: secs(gap) },
                _ => panic!("bad window line {line:?}"),
            });
        } else if let Some(v) = trimmed.strip_prefix("lateness = ") {
            lateness = secs(v);
        } else {
            panic!("unexpected line {line:?} in {}", path.display());
        }
    }
    Case {
        kind: kind.expect("no window = line"),
        lateness,
        sql,
        batches,
        head: head.to_string(),
        expected: expected.to_string(),
    }
}

#[tokio::test]
async fn window_cases_give_the_expected_results() {
    let update = std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1");
    let mut paths: Vec<PathBuf> = fs::read_dir(CASES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 6, "only {} cases", paths.len());
    let mut failures = Vec::new();
    for path in &paths {
        let case = parse(path);
        let mut w = common::transform(&case.sql, case.kind, case.lateness).await;
        let (lines, late) = common::run(&mut w, &case.batches).await;
        let actual = format!("{}\nlate = {late}\n", lines.join("\n"));
        if update {
            fs::write(path, format!("{}expected:\n{actual}", case.head)).unwrap();
        } else if actual != case.expected {
            failures.push(format!(
                "{}:\n--- expected\n{}--- actual\n{actual}",
                path.display(),
                case.expected
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
