//! `[sources.<id>]` with `type = "otlp"`: an OpenTelemetry receiver (gRPC and HTTP/protobuf)
//! whose spans go to the `spans` lake table.

use std::net::SocketAddr;

use super::model::*;
use super::reader::{to_positive, to_size, to_text, Cx, Node};

/// Largest request body accepted by default: gRPC's own default receive limit.
pub const DEFAULT_OTLP_MAX_REQUEST_BYTES: u64 = 4 << 20;
/// Requests waiting for their commit at most, by default; more are answered "retry later".
pub const DEFAULT_OTLP_MAX_PENDING_REQUESTS: usize = 256;
/// The standard OTLP gRPC port.
pub const DEFAULT_OTLP_GRPC_ADDRESS: &str = "0.0.0.0:4317";
/// The standard OTLP HTTP port.
pub const DEFAULT_OTLP_HTTP_ADDRESS: &str = "0.0.0.0:4318";

/// Reads an otlp source whose `type` was already taken from `node`.
pub fn parse(cx: &mut Cx<'_>, mut node: Node<'_, '_>) -> Option<OtlpSourceConfig> {
    if let Some(v) = node.take_quietly("inputs") {
        cx.error(
            &v.span(),
            node.key("inputs"),
            "a source takes no `inputs`: an otlp source receives spans from services",
        );
    }
    let grpc = cx
        .optional(&mut node, "grpc_address", address)
        .unwrap_or(Listen::On(default_addr(DEFAULT_OTLP_GRPC_ADDRESS)));
    let http = cx
        .optional(&mut node, "http_address", address)
        .unwrap_or(Listen::On(default_addr(DEFAULT_OTLP_HTTP_ADDRESS)));
    if grpc == Listen::Off && http == Listen::Off {
        cx.error(
            &node.span.clone(),
            node.key("grpc_address"),
            "both `grpc_address` and `http_address` are \"off\": the source would receive nothing",
        );
    }
    let max_request_bytes = cx
        .optional(&mut node, "max_request_bytes", |s| match to_size(s)? {
            0 => Err("must be greater than 0".to_owned()),
            n => Ok(n),
        })
        .unwrap_or(DEFAULT_OTLP_MAX_REQUEST_BYTES);
    let max_pending_requests = cx
        .optional(&mut node, "max_pending_requests", to_positive)
        .unwrap_or(DEFAULT_OTLP_MAX_PENDING_REQUESTS);
    node.finish(cx);
    Some(OtlpSourceConfig {
        grpc: grpc.addr(),
        http: http.addr(),
        max_request_bytes,
        max_pending_requests,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Listen {
    On(SocketAddr),
    Off,
}

impl Listen {
    fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::On(a) => Some(a),
            Listen::Off => None,
        }
    }
}

fn default_addr(text: &str) -> SocketAddr {
    text.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn address(s: &super::reader::Scalar) -> Result<Listen, String> {
    let text = to_text(s)?;
    if text == "off" {
        return Ok(Listen::Off);
    }
    text.parse::<SocketAddr>().map(Listen::On).map_err(|_| {
        format!(
            "expected a socket address such as \"0.0.0.0:4317\" or \"127.0.0.1:0\", or \"off\", found {text:?}"
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::config::{from_str, SourceConfig};

    fn otlp(body: &str) -> Result<super::OtlpSourceConfig, String> {
        let text = format!(
            "[sources.o]\ntype = \"otlp\"\n{body}\n[sinks.lake]\ntype = \"delta\"\ninputs = [\"o\"]\nuri = \"./lake\"\n"
        );
        match from_str(&text, "p.toml", &|_| None) {
            Ok(cfg) => match cfg.sources.get("o") {
                Some(SourceConfig::Otlp(o)) => Ok(o.clone()),
                other => Err(format!("not an otlp source: {other:?}")),
            },
            Err(d) => Err(d.to_string()),
        }
    }

    #[test]
    fn defaults_are_the_standard_ports() {
        let o = otlp("").unwrap();
        assert_eq!(o.grpc.unwrap().port(), 4317);
        assert_eq!(o.http.unwrap().port(), 4318);
        assert_eq!(o.max_request_bytes, 4 << 20);
    }

    #[test]
    fn off_disables_one_protocol_but_not_both() {
        let o = otlp("grpc_address = \"off\"\nhttp_address = \"127.0.0.1:0\"").unwrap();
        assert_eq!(o.grpc, None);
        assert_eq!(o.http.unwrap().port(), 0);
        let e = otlp("grpc_address = \"off\"\nhttp_address = \"off\"").unwrap_err();
        assert!(e.contains("would receive nothing"), "{e}");
    }

    #[test]
    fn bad_address_and_unknown_key_are_located() {
        let e = otlp("grpc_address = \"localhost\"\nmax_request = 5").unwrap_err();
        assert!(e.contains("p.toml:3:16: sources.o.grpc_address"), "{e}");
        assert!(e.contains("sources.o.max_request"), "{e}");
    }
}
