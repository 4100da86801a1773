//! Where the lake lives: a local folder (the default) or an `s3://` prefix, and the storage
//! options that reach it. Credentials only ever travel inside the options map handed to
//! object_store; the `Debug` of a location shows the URI and the option names, never values.

use std::collections::HashMap;
use std::fmt;
use std::sync::Once;

use url::Url;

use crate::{Error, Result};

/// The root of the lake and how to reach it.
#[derive(Clone)]
pub struct LakeLocation {
    root: Url,
    options: HashMap<String, String>,
}

impl fmt::Debug for LakeLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.options.keys().collect();
        keys.sort();
        f.debug_struct("LakeLocation")
            .field("root", &self.root.as_str())
            .field("options", &keys)
            .finish()
    }
}

static S3_HANDLERS: Once = Once::new();

impl LakeLocation {
    /// Resolve `uri`: a local path (created when missing), `file://...` or `s3://bucket/prefix`.
    pub fn resolve(uri: &str, options: HashMap<String, String>) -> Result<Self> {
        let err = |message: String| Error::Location {
            uri: uri.to_string(),
            message,
        };
        let root = if let Some(rest) = uri.strip_prefix("s3://").or(uri.strip_prefix("s3a://")) {
            if rest.is_empty() || rest.starts_with('/') {
                return Err(err("an S3 URI needs a bucket: s3://bucket/prefix".into()));
            }
            S3_HANDLERS.call_once(|| deltalake::aws::register_handlers(None));
            Url::parse(uri.trim_end_matches('/')).map_err(|e| err(e.to_string()))?
        } else if uri.starts_with("file://") {
            Url::parse(uri.trim_end_matches('/')).map_err(|e| err(e.to_string()))?
        } else if uri.contains("://") {
            return Err(err(
                "only local paths, file:// and s3:// are supported".into()
            ));
        } else {
            std::fs::create_dir_all(uri).map_err(|e| err(format!("cannot create folder: {e}")))?;
            let abs = std::fs::canonicalize(uri).map_err(|e| err(e.to_string()))?;
            Url::from_directory_path(&abs).map_err(|()| err("not an absolute folder".into()))?
        };
        Ok(Self { root, options })
    }

    /// The root URI, without credentials.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Storage options for object_store (may hold secrets: never log them).
    pub fn options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The URL of the table named `name` under the root.
    pub fn table(&self, name: &str) -> Result<Url> {
        table_url(&self.root, name)
    }
}

/// `root`/`name`, whatever the scheme.
pub fn table_url(root: &Url, name: &str) -> Result<Url> {
    let mut s = root.as_str().trim_end_matches('/').to_string();
    s.push('/');
    s.push_str(name);
    Url::parse(&s).map_err(|e| Error::Location {
        uri: root.to_string(),
        message: e.to_string(),
    })
}

/// S3 settings as object_store options. Unset values are left to the standard `AWS_*`
/// environment variables, which object_store reads itself.
pub fn storage_options(
    endpoint: Option<&str>,
    region: Option<&str>,
    access_key_id: Option<&str>,
    secret_access_key: Option<&str>,
    session_token: Option<&str>,
    allow_http: bool,
) -> HashMap<String, String> {
    let mut o = HashMap::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            o.insert(k.to_string(), v.to_string());
        }
    };
    put("AWS_ENDPOINT_URL", endpoint);
    put("AWS_REGION", region);
    put("AWS_ACCESS_KEY_ID", access_key_id);
    put("AWS_SECRET_ACCESS_KEY", secret_access_key);
    put("AWS_SESSION_TOKEN", session_token);
    if allow_http {
        o.insert("AWS_ALLOW_HTTP".into(), "true".into());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_folder_is_created_and_tables_sit_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lake");
        let loc = LakeLocation::resolve(p.to_str().unwrap(), HashMap::new()).unwrap();
        assert!(p.is_dir());
        let t = loc.table("payments").unwrap();
        assert_eq!(t.scheme(), "file");
        assert!(t.path().ends_with("/lake/payments"), "{t}");
    }

    #[test]
    fn s3_needs_a_bucket_and_other_schemes_are_refused() {
        assert!(LakeLocation::resolve("s3://", HashMap::new()).is_err());
        let e = LakeLocation::resolve("gs://b/x", HashMap::new()).unwrap_err();
        assert!(e.to_string().contains("only local paths"), "{e}");
        let loc = LakeLocation::resolve("s3://bucket/prefix/", HashMap::new()).unwrap();
        assert_eq!(loc.table("dlq").unwrap().as_str(), "s3://bucket/prefix/dlq");
    }

    #[test]
    fn debug_never_shows_secret_values() {
        let opts = storage_options(
            Some("http://127.0.0.1:9000"),
            Some("us-east-1"),
            Some("AKIDEXAMPLE"),
            Some("very-secret-value"),
            None,
            true,
        );
        let loc = LakeLocation::resolve("s3://b/p", opts).unwrap();
        let dbg = format!("{loc:?}");
        assert!(
            !dbg.contains("very-secret-value") && !dbg.contains("AKIDEXAMPLE"),
            "{dbg}"
        );
        assert!(dbg.contains("AWS_SECRET_ACCESS_KEY"));
    }
}
