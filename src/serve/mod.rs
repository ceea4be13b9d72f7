//! `streamsgd serve`: a model that keeps learning while an application asks it for
//! predictions over HTTP. One learner thread ([`learner`]) owns the model and publishes frozen
//! snapshots; the HTTP handlers ([`http`], axum on a tokio runtime) predict from the current
//! one without a lock; [`metrics`] feeds `GET /metrics` (Prometheus) and the status page.
//!
//! axum is the HTTP stack: hyper underneath (the most used Rust HTTP implementation), tower
//! layers for the body, concurrency and time limits, and a small API; the blocking learner stays
//! on its own thread, so the async side only parses, predicts and answers.

pub mod http;
pub mod learner;
pub mod metrics;
pub mod watch;

use crate::online::{OnlineError, OnlineModel};
use arc_swap::ArcSwap;
use http::{App, Limits};
use learner::{first_snapshot, Learner, LearnerSettings};
use metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// How to serve.
pub struct ServeConfig {
    /// Where to listen (port 0: any free one).
    pub listen: SocketAddr,
    /// The learner: model file, checkpoints, replay.
    pub learner: LearnerSettings,
    /// Limits on requests.
    pub limits: Limits,
    /// Threads answering requests.
    pub threads: usize,
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The model file could not be loaded.
    #[error(transparent)]
    Model(#[from] OnlineError),
    /// The address could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server or the learner failed.
    #[error("{0}")]
    Run(String),
}

/// What a run did.
#[derive(Debug)]
pub struct ServeOutcome {
    /// Rows learned while serving.
    pub rows_learned: u64,
}

/// Serves until SIGTERM or Ctrl-C: then stops accepting, lets requests in flight finish, and
/// saves the model to the learner's `save` path. `ready` is told the address once listening.
pub fn serve(cfg: ServeConfig, ready: impl FnOnce(SocketAddr)) -> Result<ServeOutcome, ServeError> {
    let model = OnlineModel::load(&cfg.learner.model)?;
    let metrics = Arc::new(Metrics::default());
    let current = Arc::new(ArcSwap::from_pointee(first_snapshot(&model)));
    metrics.model_version.set(1);
    let (jobs, queue) = crossbeam::channel::bounded(1024);
    let learner = Learner::new(cfg.learner, model, current.clone(), metrics.clone());
    // The server stops when the learner does (a source that fails to open, a learning error).
    let learner_done = Arc::new(tokio::sync::Notify::new());
    let done = learner_done.clone();
    let learning = std::thread::Builder::new()
        .name("learner".into())
        .spawn(move || {
            let out = learner.run(queue);
            if let Err(e) = &out {
                eprintln!("error: the learner stopped: {e}");
            }
            done.notify_one();
            out
        })
        .map_err(|e| ServeError::Run(format!("the learner thread: {e}")))?;
    let app = Arc::new(App { current, jobs, metrics, started: Instant::now() });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| ServeError::Run(format!("the async runtime: {e}")))?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|source| ServeError::Bind { addr: cfg.listen, source })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: cfg.listen, source })?;
        ready(addr);
        axum::serve(listener, http::router(app.clone(), cfg.limits))
            .with_graceful_shutdown(async move {
                tokio::select! {
                    () = stop_signal() => {}
                    () = learner_done.notified() => {}
                }
            })
            .await
            .map_err(|e| ServeError::Run(format!("the server: {e}")))
    });
    // The learner ends once the handlers' end of its queue is gone, saving the model.
    drop(app);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    let learned = learning.join().map_err(|_| ServeError::Run("the learner thread panicked".into()))?.map_err(ServeError::Run);
    served?;
    Ok(ServeOutcome { rows_learned: learned? })
}

/// Resolves at the first SIGTERM or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    eprintln!("stopping: finishing the requests in flight, then saving");
}
