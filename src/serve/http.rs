//! The HTTP routes of `serve` (axum): predictions from the current snapshot (no lock: an
//! `ArcSwap` load), learning and reloads through the learner thread, metrics, health, model
//! metadata and the status page. A bad request is a 4xx with a JSON `{"error": ...}` naming
//! what is wrong; the body size, the requests in flight and each request's time are bounded.

use super::learner::{Job, NamedValue, Rows, Snapshot};
use super::metrics::Metrics;
use crate::predictor::Predictor;
use crate::sparse::parse::Named;
use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crossbeam::channel::Sender;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What the handlers share.
pub struct App {
    /// The snapshot predictions come from.
    pub current: Arc<ArcSwap<Snapshot>>,
    /// The learner's queue.
    pub jobs: Sender<Job>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// When the server started.
    pub started: Instant,
}

/// Limits on what clients may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Requests handled at once (others wait).
    pub max_concurrency: usize,
    /// Longest a request may take, reading its body included.
    pub timeout: Duration,
}

/// The routes.
pub fn router(app: Arc<App>, limits: Limits) -> Router {
    Router::new()
        .route("/predict", post(predict))
        .route("/learn", post(learn))
        .route("/reload", post(reload))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/model", get(model))
        .route("/stats", get(stats))
        .route("/", get(|| async { Html(STATUS_PAGE) }))
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.timeout))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(limits.max_concurrency))
        .with_state(app)
}

/// A 4xx answer, counted.
fn bad(app: &App, status: StatusCode, what: impl Into<String>) -> Response {
    app.metrics.bad_requests_total.inc();
    (status, Json(json!({ "error": what.into() }))).into_response()
}

/// The rows of a JSON body's `"rows"`: numbers (null: missing) for a dense model, objects of
/// named features for a sparse one.
fn json_rows(body: &Value, p: &Predictor) -> Result<Rows, String> {
    let rows = body.get("rows").and_then(Value::as_array).ok_or("the body needs \"rows\": an array of rows")?;
    match p.features() {
        Some(d) => {
            let mut x = Vec::with_capacity(rows.len() * d);
            for (r, row) in rows.iter().enumerate() {
                let cells = row.as_array().ok_or_else(|| format!("row {r}: an array of {d} numbers (null: missing)"))?;
                if cells.len() != d {
                    return Err(format!("row {r}: {} values, the model takes {d}", cells.len()));
                }
                for (j, c) in cells.iter().enumerate() {
                    x.push(match c {
                        Value::Null => f32::NAN,
                        Value::Number(n) => n
                            .as_f64()
                            .map(|v| v as f32)
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| format!("row {r}, value {j}: {n} is not a finite f32"))?,
                        other => return Err(format!("row {r}, value {j}: {other} is not a number")),
                    });
                }
            }
            Ok(Rows::Dense(x))
        }
        None => {
            let mut out = Vec::with_capacity(rows.len());
            for (r, row) in rows.iter().enumerate() {
                let obj = row.as_object().ok_or_else(|| format!("row {r}: an object of named features (numbers or strings)"))?;
                let mut feats = Vec::with_capacity(obj.len());
                for (k, v) in obj {
                    feats.push((
                        k.clone(),
                        match v {
                            Value::Number(n) => {
                                NamedValue::Number(n.as_f64().ok_or_else(|| format!("row {r}, {k}: {n} is not a number"))? as f32)
                            }
                            Value::String(s) => NamedValue::Category(s.clone()),
                            Value::Bool(b) => NamedValue::Number(f32::from(u8::from(*b))),
                            Value::Null => NamedValue::Number(f32::NAN),
                            other => return Err(format!("row {r}, {k}: {other} is neither a number nor a string")),
                        },
                    ));
                }
                out.push(feats);
            }
            Ok(Rows::Named(out))
        }
    }
}

/// The outputs of `rows` under `p`.
fn outputs(p: &Predictor, rows: &Rows) -> Result<Vec<f32>, String> {
    let mut out = Vec::new();
    match rows {
        Rows::Dense(x) if !x.is_empty() => p.predict_batch(x, &mut out).map_err(|e| e.to_string())?,
        Rows::Dense(_) => {}
        Rows::Named(rows) => {
            for (r, row) in rows.iter().enumerate() {
                let named = row.iter().map(|(k, v)| {
                    (
                        k.as_str(),
                        match v {
                            NamedValue::Number(x) => Named::Number(*x),
                            NamedValue::Category(c) => Named::Category(c),
                        },
                    )
                });
                out.push(p.predict_named(named).map_err(|e| format!("row {r}: {e}"))?);
            }
        }
    }
    Ok(out)
}

const BINARY: &str = "application/octet-stream";

