//! BI export: a query's result streamed to a CSV, JSON-lines or Parquet file on a local path
//! or an S3 object, never half-written.
//!
//! Atomicity comes from object_store: an S3 object appears only when its (multipart) upload
//! completes, and a local file is written under a staging name and renamed into place. On any
//! error the upload is aborted, so a reader sees the whole file or none. Batches are encoded
//! and uploaded as they arrive: memory stays at a Parquet row group, whatever the result size.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio::io::AsyncWriteExt;

use crate::{Error, LakeQuery, Result};

/// File formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    /// One JSON object per row, per line.
    Json,
    Parquet,
}

impl ExportFormat {
    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "jsonl",
            ExportFormat::Parquet => "parquet",
        }
    }
}

/// Where an export goes: an object store and the path of the file in it.
pub struct ExportTarget {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    /// The target as the user wrote it, for messages (never holds credentials).
    display: String,
}

impl std::fmt::Debug for ExportTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

impl ExportTarget {
    /// `to` is a local file path (its folder is created) or `s3://bucket/key`; S3 settings come
    /// from `options` (the lake's storage options, or the `AWS_*` variables).
    pub fn parse(to: &str, options: &HashMap<String, String>) -> Result<Self> {
        if let Some((scheme, rest)) = to.split_once("://") {
            let authority = rest.split('/').next().unwrap_or("");
            if authority.contains('@') {
                // Said without the URI: it holds a credential.
                return Err(Error::Export {
                    to: format!("{scheme}://…"),
                    message: "credentials do not belong in a URI; use the AWS_* variables or the lake's [sinks.<id>.s3]".into(),
                });
            }
        }
        let err = |message: String| Error::Export {
            to: to.to_owned(),
            message,
        };
        if to.ends_with('/') || to.is_empty() {
            return Err(err("expected a file name, not a folder".into()));
        }
        let url = if to.starts_with("s3://") || to.starts_with("file://") {
            url::Url::parse(to).map_err(|e| err(e.to_string()))?
        } else if to.contains("://") {
            return Err(err(
                "only local paths, file:// and s3:// are supported".into()
            ));
        } else {
            let path = std::path::Path::new(to);
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            std::fs::create_dir_all(&parent)
                .map_err(|e| err(format!("cannot create folder {}: {e}", parent.display())))?;
            let parent = std::fs::canonicalize(&parent).map_err(|e| err(e.to_string()))?;
            let file = path
                .file_name()
                .ok_or_else(|| err("expected a file name".into()))?;
            url::Url::from_file_path(parent.join(file))
                .map_err(|()| err("not an absolute path".into()))?
        };
        // object_store's option names are the lower-case AWS_* names.
        let options = options
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()));
        let (store, path) =
            object_store::parse_url_opts(&url, options).map_err(|e| err(e.to_string()))?;
        Ok(Self {
            store: Arc::from(store),
            path,
            display: to.to_owned(),
        })
    }

    /// The same store, another file: `name` replaces the last path segment.
    pub fn sibling(&self, name: &str) -> Self {
        let mut parts: Vec<_> = self.path.parts().collect();
        parts.pop();
        let path: ObjectPath = parts
            .into_iter()
            .chain(std::iter::once(name.into()))
            .collect();
        let display = match self.display.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{name}"),
            None => name.to_owned(),
        };
        Self {
            store: self.store.clone(),
            path,
            display,
        }
    }

    /// A target named `name` inside the folder (or prefix) `dir`.
    pub fn in_folder(dir: &str, name: &str, options: &HashMap<String, String>) -> Result<Self> {
        let dir = dir.trim_end_matches('/');
        Self::parse(&format!("{dir}/{name}"), options)
    }

    /// Whether the file exists already.
    pub async fn exists(&self) -> Result<bool> {
        match self.store.head(&self.path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(e.to_string())),
        }
    }

    fn error(&self, message: String) -> Error {
        Error::Export {
            to: self.display.clone(),
            message,
        }
    }
}

impl std::fmt::Display for ExportTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// What an export wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExportStats {
    pub rows: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Runs `sql` and writes its result to `target` in `format`; `progress` is called after each
