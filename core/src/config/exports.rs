//! `[exports.<id>]`: scheduled BI exports. Each runs its `sql` over the lake `every` period and
//! writes the result under `to` (a folder or an `s3://` prefix) in `format`, one file per
//! period named after the export and the period, so a re-run replaces rather than duplicates.
//!
//! The SQL itself is planned when the pipeline starts (validation reads no lake); its errors
//! then name the file and line kept in [`ExportConfig::defined_at`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::delta::check_uri;
use super::model::*;
use super::reader::{join_key, to_duration, to_text, Cx, Val};
use super::units::format_duration;

const MIN_EVERY: Duration = Duration::from_secs(1);
const FORMATS: &str = "\"csv\", \"json\" or \"parquet\"";

/// Reads `[exports]` (absent: no exports).
pub fn parse(cx: &mut Cx<'_>, value: Option<&Val<'_>>) -> BTreeMap<String, ExportConfig> {
    let mut out = BTreeMap::new();
    let Some(section) = value.and_then(|v| cx.table("exports", v)) else {
        return out;
    };
    for (id, value) in section.entries() {
        let name = id.get_ref().to_string();
        let path = join_key("exports", &name);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        {
            cx.error(
                &id.span(),
                path.clone(),
                format!("invalid export id {name:?}: use letters, digits, '_' and '-' (it names the files)"),
            );
        }
        let Some(mut node) = cx.table(&path, value) else {
            continue;
        };
        let (line, _) = cx.position(node.span.start);
        let sql = cx.required_string(&mut node, "sql", false);
        let every = cx.required_value(&mut node, "every", |s| {
            let d = to_duration(s)?;
            if d < MIN_EVERY {
                return Err(format!(
                    "must be at least {}, found {}",
                    format_duration(MIN_EVERY),
                    s.describe(false)
                ));
            }
            Ok(d)
        });
        let to = cx.required_value(&mut node, "to", |s| {
            let uri = check_uri(to_text(s)?)?;
            if uri.starts_with("s3://") && uri.trim_start_matches("s3://").is_empty() {
                return Err("an S3 URI needs a bucket: s3://bucket/prefix".to_owned());
            }
            Ok(uri.trim_end_matches('/').to_owned())
        });
        let format = cx
            .optional(&mut node, "format", |s| match to_text(s)? {
                "csv" => Ok(ExportFileFormat::Csv),
                "json" => Ok(ExportFileFormat::Json),
                "parquet" => Ok(ExportFileFormat::Parquet),
                other => Err(format!("unknown format {other:?}: expected {FORMATS}")),
            })
            .unwrap_or(ExportFileFormat::Parquet);
        node.finish(cx);
        if let (Some(sql), Some(every), Some(to)) = (sql, every, to) {
            out.insert(
                name.clone(),
                ExportConfig {
                    id: name,
                    sql,
                    every,
                    to,
                    format,
                    defined_at: format!("{}:{line}", cx.file()),
                },
            );
        }
    }
    out
}
