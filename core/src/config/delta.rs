//! `[sinks.<id>]` with `type = "delta"`: reading and checking a Delta Lake sink and its
//! `[sinks.<id>.s3]` options.

use std::time::Duration;

use super::components::inputs;
use super::model::*;
use super::reader::{to_bool, to_duration, to_size, to_text, Cx, Node};
use super::secret::SecretString;
use super::units::{format_duration, format_size};

const MIN_TARGET_FILE_SIZE: u64 = 1 << 20;
const MIN_MAX_LATENCY: Duration = Duration::from_millis(10);
const URI_FORMS: &str = "use a local path, file:///absolute/path or s3://bucket[/prefix]";
const NO_CREDENTIALS: &str = "credentials do not belong in a URI; set them under [sinks.<id>.s3] or in the AWS_* environment";

/// Reads a delta sink whose `type` was already taken from `node`; also returns its inputs
/// with their spans for the graph checks.
pub fn parse(
    cx: &mut Cx<'_>,
    mut node: Node<'_, '_>,
) -> (Option<DeltaSinkConfig>, super::components::Inputs) {
    let inputs = inputs(cx, &mut node);
    let uri = cx.required_value(&mut node, "uri", |s| check_uri(to_text(s)?));
    let target_file_size = cx
        .optional(&mut node, "target_file_size", |s| {
            let n = to_size(s)?;
            if n < MIN_TARGET_FILE_SIZE {
                return Err(format!(
                    "must be at least {}, found {}",
                    format_size(MIN_TARGET_FILE_SIZE),
                    s.describe(false)
                ));
            }
            Ok(n)
        })
        .unwrap_or(DEFAULT_TARGET_FILE_SIZE);
    let max_latency = cx
        .optional(&mut node, "max_latency", |s| {
            let d = to_duration(s)?;
            if d < MIN_MAX_LATENCY {
                return Err(format!(
                    "must be at least {}, found {}",
                    format_duration(MIN_MAX_LATENCY),
                    s.describe(false)
                ));
            }
            Ok(d)
        })
        .unwrap_or(DEFAULT_MAX_LATENCY);
    let max_buffer_bytes = cx
        .optional(&mut node, "max_buffer_bytes", |s| match to_size(s)? {
            0 => Err("must be greater than 0".to_owned()),
            n => Ok(n),
        })
        .unwrap_or(DEFAULT_MAX_BUFFER_BYTES);
    let s3 = match node.take("s3") {
        Some(v) => {
            let key = node.key("s3");
            cx.table(&key, v).map(|s3| s3_options(cx, s3))
        }
        None => Some(S3Options::default()),
    };
    node.finish(cx);
    let config = match (inputs.names(), uri, s3) {
        (Some(inputs), Some(uri), Some(s3)) => Some(DeltaSinkConfig {
            inputs,
            uri,
            target_file_size,
            max_latency,
            max_buffer_bytes,
            s3,
        }),
        _ => None,
    };
    (config, inputs)
}

fn s3_options(cx: &mut Cx<'_>, mut node: Node<'_, '_>) -> S3Options {
    let endpoint = cx.optional(&mut node, "endpoint", |s| check_endpoint(to_text(s)?));
    let region = cx.optional_string(&mut node, "region", false);
    let access_key_id = cx.optional_string(&mut node, "access_key_id", true);
    let secret_access_key = cx.optional_string(&mut node, "secret_access_key", true);
    let session_token = cx.optional_string(&mut node, "session_token", true);
    let allow_http = cx
        .optional(&mut node, "allow_http", to_bool)
        .unwrap_or(false);
    if let (Some(url), Some(span)) = (&endpoint, node.span_of("endpoint")) {
        if url.starts_with("http://") && !allow_http {
            cx.error(
                &span,
                node.key("endpoint"),
                "endpoint is plain http://; set allow_http = true to allow it",
            );
        }
    }
    node.finish(cx);
    S3Options {
        endpoint,
        region,
        access_key_id: access_key_id.map(SecretString::from),
        secret_access_key: secret_access_key.map(SecretString::from),
        session_token: session_token.map(SecretString::from),
        allow_http,
    }
}