/// batch with what was written so far.
pub async fn export(
    lake: &LakeQuery,
    sql: &str,
    format: ExportFormat,
    target: &ExportTarget,
    progress: &mut (dyn FnMut(ExportStats) + Send),
) -> Result<ExportStats> {
    let df = lake.plan(sql).await?;
    let mut stream = df.execute_stream().await?;
    let schema = stream.schema();
    let mut upload = BufWriter::new(target.store.clone(), target.path.clone());
    let mut encoder = Encoder::new(format, schema)?;
    let mut stats = ExportStats::default();
    let written: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            stats.rows += batch.num_rows() as u64;
            let bytes = encoder.encode(&batch)?;
            stats.bytes += bytes.len() as u64;
            upload
                .write_all(&bytes)
                .await
                .map_err(|e| target.error(e.to_string()))?;
            progress(stats);
        }
        let tail = encoder.finish()?;
        stats.bytes += tail.len() as u64;
        upload
            .write_all(&tail)
            .await
            .map_err(|e| target.error(e.to_string()))
    }
    .await;
    if let Err(e) = written {
        // Nothing partial stays behind; if the abort itself fails, the first error matters.
        let _ = upload.abort().await;
        return Err(e);
    }
    // Completing the upload is what makes the file appear. A failure here has already
    // aborted the upload (and a shut-down writer must not be aborted again).
    upload
        .shutdown()
        .await
        .map_err(|e| target.error(e.to_string()))?;
    progress(stats);
    Ok(stats)
}

/// Batches to bytes, incrementally.
enum Encoder {
    Csv { header: bool, schema: SchemaRef },
    Json,
    Parquet(Box<ArrowWriter<Vec<u8>>>),
}

impl Encoder {
    fn new(format: ExportFormat, schema: SchemaRef) -> Result<Self> {
        Ok(match format {
            ExportFormat::Csv => Encoder::Csv {
                header: true,
                schema,
            },
            ExportFormat::Json => Encoder::Json,
            ExportFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                let writer = ArrowWriter::try_new(Vec::new(), schema, Some(props))
                    .map_err(|e| Error::Output(e.into()))?;
                Encoder::Parquet(Box::new(writer))
            }
        })
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            Encoder::Csv { header, .. } => {
                let mut w = WriterBuilder::new().with_header(*header).build(&mut out);
                w.write(batch)?;
                *header = false;
            }
            Encoder::Json => {
                let mut w = LineDelimitedWriter::new(&mut out);
                w.write(batch)?;
                w.finish()?;
            }
            Encoder::Parquet(w) => {
                w.write(batch).map_err(|e| Error::Output(e.into()))?;
                // Row groups the writer has flushed; it counts offsets itself, so the buffer
                // can be drained.
                out = std::mem::take(w.inner_mut());
            }
        }
        Ok(out)
    }

    fn finish(mut self) -> Result<Vec<u8>> {
        match self {
            // A CSV of no rows still says what its columns are.
            Encoder::Csv {
                header: true,
                ref schema,
            } => {
                let empty = RecordBatch::new_empty(schema.clone());
                self.encode(&empty)
            }
            Encoder::Csv { .. } | Encoder::Json => Ok(Vec::new()),
            Encoder::Parquet(w) => w.into_inner().map_err(|e| Error::Output(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_in_the_uri_is_refused_without_being_repeated() {
        let e = ExportTarget::parse("s3://AKIDEXAMPLE:s3cr3t@bucket/x.csv", &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("credentials do not belong"), "{e}");
        assert!(!e.contains("s3cr3t") && !e.contains("AKIDEXAMPLE"), "{e}");
    }

    #[test]
    fn local_targets_get_their_folder_and_siblings_share_it() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("a/b/out.csv");
        let t = ExportTarget::parse(to.to_str().unwrap(), &HashMap::new()).unwrap();
        assert!(dir.path().join("a/b").is_dir());
        assert!(t.to_string().ends_with("a/b/out.csv"));
        assert!(t
            .sibling("other.csv")
            .to_string()
            .ends_with("a/b/other.csv"));
        assert!(ExportTarget::parse("folder/", &HashMap::new()).is_err());
        assert!(ExportTarget::parse("ftp://host/x.csv", &HashMap::new()).is_err());
    }
}