/// `POST /predict`: JSON `{"rows": [...]}` → `{"predictions": [...], "version": N}`; or, with
/// `Content-Type: application/octet-stream`, little-endian f32 rows (dense) → f32 outputs, the
/// version in `X-Model-Version`.
async fn predict(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let t = Instant::now();
    let snap = app.current.load();
    let p = &snap.predictor;
    let binary = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == BINARY.as_bytes());
    let rows = if binary {
        let Some(d) = p.features() else { return bad(&app, StatusCode::BAD_REQUEST, "a sparse model takes JSON rows of named features") };
        if body.len() % (4 * d) != 0 {
            return bad(&app, StatusCode::BAD_REQUEST, format!("{} bytes are not whole rows of {d} little-endian f32", body.len()));
        }
        Rows::Dense(body.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    } else {
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return bad(&app, StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")),
        };
        match json_rows(&v, p) {
            Ok(r) => r,
            Err(e) => return bad(&app, StatusCode::UNPROCESSABLE_ENTITY, e),
        }
    };
    let out = match outputs(p, &rows) {
        Ok(o) => o,
        Err(e) => return bad(&app, StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    app.metrics.predictions_total.inc_by(out.len() as u64);
    let resp = if binary {
        let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
        (
            [(header::CONTENT_TYPE, BINARY.to_string()), (header::HeaderName::from_static("x-model-version"), snap.version.to_string())],
            bytes,
        )
            .into_response()
    } else {
        // NaN (a row the model's missing-value policy drops) is null.
        let preds: Vec<Option<f32>> = out.iter().map(|v| v.is_finite().then_some(*v)).collect();
        Json(json!({ "predictions": preds, "version": snap.version })).into_response()
    };
    app.metrics.record_predict(t.elapsed());
    resp
}

/// Sends `job` to the learner and waits for its answer off the async threads.
async fn ask(app: &App, job: impl FnOnce(Sender<Result<u64, String>>) -> Job) -> Result<u64, String> {
    let (tx, rx) = crossbeam::channel::bounded(1);
    app.jobs.send(job(tx)).map_err(|_| "the learner has stopped".to_string())?;
    tokio::task::spawn_blocking(move || rx.recv().unwrap_or_else(|_| Err("the learner has stopped".into())))
        .await
        .unwrap_or_else(|e| Err(format!("the learner's answer was lost: {e}")))
}

/// `POST /learn`: `{"rows": [...], "labels": [...]}` → `{"learned": n, "version": N}`.
async fn learn(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(&app, StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")),
    };
    let snap = app.current.load_full();
    let predictor = &snap.predictor;
    let rows = match json_rows(&v, predictor) {
        Ok(r) => r,
        Err(e) => return bad(&app, StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let n = match &rows {
        Rows::Dense(x) => x.len() / predictor.features().unwrap_or(1).max(1),
        Rows::Named(r) => r.len(),
    };
    let labels: Option<Vec<f32>> =
        v.get("labels").and_then(Value::as_array).and_then(|a| a.iter().map(|y| y.as_f64().map(|y| y as f32)).collect());
    let Some(labels) = labels else { return bad(&app, StatusCode::UNPROCESSABLE_ENTITY, "the body needs \"labels\": an array of numbers") };
    if labels.len() != n {
        return bad(&app, StatusCode::UNPROCESSABLE_ENTITY, format!("{} labels for {n} rows", labels.len()));
    }
    match ask(&app, |reply| Job::Learn { rows, labels, reply }).await {
        Ok(version) => Json(json!({ "learned": n, "version": version })).into_response(),
        Err(e) => bad(&app, StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

/// `POST /reload`: loads the model file again → `{"version": N}`.
async fn reload(State(app): State<Arc<App>>) -> Response {
    match ask(&app, Job::Reload).await {
        Ok(version) => Json(json!({ "version": version })).into_response(),
        Err(e) => bad(&app, StatusCode::CONFLICT, e),
    }
}

fn age(snap: &Snapshot) -> f64 {
    SystemTime::now().duration_since(snap.taken).map_or(0.0, |d| d.as_secs_f64())
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.metrics.model_age_seconds.set(age(&app.current.load()));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.encode()).into_response()
}

/// `GET /model`: what the snapshot is, and its heaviest weights.
async fn model(State(app): State<Arc<App>>) -> Json<Value> {
    let snap = app.current.load();
    let p = &snap.predictor;
    let (kind, weights): (&str, Vec<f32>) = match p {
        Predictor::Dense { model, .. } => ("dense", model.weights.clone()),
        Predictor::Sparse { model, .. } => ("sparse", model.table.weights()),
    };
    let mut top: Vec<(usize, f32)> = weights.iter().copied().enumerate().filter(|(_, w)| *w != 0.0).collect();
    top.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    top.truncate(20);
    Json(json!({
        "kind": kind,
        "loss": format!("{:?}", p.loss()),
        "features": p.features(),
        "version": snap.version,
        "rows_learned": snap.rows_learned,
        "age_seconds": age(&snap),
        "top_weights": top.iter().map(|(i, w)| json!({ "index": i, "weight": w })).collect::<Vec<_>>(),
    }))
}

/// `GET /stats`: what the status page plots (counters; the page takes rates).
async fn stats(State(app): State<Arc<App>>) -> Json<Value> {
    let snap = app.current.load();
    Json(stats_json(&app.metrics, snap.version, age(&snap), app.started.elapsed().as_secs_f64()))
}

/// The status page's numbers: the metrics, the model's `version` and `age` in seconds, the
/// `uptime`, and two minutes of once-a-second samples.
pub fn stats_json(m: &Metrics, version: u64, age: f64, uptime: f64) -> Value {
    let lat = m.recent_latency();
    json!({
        "uptime_seconds": uptime,
        "rows_learned": m.rows_learned_total.get(),
        "predictions": m.predictions_total.get(),
        "bad_requests": m.bad_requests_total.get(),
        "version": version,
        "model_age_seconds": age,
        "window_loss": m.window_loss.get(),
        "window_accuracy": m.window_accuracy.get(),
        "progressive_loss": m.progressive_loss.get(),
        "drift_alarms": m.drift_alarms_total.get(),
        "predict_latency_us": { "p50": lat.p50 as f64 / 1e3, "p99": lat.p99 as f64 / 1e3, "p999": lat.p999 as f64 / 1e3 },
        "history": m.history(),
    })
}

/// The status page.
pub const STATUS_PAGE: &str = include_str!("status.html");