/// A local path, `file:///abs/path` or `s3://bucket[/prefix]`; returned trimmed.
pub(super) fn check_uri(text: &str) -> Result<String, String> {
    let uri = text.trim();
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(uri.to_owned());
    };
    let (authority, _path) = rest.split_once('/').unwrap_or((rest, ""));
    // Checked before anything else so that no later message can echo a credential.
    if authority.contains('@') {
        return Err(NO_CREDENTIALS.to_owned());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "s3" => {
            if rest.contains(['?', '#']) {
                return Err(format!("{uri:?} has a query or fragment; {URI_FORMS}"));
            }
            check_bucket(authority)?;
        }
        "file" => {
            let url = url::Url::parse(uri)
                .map_err(|e| format!("invalid URI {uri:?}: {e}; {URI_FORMS}"))?;
            match url.host_str() {
                None | Some("") | Some("localhost") => {}
                Some(host) => {
                    return Err(format!(
                        "file:// URI {uri:?} names host {host:?}; write an absolute path as file:///path/to/lake, or a relative path without file://"
                    ))
                }
            }
            if url.path().trim_matches('/').is_empty() {
                return Err(format!("file:// URI {uri:?} has no path"));
            }
        }
        other => {
            return Err(format!(
                "unsupported URI scheme {other:?} in {uri:?}; {URI_FORMS}"
            ));
        }
    }
    Ok(uri.to_owned())
}

/// S3's bucket naming rules (the subset that can be checked offline).
fn check_bucket(bucket: &str) -> Result<(), String> {
    let chars_ok = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'));
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if (3..=63).contains(&bucket.len())
        && chars_ok
        && ends_ok(bucket.chars().next())
        && ends_ok(bucket.chars().last())
    {
        Ok(())
    } else {
        Err(format!(
            "invalid S3 bucket name {bucket:?}: 3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
        ))
    }
}

/// An `http(s)://host[:port][/path]` URL, without credentials.
fn check_endpoint(text: &str) -> Result<String, String> {
    let authority = text
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    if authority.contains('@') {
        return Err(NO_CREDENTIALS.to_owned());
    }
    let url = url::Url::parse(text.trim()).map_err(|e| {
        format!("expected an http(s) URL like \"http://localhost:9000\", found {text:?} ({e})")
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(NO_CREDENTIALS.to_owned());
    }
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "expected an http(s) URL like \"http://localhost:9000\", found {text:?}"
        ));
    }
    Ok(text.trim().to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(check_uri("./lake").unwrap(), "./lake");
        assert_eq!(check_uri("/var/lake").unwrap(), "/var/lake");
        assert_eq!(check_uri("file:///var/lake").unwrap(), "file:///var/lake");
        assert_eq!(check_uri("s3://my-bucket").unwrap(), "s3://my-bucket");
        assert_eq!(
            check_uri("s3://my-bucket/paystream/lake").unwrap(),
            "s3://my-bucket/paystream/lake"
        );
        assert!(check_uri("gs://bucket")
            .unwrap_err()
            .contains("unsupported URI scheme \"gs\""));
        assert!(check_uri("file://lake")
            .unwrap_err()
            .contains("names host \"lake\""));
        assert!(check_uri("file:///").unwrap_err().contains("no path"));
        assert!(check_uri("s3://My_Bucket")
            .unwrap_err()
            .contains("invalid S3 bucket name"));
        assert!(check_uri("s3://ab")
            .unwrap_err()
            .contains("invalid S3 bucket name"));
        assert!(check_uri("s3://b-/x")
            .unwrap_err()
            .contains("invalid S3 bucket name"));
        assert!(check_uri("s3://bucket/x?y=1")
            .unwrap_err()
            .contains("query"));
        let e = check_uri("s3://AKIA:hunter2@bucket/x").unwrap_err();
        assert!(!e.contains("hunter2"));
        let e = check_uri("file://me:hunter2@localhost/x").unwrap_err();
        assert!(!e.contains("hunter2"));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            check_endpoint("http://localhost:9000").unwrap(),
            "http://localhost:9000"
        );
        assert!(check_endpoint("https://s3.eu-west-1.amazonaws.com").is_ok());
        assert!(check_endpoint("localhost:9000").is_err());
        assert!(check_endpoint("ftp://x").is_err());
        assert!(check_endpoint("not a url").is_err());
        let e = check_endpoint("http://u:hunter2@host").unwrap_err();
        assert!(!e.contains("hunter2"));
    }
}
