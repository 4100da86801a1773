//! The interactive SQL shell of `paystream query` (run without SQL): statements end with `;`
//! and may span lines, history persists across sessions, and a few psql-like commands list
//! what is there. Errors are printed and the shell goes on.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use paystream_query::format::{render, Format};
use paystream_query::LakeQuery;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

const HELP: &str = "\
Statements end with ';' and may span several lines.
  \\dt            list the lake's tables
  \\d TABLE       columns of TABLE
  \\timing        toggle timing of each statement
  \\q             quit (also Ctrl-D)
A table as it was: \"payments@v12\" (version) or \"payments@2026-11-22T10:00:00Z\" (instant).";

/// Where history is kept: `$PAYSTREAM_HISTORY`, else `~/.paystream_history`.
fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PAYSTREAM_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".paystream_history"))
}

pub async fn run(lake: &LakeQuery, mut timing: bool) -> Result<()> {
    let mut editor = DefaultEditor::new().context("starting the interactive shell")?;
    let history = history_path();
    if let Some(h) = &history {
        // A missing history file is the normal first run.
        let _ = editor.load_history(h);
    }
    eprintln!(
        "paystream SQL shell over {} table(s): {}. \\? for help.",
        lake.tables().len(),
        lake.tables().join(", ")
    );
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "paystream> "
        } else {
            "      ...> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading the shell's input"),
        };
        let trimmed = line.trim();
        if statement.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            match command(lake, trimmed, &mut timing).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => eprintln!("error: {e:#}"),
            }
            continue;
        }
        if trimmed.is_empty() && statement.is_empty() {
            continue;
        }
        statement.push_str(&line);
        statement.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = statement.trim().trim_end_matches(';').to_owned();
        statement.clear();
        let _ = editor.add_history_entry(sql.clone() + ";");
        if let Err(e) = show(lake, &sql, timing).await {
            eprintln!("error: {e:#}");
        }
    }
    if let Some(h) = &history {
        if let Err(e) = editor.save_history(h) {
            eprintln!("warning: cannot save the history to {}: {e}", h.display());
        }
    }
    Ok(())
}

/// Runs one backslash command; `false` means quit.
async fn command(lake: &LakeQuery, line: &str, timing: &mut bool) -> Result<bool> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("\\q"), _) => return Ok(false),
        (Some("\\?" | "\\h" | "\\help"), _) => println!("{HELP}"),
        (Some("\\dt"), _) => {
            for t in lake.tables() {
                println!("{t}");
            }
        }
        (Some("\\d"), Some(table)) => {
            let table = table.replace('\'', "''");
            show(
                lake,
                &format!(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                     WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY ordinal_position"
                ),
                false,
            )
            .await?;
        }
        (Some("\\timing"), _) => {
            *timing = !*timing;
            println!("timing is {}", if *timing { "on" } else { "off" });
        }
        _ => anyhow::bail!("unknown command {line:?} (\\? for help)"),
    }
    Ok(true)
}

async fn show(lake: &LakeQuery, sql: &str, timing: bool) -> Result<()> {
    let started = Instant::now();
    let batches = lake.sql(sql).await?;
    let elapsed = started.elapsed();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    println!("{}", render(&batches, Format::Table)?);
    let mut footer = format!("({rows} row{})", if rows == 1 { "" } else { "s" });
    if timing {
        footer.push_str(&format!(" in {:.1} ms", elapsed.as_secs_f64() * 1e3));
    }
    println!("{footer}");
    Ok(())
}
