//! `paystream serve`: the lake over the Postgres wire protocol, so psql, Grafana's Postgres data
//! source, Metabase and Superset connect unchanged.
//!
//! datafusion-postgres does the protocol work (simple and extended queries, the `pg_catalog`
//! that clients' schema browsers read, Arrow to Postgres types). Around it this module puts what
//! a server next to a payment pipeline needs: passwords, a statement allow-list that keeps the
//! lake read-only, a per-query deadline that also covers streaming the rows, a cap on
//! concurrent queries, one memory pool for all of them, and tables that follow new commits.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager,
    PgWireServerHandlers,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::cancel::CancelRequest;
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls;
use datafusion_postgres::pgwire::tokio::TlsAcceptor;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::channel::oneshot;
use futures::{Sink, Stream};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, RwLock, Semaphore};
use tokio::time::Instant;

use crate::{Error, LakeQuery, Result};

/// How the server listens and what it allows.
#[derive(Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// User name -> password. Empty: no authentication (only with `allow_anonymous`).
    pub users: HashMap<String, String>,
    pub allow_anonymous: bool,
    /// Longest a statement may run, planning and streaming its rows included.
    pub query_timeout: Duration,
    /// Statements running at once; more wait up to `query_timeout` for a slot.
    pub max_concurrent_queries: usize,
    /// How often tables are re-read for new commits.
    pub refresh_every: Duration,
    /// PEM certificate chain and private key: when set, every connection must use TLS.
    pub tls: Option<TlsFiles>,
}

/// Where the server's certificate and key are (PEM; the key PKCS#8, PKCS#1 or SEC1).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TlsFiles {
    /// The acceptor for these files, offering `alpn` protocols; errors name the file, never
    /// its content.
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<TlsAcceptor> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
            Error::Serve(format!("TLS {what} {}: {e}", path.display()))
        };
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| bad("certificate", &self.cert, &e))?;
        if certs.is_empty() {
            return Err(bad(
                "certificate",
                &self.cert,
                &"no certificate in the file",
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| bad("key", &self.key, &e))?;
        // Explicit provider: the dependency tree enables two, and rustls then refuses to pick.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Serve(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad("certificate and key", &self.cert, &e))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Passwords never printed: only who may log in.
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("ServeOptions")
            .field("listen", &self.listen)
            .field("users", &users)
            .field("query_timeout", &self.query_timeout)
            .field("max_concurrent_queries", &self.max_concurrent_queries)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

/// Statements that only read. Everything else (INSERT, UPDATE, DELETE, CREATE, DROP, COPY,
/// ALTER, ...) is refused before it is planned; so are `SET datafusion.*`, which would change
/// the engine (memory, catalog, execution) for every client.
fn check_read_only(statement: &Statement) -> PgWireResult<()> {
    let allowed = matches!(
        statement,
        Statement::Query { .. }
            | Statement::Explain { .. }
            | Statement::ExplainTable { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowFunctions { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::ShowSchemas { .. }
            | Statement::Set { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
    );
    let text = statement.to_string().to_ascii_lowercase();
    if !allowed {
        let verb = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        return Err(user_error(
            "25006",
            format!("the lake is read-only here: {verb} statements are not allowed"),
        ));
    }
    if matches!(statement, Statement::Set { .. }) && text.contains("datafusion.") {
        return Err(user_error(
            "42501",
            "engine settings (datafusion.*) cannot be changed over this connection",
        ));
    }
    Ok(())
}

/// The first hook: refuses what is not read-only, in both protocols.
struct ReadOnly;

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        check_read_only(statement).err().map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        check_read_only(statement).err().map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        check_read_only(statement).err().map(Err)
    }
}

/// Users and passwords. An unknown user gets a password nobody can type, so the answer is
/// the same "password authentication failed" as for a wrong password.
#[derive(Clone)]
struct Users(Arc<HashMap<String, String>>);

impl Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.0.get(user) {
            Some(p) => Ok(Password::new(None, p.as_bytes().to_vec())),
            None => Ok(Password::new(None, vec![0xff, 0x00, 0xfe])),
        }
    }
}

struct Anonymous(Arc<ConnectionManager>);

impl NoopStartupHandler for Anonymous {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.0.clone())
    }
}

