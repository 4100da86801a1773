//! The HTTP side of `paystream serve`: `POST /sql` with the statement as the body, answered
//! with JSON lines (one object per row) or, with `Accept: application/vnd.apache.arrow.stream`,
//! an Arrow IPC stream that pyarrow, polars and DuckDB read as is.
//!
//! Same users (HTTP Basic), same read-only rule (DataFusion refuses DDL, DML, COPY and SET
//! before planning), same deadline and concurrency cap as the Postgres endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::{Error, Result};

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Clone)]
struct Http {
    ctx: Arc<SessionContext>,
    users: Arc<HashMap<String, String>>,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl Http {
    /// Whether the request carries the credentials of a configured user (any request, when
    /// none are configured and anonymous access was allowed).
    fn authorised(&self, headers: &HeaderMap) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some(encoded) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let text = String::from_utf8_lossy(&decoded);
        match text.split_once(':') {
            Some((user, password)) => self.users.get(user).is_some_and(|p| p == password),
            None => false,
        }
    }
}

async fn sql(State(h): State<Http>, headers: HeaderMap, body: Bytes) -> Response {
    if !h.authorised(&headers) {
        let mut r = refuse(StatusCode::UNAUTHORIZED, "user name or password is wrong");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"paystream\""),
        );
        return r;
    }
    let Ok(statement) = std::str::from_utf8(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the body must be the SQL statement, in UTF-8",
        );
    };
    let arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    let Ok(_slot) = tokio::time::timeout(h.timeout, h.slots.clone().acquire_owned()).await else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many queries are running",
        );
    };
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let run = async {
        let df = h.ctx.sql_with_options(statement, options).await?;
        df.collect().await
    };
    let batches = match tokio::time::timeout(h.timeout, run).await {
        Err(_) => {
            return refuse(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the statement ran past its timeout ({}s)",
                    h.timeout.as_secs_f64()
                ),
            )
        }
        Ok(Err(e)) => {
            let message = e.to_string();
            let status = if message.contains("not supported") || message.contains("not allowed") {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            return refuse(status, message);
        }
        Ok(Ok(b)) => b,
    };
    let encoded = if arrow {
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => Arc::new(Schema::empty()),
        };
        let mut out = Vec::new();
        StreamWriter::try_new(&mut out, &schema)
            .and_then(|mut w| {
                for b in &batches {
                    w.write(b)?;
                }
                w.finish()
            })
            .map(|_| (ARROW_STREAM, out))
    } else {
        let mut w = LineDelimitedWriter::new(Vec::new());
        batches
            .iter()
            .try_for_each(|b| w.write(b))
            .and_then(|_| w.finish())
            .map(|_| ("application/x-ndjson", w.into_inner()))
    };
    match encoded {
        Ok((content_type, body)) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Serve `POST /sql` on `listen` until `shutdown` resolves.
pub async fn serve_http(
    ctx: Arc<SessionContext>,
    listen: SocketAddr,
    users: HashMap<String, String>,
    timeout: Duration,
    max_concurrent_queries: usize,
    tls: Option<crate::serve::TlsFiles>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let state = Http {
        ctx,
        users: Arc::new(users),
        slots: Arc::new(Semaphore::new(max_concurrent_queries.max(1))),
        timeout,
    };
    let app = Router::new().route("/sql", post(sql)).with_state(state);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Serve(format!("cannot listen on {listen}: {e}")))?;
    let Some(tls) = tls else {
        tracing::info!(%listen, "serving SQL over HTTP (POST /sql)");
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::Serve(format!("http: {e}")));
    };
    let acceptor = tls.acceptor(&[b"h2", b"http/1.1"])?;
    tracing::info!(%listen, "serving SQL over HTTPS (POST /sql)");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                        continue;
                    }
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client that fails the handshake (plain HTTP, wrong CA) only ends its
                    // own connection.
                    let stream = match acceptor.accept(socket).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let served = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
                    }
                });
            }
        }
    }
}
