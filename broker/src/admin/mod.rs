//! The admin listener: metrics, health and readiness, and the admin JSON API over HTTP/1.1, for the
//! operators and the monitoring around a long-lived broker.
//!
//! It runs on its own arbiter (one thread with its own runtime), so a slow scrape never delays a
//! session or the Router, and it only ever asks the actors with bounded waits. Loopback by default;
//! a non-loopback address requires `admin.token`, which every request but the two health probes
//! must carry as `Authorization: Bearer TOKEN`, and TLS (`tls.rs`). `admin.read_token` may read
//! but not act (`access.rs`).
//!
//! | path | answer | role |
//! |---|---|---|
//! | `GET /healthz` | 200 `ok`: the process serves | none |
//! | `GET /readyz` | 200 `ready`, or 503 with the reason (starting, shutting down, store not answering) | none |
//! | `GET /metrics` | the counters of [`Metrics`](crate::metrics::Metrics), Prometheus text | read |
//! | `GET /` | the live dashboard (`dashboard.rs`), reading `/api/v1/status` | none |
//! | `GET /api/v1/...` | the JSON API (`api.rs`, `status.rs`), described by `openapi.json` | read (a body peek: full) |
//! | `POST`/`DELETE /api/v1/...` | the actions (`actions.rs`) | full |

mod access;
mod actions;
mod api;
mod dashboard;
mod health;
mod json;
mod rates;
mod status;
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::sync::oneshot;

pub use health::Readiness;
pub(crate) use tls::acceptor as tls_acceptor;

use self::access::{Guard, Role, Tokens};
use self::tls::{Peer, TlsListener};
use crate::metrics::{self, Metrics, Snapshot};
use crate::registry::Registry;
use crate::reload::Live;
use crate::router::{self, Router};
use crate::settings::Settings;
use crate::store::StoreHandle;

/// What the admin listener reads from the rest of the broker.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub broker: AdminParts,
    /// For the status: durability, limits.
    pub settings: Arc<Settings>,
    /// When the broker started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// Accepted and delivered per second, sampled on this listener's thread.
    rates: rates::Rates,
    /// The digests of `admin.token` and `admin.read_token`.
    tokens: Tokens,
}

/// The handles on the broker the admin listener asks.
#[derive(Clone)]
pub(crate) struct AdminParts {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub store: StoreHandle,
    pub router: Addr<Router>,
    pub registry: Addr<Registry>,
    pub connections: Arc<AtomicUsize>,
}

impl AdminState {
    pub(crate) fn new(settings: Arc<Settings>, parts: AdminParts) -> Self {
        Self {
            tokens: Tokens::new(&settings.admin),
            broker: parts,
            settings,
            started_at_ms: now_ms(),
            rates: rates::Rates::default(),
        }
    }
}

/// The wall clock in ms since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The running admin listener; dropping it does not stop it, [`AdminListener::stop`] does.
pub(crate) struct AdminListener {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    arbiter: Arbiter,
}

impl AdminListener {
    /// Binds `listen` (already validated), before anything else of the broker starts, so a port
    /// in use refuses the start with nothing to undo.
    pub(crate) fn bind(listen: &str) -> std::io::Result<std::net::TcpListener> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    /// Serves on `listener` ([`AdminListener::bind`]) on a new arbiter; with TLS when `tls` is
    /// given, each connection served the admin certificate `tls` holds when it arrives.
    pub(crate) fn start(
        listener: std::net::TcpListener,
        state: AdminState,
        tls: Option<Arc<Live>>,
    ) -> std::io::Result<AdminListener> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let arbiter = Arbiter::new();
        let sampling = rates::run(state.rates.clone(), state.broker.metrics.clone());
        let app = routes(state);
        let tls_on = tls.is_some();
        let spawned = arbiter.spawn(async move {
            actix_rt::spawn(sampling);
            if let Err(error) = serve(listener, app, tls, stopped).await {
                tracing::error!(%error, "admin listener failed");
            }
        });
        if !spawned {
            return Err(std::io::Error::other("the admin arbiter has stopped"));
        }
        tracing::info!(address = %addr, tls = tls_on, "admin listener at {addr}");
        Ok(AdminListener {
            addr,
            stop,
            arbiter,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for its thread to end (and let go of its store handle).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        self.arbiter.stop();
        let arbiter = self.arbiter;
        if tokio::task::spawn_blocking(move || arbiter.join())
            .await
            .is_err()
        {
            tracing::error!("admin listener thread panicked");
        }
    }
}

/// Serves `app` on `listener` until `stopped`, over TLS when `tls` is given.
async fn serve(
    listener: std::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<Live>>,
    stopped: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = app.into_make_service_with_connect_info::<Peer>();
    let shutdown = async {
        let _ = stopped.await;
    };
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(live) => {
            axum::serve(TlsListener::new(listener, live)?, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// The routes, each group behind the role it needs (the table at the top of this file).
fn routes(state: AdminState) -> axum::Router {
    let needs = |needs| {
        let guard = Guard {
            tokens: state.tokens.clone(),
            needs,
        };
        axum::middleware::from_fn_with_state(guard, access::authorize)
    };
    let read = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/status", get(status::status))
        .route("/api/v1/clients", get(api::clients))
        .route("/api/v1/mailboxes", get(api::mailboxes))
        .route("/api/v1/mailboxes/{id}", get(api::mailbox))
        .route_layer(needs(Role::Read));
    let act = axum::Router::new()
        .route("/api/v1/clients/{id}/kick", post(actions::kick))
        .route("/api/v1/mailboxes/{id}/purge", post(actions::purge))
        .route(
            "/api/v1/mailboxes/{id}/entries/{entry}",
            delete(actions::remove_entry),
        )
        .route_layer(needs(Role::Full));
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(dashboard::routes())
        .merge(read)
        .merge(act)
        .with_state(state)
}

/// The OpenAPI 3.1 document of the API, committed beside this file and checked against the live
/// server by `tests/tests/e2e/admin_openapi.rs`.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if let Some(reason) = state.broker.readiness.not_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response();
    }
    match tokio::time::timeout(health::STORE_DEADLINE, state.broker.store.last_id()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(error)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store failed: {error}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store not answering\n".to_string(),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let totals = tokio::time::timeout(
        health::STORE_DEADLINE,
        state.broker.router.send(router::Totals),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    let oldest = status::oldest_sent_at_ms(&state).await;
    let snapshot = Snapshot {
        connections: state.broker.connections.load(Ordering::Relaxed) as u64,
        mailboxes: totals.mailboxes,
        mailbox_entries: totals.entries,
        mailbox_bytes: totals.bytes,
        oldest_entry_age_secs: oldest.map_or(0, |at| api::age_secs(now_ms(), at)),
    };
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.broker.metrics.render(&snapshot),
    )
        .into_response()
}