/// Limits around datafusion-postgres's session service.
struct Guarded {
    inner: Arc<DfSessionService>,
    slots: Arc<Semaphore>,
    timeout: Duration,
    /// Cancel signals for queries whose rows are streaming. pgwire's own registry only
    /// covers planning: DataFusion does its work while the rows are pulled, after that.
    streams: Arc<ConnectionManager>,
}

impl Guarded {
    async fn slot(&self, deadline: Instant) -> PgWireResult<OwnedSemaphorePermit> {
        match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(user_error(
                "53000",
                "too many queries are running; none finished within the query timeout",
            )),
        }
    }

    fn timed_out(&self) -> PgWireError {
        user_error(
            "57014",
            format!(
                "canceling statement due to statement timeout ({}s)",
                self.timeout.as_secs_f64()
            ),
        )
    }

    /// The client's cancel signal for the rows of its next query. The connection registers
    /// once, for its whole life; each query takes the signal over from the one before, as a
    /// Postgres cancel request is for the query running now.
    async fn cancel_signal<C: ClientInfo>(&self, client: &C) -> oneshot::Receiver<()> {
        let registration = client.session_extensions().get_or_insert_with(|| {
            let (pid, key) = client.pid_and_secret_key();
            let (handle, guard) = self.streams.register(pid, key);
            StreamCancel {
                handle,
                _guard: guard,
            }
        });
        registration.handle.start_query().await
    }

    /// The rows of a query response keep the slot, the deadline and the cancel signal until
    /// the last one.
    fn guard(
        &self,
        response: Response,
        deadline: Instant,
        permit: Arc<OwnedSemaphorePermit>,
        cancel: Option<oneshot::Receiver<()>>,
    ) -> Response {
        match response {
            Response::Query(mut q) => {
                q.data_rows = Box::pin(Deadline {
                    rows: Some(q.data_rows),
                    sleep: Box::pin(tokio::time::sleep_until(deadline)),
                    message: self.timed_out().to_string(),
                    cancel,
                    _permit: permit,
                });
                Response::Query(q)
            }
            other => other,
        }
    }
}

/// A connection's registration for cancelling streaming queries; unregistered when the
/// connection (and so its session extensions) goes.
struct StreamCancel {
    handle: Arc<ConnectionHandle>,
    _guard: ConnectionGuard,
}

/// A row stream that ends with an error at its deadline or when its client cancels. Either
/// way the inner stream is dropped at once, which stops DataFusion's work for the query.
struct Deadline {
    rows: Option<Pin<Box<dyn Stream<Item = PgWireResult<DataRow>> + Send>>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    message: String,
    cancel: Option<oneshot::Receiver<()>>,
    _permit: Arc<OwnedSemaphorePermit>,
}

impl Stream for Deadline {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.rows.is_none() {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.rows = None;
            let message = std::mem::take(&mut self.message);
            return Poll::Ready(Some(Err(user_error("57014", message))));
        }
        if let Some(rx) = self.cancel.as_mut() {
            match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(())) => {
                    self.rows = None;
                    return Poll::Ready(Some(Err(user_error(
                        "57014",
                        "canceling statement due to user request (while its rows were computed)",
                    ))));
                }
                // A later query took the signal over: nothing more to watch.
                Poll::Ready(Err(_)) => self.cancel = None,
                Poll::Pending => {}
            }
        }
        match self.rows.as_mut() {
            Some(rows) => rows.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Guarded {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let deadline = Instant::now() + self.timeout;
        let permit = Arc::new(self.slot(deadline).await?);
        let mut cancel = Some(self.cancel_signal(client).await);
        let responses = tokio::time::timeout_at(
            deadline,
            SimpleQueryHandler::do_query(self.inner.as_ref(), client, query),
        )
        .await
        .map_err(|_| self.timed_out())??;
        // A simple query may hold several statements; the signal watches the first's rows.
        Ok(responses
            .into_iter()
            .map(|r| self.guard(r, deadline, permit.clone(), cancel.take()))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Guarded {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        ExtendedQueryHandler::query_parser(self.inner.as_ref())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let deadline = Instant::now() + self.timeout;
        let permit = Arc::new(self.slot(deadline).await?);
        let cancel = self.cancel_signal(client).await;
        let response = tokio::time::timeout_at(
            deadline,
            ExtendedQueryHandler::do_query(self.inner.as_ref(), client, portal, max_rows),
        )
        .await
        .map_err(|_| self.timed_out())??;
        Ok(self.guard(response, deadline, permit, Some(cancel)))
    }
}

struct Handlers {
    service: Arc<Guarded>,
    users: Option<Users>,
    connections: Arc<ConnectionManager>,
    require_tls: bool,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup {
            users: self.users.clone(),
            connections: self.connections.clone(),
            require_tls: self.require_tls,
        })
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(Canceller {
            planning: self.connections.clone(),
            streaming: self.service.streams.clone(),
        })
    }
}

