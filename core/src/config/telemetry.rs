//! `[telemetry]`: where paystream sends the spans of its own work (OTLP), how many it keeps,
//! and how it logs. Every key falls back to the standard OpenTelemetry environment variable,
//! so a deployment that already sets `OTEL_EXPORTER_OTLP_ENDPOINT` for its other services
//! needs no config at all; with neither, tracing is off and costs next to nothing.

use std::ops::Range;

use super::model::*;
use super::reader::{to_text, Cx, Scalar, Val};
use super::secret::SecretString;

/// Reads `[telemetry]` (absent: everything from the environment or the defaults).
pub fn parse(cx: &mut Cx<'_>, value: Option<&Val<'_>>) -> TelemetryConfig {
    let mut node = value.and_then(|v| cx.table("telemetry", v));
    let anchor = node.as_ref().map_or(0..0, |n| n.span.clone());
    let mut out = TelemetryConfig::default();

    let from_file = node
        .as_mut()
        .and_then(|n| cx.optional(n, "endpoint", |s| endpoint(to_text(s)?)));
    out.endpoint = match from_file {
        Some(e) => Some(e),
        None => from_env(cx, &anchor, "telemetry.endpoint", &ENDPOINT_VARS, endpoint),
    };
    let from_file = node
        .as_mut()
        .and_then(|n| cx.optional(n, "protocol", |s| protocol(to_text(s)?)));
    out.protocol = match from_file {
        Some(p) => p,
        None => from_env(cx, &anchor, "telemetry.protocol", &PROTOCOL_VARS, protocol)
            .unwrap_or_default(),
    };
    if let Some(n) = node.as_mut() {
        if let Some(v) = n.take("headers") {
            out.headers = headers(cx, &n.key("headers"), v);
        }
    }
    if out.headers.is_empty() {
        if let Some(raw) = HEADER_VARS.iter().find_map(|v| cx.env_var(v)) {
            match env_headers(&raw) {
                Ok(h) => out.headers = h,
                Err(m) => cx.error(&anchor, "telemetry.headers", m),
            }
        }
    }
    let ratio = node
        .as_mut()
        .and_then(|n| cx.optional(n, "sample_ratio", sample_ratio));
    out.sample_ratio = match ratio {
        Some(r) => r,
        None => from_env(
            cx,
            &anchor,
            "telemetry.sample_ratio",
            &["OTEL_TRACES_SAMPLER_ARG"],
            |t| sample_ratio(&Scalar::Float(t.to_owned())),
        )
        .unwrap_or(1.0),
    };
    let service = node
        .as_mut()
        .and_then(|n| cx.optional(n, "service_name", |s| Ok(to_text(s)?.to_owned())));
    out.service_name = service
        .or_else(|| cx.env_var("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    if let Some(n) = node {
        n.finish(cx);
    }
    out
}

const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
const PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
const HEADER_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];

/// The first set variable of `vars`, converted; a bad value is reported against `key`, naming
/// the variable (its value is not a secret: endpoints, protocols and ratios are not).
fn from_env<T>(
    cx: &mut Cx<'_>,
    anchor: &Range<usize>,
    key: &str,
    vars: &[&str],
    convert: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    let (var, value) = vars
        .iter()
        .find_map(|v| cx.env_var(v).map(|value| (*v, value)))?;
    match convert(value.trim()) {
        Ok(t) => Some(t),
        Err(m) => {
            cx.error(anchor, key, format!("from environment variable {var}: {m}"));
            None
        }
    }
}

fn endpoint(text: &str) -> Result<String, String> {
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(text.trim_end_matches('/').to_owned())
        }
        _ => Err(format!(
            "expected an http:// or https:// URL such as \"http://otel-collector:4317\", found {text:?}"
        )),
    }
}

fn protocol(text: &str) -> Result<OtlpProtocol, String> {
    match text {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        other => Err(format!(
            r#"expected "grpc" or "http/protobuf", found {other:?}"#
        )),
    }
}

