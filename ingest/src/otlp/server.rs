//! The two OTLP listeners and the one rule they share: decode, hand over, wait for the commit,
//! answer with the status an OTLP exporter understands.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::decode::{decode_request, DecodedSpans};
use crate::{Error, Result};

const PROTOBUF: &str = "application/x-protobuf";

/// Spans of one request on their way to the lake; `ack` gets the commit's outcome.
#[derive(Debug)]
pub struct SpanRequest {
    pub spans: DecodedSpans,
    pub ack: oneshot::Sender<std::result::Result<(), String>>,
}

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub max_request_bytes: usize,
}

/// Counters of a running receiver.
#[derive(Debug, Default)]
pub struct OtlpStats {
    pub requests: AtomicU64,
    pub spans: AtomicU64,
    pub rejected_spans: AtomicU64,
    /// Requests answered "retry later" because the sink was behind.
    pub busy: AtomicU64,
    /// Requests refused as malformed (bad protobuf, wrong content type, too large).
    pub malformed: AtomicU64,
}

/// A running receiver; [`OtlpReceiver::shutdown`] stops accepting and waits for the servers.
pub struct OtlpReceiver {
    /// Bound gRPC address (useful when asked for port 0).
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub stats: Arc<OtlpStats>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Stop accepting connections and wait for the servers to finish their in-flight requests
    /// (which wait for the sink: keep it running until this returns).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[derive(Clone)]
struct Handler {
    tx: mpsc::Sender<SpanRequest>,
    stats: Arc<OtlpStats>,
}

/// Why a request was not accepted.
enum Refusal {
    /// The sink is behind, stopping, or its commit failed: retry later.
    Unavailable(String),
}

impl Handler {
    /// Hand `req` to the sink and wait for its commit. Returns the partial-success part of the
    /// answer (spans refused for bad ids).
    async fn accept(
        &self,
        req: &ExportTraceServiceRequest,
    ) -> std::result::Result<Option<ExportTracePartialSuccess>, Refusal> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let now = chrono::Utc::now().timestamp_micros();
        let spans = decode_request(req, now)
            .map_err(|e| Refusal::Unavailable(format!("could not build the rows: {e}")))?;
        let partial = (spans.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(spans.rejected).unwrap_or(i64::MAX),
            error_message: spans.error.clone().unwrap_or_default(),
        });
        self.stats
            .rejected_spans
            .fetch_add(spans.rejected, Ordering::Relaxed);
        let rows = spans.batch.num_rows() as u64;
        if rows == 0 {
            return Ok(partial);
        }
        let (ack, done) = oneshot::channel();
        match self.tx.try_send(SpanRequest { spans, ack }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Unavailable(
                    "the lake sink is behind; retry later".into(),
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(Refusal::Unavailable("the pipeline is stopping".into()))
            }
        }
        match done.await {
            Ok(Ok(())) => {
                self.stats.spans.fetch_add(rows, Ordering::Relaxed);
                Ok(partial)
            }
            Ok(Err(e)) => Err(Refusal::Unavailable(format!(
                "the spans could not be committed ({e}); retry"
            ))),
            Err(_) => Err(Refusal::Unavailable("the pipeline is stopping".into())),
        }
    }
}

#[tonic::async_trait]
impl TraceService for Handler {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> std::result::Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        match self.accept(request.get_ref()).await {
            Ok(partial_success) => Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success,
            })),
            Err(Refusal::Unavailable(m)) => Err(tonic::Status::unavailable(m)),
        }
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP expects with every error.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn http_error(status: StatusCode, grpc_code: i32, message: String) -> Response {
    debug!(%status, %message, "otlp/http request refused");
    let body = RpcStatus {
        code: grpc_code,
        message,
    }
    .encode_to_vec();
    let mut r = (status, [(header::CONTENT_TYPE, PROTOBUF)], body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

async fn http_traces(State(h): State<Handler>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if content_type != PROTOBUF {
        h.stats.malformed.fetch_add(1, Ordering::Relaxed);
        let why = if content_type == "application/json" {
            "OTLP/JSON is not supported; send protobuf (Content-Type: application/x-protobuf)"
                .to_owned()
        } else {
            format!("unsupported Content-Type {content_type:?}; expected application/x-protobuf")
        };
        return http_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, 3, why);
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    if !encoding.eq_ignore_ascii_case("identity") {
        h.stats.malformed.fetch_add(1, Ordering::Relaxed);
        return http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            format!("unsupported Content-Encoding {encoding:?}; send uncompressed bodies"),
        );
    }
    let req = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            h.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return http_error(
                StatusCode::BAD_REQUEST,
                3,
                format!("not an OTLP ExportTraceServiceRequest: {e}"),
            );
        }
    };
    match h.accept(&req).await {
        Ok(partial_success) => {
            let body = ExportTraceServiceResponse { partial_success }.encode_to_vec();
            (StatusCode::OK, [(header::CONTENT_TYPE, PROTOBUF)], body).into_response()
        }
        Err(Refusal::Unavailable(m)) => http_error(StatusCode::SERVICE_UNAVAILABLE, 14, m),
    }
}

async fn unknown_endpoint(uri: axum::http::Uri) -> Response {
    http_error(
        StatusCode::NOT_FOUND,
        5,
        format!(
            "no such endpoint {}; traces go to POST /v1/traces",
            uri.path()
        ),
    )
}

/// Bind the configured listeners and start serving; spans go to `tx`.
pub async fn start(opts: OtlpOptions, tx: mpsc::Sender<SpanRequest>) -> Result<OtlpReceiver> {
    let stats = Arc::new(OtlpStats::default());
    let handler = Handler {
        tx,
        stats: stats.clone(),
    };
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Otlp(format!("cannot listen on {addr}: {e}")))
    };

    let mut grpc_addr = None;
    if let Some(addr) = opts.grpc {
        let listener = bind(addr).await?;
        grpc_addr = Some(listener.local_addr()?);
        let service = TraceServiceServer::new(handler.clone())
            .max_decoding_message_size(opts.max_request_bytes);
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let res = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    },
                )
                .await;
            if let Err(e) = res {
                warn!(error = %e, "otlp/grpc server stopped");
            }
        }));
    }

    let mut http_addr = None;
    if let Some(addr) = opts.http {
        let listener = bind(addr).await?;
        http_addr = Some(listener.local_addr()?);
        let app = Router::new()
            .route("/v1/traces", post(http_traces))
            .fallback(unknown_endpoint)
            .layer(DefaultBodyLimit::max(opts.max_request_bytes))
            .with_state(handler.clone());
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let res = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = res {
                warn!(error = %e, "otlp/http server stopped");
            }
        }));
    }
    info!(grpc = ?grpc_addr, http = ?http_addr, "otlp receiver listening");
    Ok(OtlpReceiver {
        grpc_addr,
        http_addr,
        stats,
        stop,
        tasks,
    })
}