/// A cancel request (psql's Ctrl-C) stops the query whichever phase it is in.
struct Canceller {
    planning: Arc<ConnectionManager>,
    streaming: Arc<ConnectionManager>,
}

#[async_trait]
impl CancelHandler for Canceller {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.planning.cancel(request.pid, &request.secret_key).await;
        self.streaming
            .cancel(request.pid, &request.secret_key)
            .await;
    }
}

/// Password authentication when users are configured, none otherwise; with TLS configured,
/// a plain-text connection is refused before it can send a password.
struct Startup {
    users: Option<Users>,
    connections: Arc<ConnectionManager>,
    require_tls: bool,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: datafusion_postgres::pgwire::messages::PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.require_tls && !client.is_secure() {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".to_owned(),
                "28000".to_owned(),
                "this server requires TLS: connect with sslmode=require".to_owned(),
            ))));
        }
        match &self.users {
            Some(users) => {
                let mut params = DefaultServerParameterProvider::default();
                params.default_transaction_read_only = true;
                CleartextPasswordAuthStartupHandler::new(users.clone(), params)
                    .with_connection_manager(self.connections.clone())
                    .on_startup(client, message)
                    .await
            }
            None => {
                Anonymous(self.connections.clone())
                    .on_startup(client, message)
                    .await
            }
        }
    }
}

/// Serve `lake` on `opts.listen` until `shutdown` resolves.
pub async fn serve_postgres(
    lake: LakeQuery,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    if opts.users.is_empty() && !opts.allow_anonymous {
        return Err(Error::Serve(
            "no users configured: set PAYSTREAM_SERVE_USERS=name:password[,name:password] \
             (or allow anonymous access explicitly)"
                .into(),
        ));
    }
    let ctx = lake.context();
    setup_pg_catalog(
        &ctx,
        "datafusion",
        Arc::new(datafusion_postgres::auth::AuthManager::default()),
    )
    .map_err(|e| Error::Serve(format!("setting up pg_catalog: {e}")))?;
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnly),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let service = Arc::new(Guarded {
        inner: Arc::new(DfSessionService::new_with_hooks(ctx, hooks)),
        slots: Arc::new(Semaphore::new(opts.max_concurrent_queries.max(1))),
        timeout: opts.query_timeout,
        streams: Arc::new(ConnectionManager::new()),
    });
    // "postgresql" lets clients that open with TLS directly (sslnegotiation=direct) in too.
    let tls = opts
        .tls
        .as_ref()
        .map(|t| t.acceptor(&[b"postgresql"]))
        .transpose()?;
    let handlers = Arc::new(Handlers {
        service,
        users: (!opts.users.is_empty()).then(|| Users(Arc::new(opts.users.clone()))),
        connections: Arc::new(ConnectionManager::new()),
        require_tls: tls.is_some(),
    });
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::Serve(format!("cannot listen on {}: {e}", opts.listen)))?;
    tracing::info!(
        listen = %opts.listen,
        users = opts.users.len(),
        timeout = ?opts.query_timeout,
        tls = tls.is_some(),
        "serving the lake over the Postgres protocol"
    );
    let lake = Arc::new(RwLock::new(lake));
    let refresher = tokio::spawn({
        let lake = lake.clone();
        let every = opts.refresh_every;
        async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = lake.write().await.refresh().await {
                    tracing::warn!(error = %e, "could not refresh the lake's tables");
                }
            }
        }
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let handlers = handlers.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        if let Err(e) = datafusion_postgres::pgwire::tokio::process_socket(socket, tls, handlers).await {
                            tracing::debug!(%peer, error = %e, "postgres connection ended with an error");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "accepting a postgres connection failed"),
            },
        }
    }
    refresher.abort();
    Ok(())
}
