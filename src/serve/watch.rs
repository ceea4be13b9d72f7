//! `train --metrics-addr`: a training run's `GET /metrics`, `/stats`, `/healthz` and status
//! page, served from a thread of its own while the pipeline runs (the same metrics and page
//! as `serve`; the run feeds them).

use super::http::{stats_json, STATUS_PAGE};
use super::metrics::Metrics;
use super::ServeError;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What the routes read: the metrics, and the model's version as the run publishes it.
struct Watched {
    metrics: Arc<Metrics>,
    version: Box<dyn Fn() -> u64 + Send + Sync>,
    started: Instant,
}

/// A running metrics server; [`Watch::stop`] ends it.
pub struct Watch {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<tokio::sync::Notify>,
    thread: std::thread::JoinHandle<()>,
}

/// Serves `metrics` (and `version()`, the run's model version) on `addr` until stopped.
pub fn watch(addr: SocketAddr, metrics: Arc<Metrics>, version: impl Fn() -> u64 + Send + Sync + 'static) -> Result<Watch, ServeError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| ServeError::Bind { addr, source })?;
    let state = Arc::new(Watched { metrics, version: Box::new(version), started: Instant::now() });
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Run(format!("the async runtime: {e}")))?;
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let app = Router::new()
                    .route("/metrics", get(metrics_text))
                    .route("/stats", get(stats))
                    .route("/healthz", get(|| async { "ok\n" }))
                    .route("/", get(|| async { Html(STATUS_PAGE) }))
                    .with_state(state);
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app).with_graceful_shutdown(async move { stopped.notified().await }).await {
                            eprintln!("warning: the metrics server stopped: {e}");
                        }
                    }
                    Err(e) => eprintln!("warning: the metrics server: {e}"),
                }
            })
        })
        .map_err(|e| ServeError::Run(format!("the metrics thread: {e}")))?;
    Ok(Watch { addr: local, stop, thread })
}

impl Watch {
    /// Stops serving (requests in flight finish first).
    pub fn stop(self) {
        self.stop.notify_one();
        let _ = self.thread.join();
    }
}

async fn metrics_text(State(w): State<Arc<Watched>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], w.metrics.encode())
}

async fn stats(State(w): State<Arc<Watched>>) -> Json<serde_json::Value> {
    Json(stats_json(&w.metrics, (w.version)(), 0.0, w.started.elapsed().as_secs_f64()))
}
