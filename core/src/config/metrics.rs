//! `[metrics]`: where the pipeline serves its own metrics (`/metrics`, Prometheus text) and its
//! health checks (`/healthz`, `/readyz`). Absent or `listen = "off"`: not served.

use std::net::SocketAddr;

use super::model::MetricsConfig;
use super::reader::{to_text, Cx, Val};

/// Reads `[metrics]`.
pub fn parse(cx: &mut Cx<'_>, value: Option<&Val<'_>>) -> MetricsConfig {
    let Some(mut node) = value.and_then(|v| cx.table("metrics", v)) else {
        return MetricsConfig::default();
    };
    let listen = cx
        .optional(&mut node, "listen", |s| match to_text(s)?.trim() {
            "off" => Ok(None),
            text => text.parse::<SocketAddr>().map(Some).map_err(|_| {
                format!("expected an address like \"0.0.0.0:9464\" or \"off\", found {text:?}")
            }),
        })
        .flatten();
    node.finish(cx);
    MetricsConfig { listen }
}