fn sample_ratio(s: &Scalar) -> Result<f64, String> {
    let r = match s {
        Scalar::Int(n) => Some(*n as f64),
        Scalar::Float(t) | Scalar::Str(t) => t.trim().parse::<f64>().ok(),
        _ => None,
    };
    match r {
        Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "expected a number from 0 to 1, found {}",
            s.describe(false)
        )),
    }
}

/// `[telemetry.headers]`: header name -> value, values secret (they are usually tokens).
fn headers(cx: &mut Cx<'_>, path: &str, v: &Val<'_>) -> Vec<(String, SecretString)> {
    let mut out = Vec::new();
    let Some(node) = cx.table(path, v) else {
        return out;
    };
    for (k, v) in node.entries() {
        let key = format!("{path}.{}", k.get_ref());
        let name = k.get_ref().to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            cx.error(&k.span(), key, "a header name is letters, digits and '-'");
            continue;
        }
        if let Some(value) = cx.string(&key, v, true) {
            out.push((name, SecretString::new(value)));
        }
    }
    out
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,key2=value2`, values percent-encoded.
fn env_headers(raw: &str) -> Result<Vec<(String, SecretString)>, String> {
    let mut out = Vec::new();
    for (i, pair) in raw.split(',').enumerate() {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let Some((k, v)) = pair.split_once('=') else {
            // The pair may hold a token: say where, not what.
            return Err(format!(
                "from environment variable OTEL_EXPORTER_OTLP_HEADERS: entry {} has no '='",
                i + 1
            ));
        };
        let value = url::form_urlencoded::parse(format!("v={}", v.trim()).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        out.push((k.trim().to_ascii_lowercase(), SecretString::new(value)));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use crate::config::{from_str, OtlpProtocol, TelemetryConfig};

    const PIPE: &str = "[sources.k]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopics = [\"t\"]\n[sinks.lake]\ntype = \"delta\"\ninputs = [\"k\"]\nuri = \"./lake\"\n";

    fn telemetry(section: &str, env: &[(&str, &str)]) -> Result<TelemetryConfig, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let text = format!("{section}\n{PIPE}");
        from_str(&text, "p.toml", &|k| env.get(k).cloned())
            .map(|c| c.telemetry)
            .map_err(|d| d.to_string())
    }

    #[test]
    fn off_without_endpoint() {
        let t = telemetry("", &[]).unwrap();
        assert_eq!(t.endpoint, None);
        assert_eq!(t.protocol, OtlpProtocol::Grpc);
        assert_eq!(t.sample_ratio, 1.0);
        assert_eq!(t.service_name, "paystream");
    }

    #[test]
    fn standard_variables_fill_what_the_file_leaves_out() {
        let t = telemetry(
            "[telemetry]\nsample_ratio = 0.25\n",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%20abc,x-tenant=7",
                ),
                ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
                ("OTEL_SERVICE_NAME", "pay-ingest"),
            ],
        )
        .unwrap();
        assert_eq!(t.endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(t.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(t.sample_ratio, 0.25, "the file wins over the variable");
        assert_eq!(t.service_name, "pay-ingest");
        assert_eq!(t.headers[0].0, "authorization");
        assert_eq!(t.headers[0].1.expose(), "Bearer abc");
        assert_eq!(t.headers[1].1.expose(), "7");
    }

    #[test]
    fn bad_values_are_located_and_secrets_stay_hidden() {
        let e = telemetry(
            "[telemetry]\nendpoint = \"collector:4317\"\nprotocol = \"http/json\"\nsample_ratio = 2\nheaders = { authorization = 5 }\nexporter = \"otlp\"\n",
            &[],
        )
        .unwrap_err();
        assert!(e.contains("p.toml:2:12: telemetry.endpoint"), "{e}");
        assert!(e.contains("p.toml:3:12: telemetry.protocol"), "{e}");
        assert!(e.contains("p.toml:4:16: telemetry.sample_ratio"), "{e}");
        assert!(e.contains("telemetry.headers.authorization"), "{e}");
        assert!(!e.contains("found 5"), "{e}");
        assert!(e.contains("telemetry.exporter"), "{e}");
        let e = telemetry("", &[("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")]).unwrap_err();
        assert!(e.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}");
    }
}
