//! What `serve` measures: Prometheus metrics for `GET /metrics` (the official client's text
//! format) and the last second's prediction latency percentiles (HdrHistogram) for the status
//! page's `GET /stats`.

use crate::latency::{Latency, Percentiles};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A float gauge.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// The server's metrics (cheap to update from any thread).
pub struct Metrics {
    registry: Registry,
    /// Rows learned (from `/learn` and the replay).
    pub rows_learned_total: Counter,
    /// Rows rejected by the learner (with skip-bad).
    pub rows_rejected_total: Counter,
    /// Rows dropped for a missing value.
    pub rows_dropped_total: Counter,
    /// Rows predicted.
    pub predictions_total: Counter,
    /// Requests answered with a 4xx.
    pub bad_requests_total: Counter,
    /// Page-Hinkley alarms on the windows' loss.
    pub drift_alarms_total: Counter,
    /// The snapshot's version.
    pub model_version: Gauge,
    /// Seconds since the snapshot was taken (set when scraped).
    pub model_age_seconds: FloatGauge,
    /// Progressive loss since start.
    pub progressive_loss: FloatGauge,
    /// Progressive loss of the rows learned between the last two snapshots.
    pub window_loss: FloatGauge,
    /// Progressive accuracy of those rows (classification).
    pub window_accuracy: FloatGauge,
    /// `/predict` latency (request parsed to answer encoded).
    pub predict_seconds: Histogram,
    /// `/learn` latency in the learner.
    pub learn_seconds: Histogram,
    recent: Mutex<Recent>,
    history: Mutex<History>,
}

/// How many once-a-second samples `/stats` keeps for the status page (two minutes).
const HISTORY: usize = 120;

/// One second of the server's life, as the status page plots it.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Sample {
    /// Seconds since the server started.
    pub t: f64,
    /// Rows learned by then.
    pub rows_learned: u64,
    /// Rows predicted by then.
    pub predictions: u64,
    /// The last window's progressive loss.
    pub window_loss: f64,
    /// `/predict` latency percentiles of the second before, µs.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
}

/// The last [`HISTORY`] samples.
struct History {
    started: Instant,
    samples: std::collections::VecDeque<Sample>,
}

/// Prediction latency of the current second, and the percentiles of the last whole one.
struct Recent {
    since: Instant,
    now: Latency,
    last: Percentiles,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("streamsgd");
        let m = Metrics {
            rows_learned_total: Counter::default(),
            rows_rejected_total: Counter::default(),
            rows_dropped_total: Counter::default(),
            predictions_total: Counter::default(),
            bad_requests_total: Counter::default(),
            drift_alarms_total: Counter::default(),
            model_version: Gauge::default(),
            model_age_seconds: FloatGauge::default(),
            progressive_loss: FloatGauge::default(),
            window_loss: FloatGauge::default(),
            window_accuracy: FloatGauge::default(),
            predict_seconds: Histogram::new(exponential_buckets(5e-6, 2.0, 20)),
            learn_seconds: Histogram::new(exponential_buckets(5e-6, 2.0, 24)),
            recent: Mutex::new(Recent { since: Instant::now(), now: Latency::default(), last: Latency::default().percentiles() }),
            history: Mutex::new(History { started: Instant::now(), samples: Default::default() }),
            registry: Registry::default(),
        };
        registry.register("rows_learned", "Rows learned (POST /learn and the replayed file)", m.rows_learned_total.clone());
        registry.register("rows_rejected", "Rows the learner rejected", m.rows_rejected_total.clone());
        registry.register("rows_dropped", "Rows dropped for a missing value", m.rows_dropped_total.clone());
        registry.register("predictions", "Rows predicted", m.predictions_total.clone());
        registry.register("bad_requests", "Requests answered with a 4xx status", m.bad_requests_total.clone());
        registry.register("drift_alarms", "Page-Hinkley alarms on the windows' progressive loss", m.drift_alarms_total.clone());
        registry.register("model_version", "Version of the snapshot predictions come from", m.model_version.clone());
        registry.register("model_age_seconds", "Seconds since that snapshot was taken", m.model_age_seconds.clone());
        registry.register("progressive_loss", "Mean progressive (predict-then-learn) loss since start", m.progressive_loss.clone());
        registry.register("window_loss", "Progressive loss of the rows learned between the last two snapshots", m.window_loss.clone());
        registry.register("window_accuracy", "Progressive accuracy of those rows (classification)", m.window_accuracy.clone());
        registry.register("predict_latency_seconds", "POST /predict latency", m.predict_seconds.clone());
        registry.register("learn_latency_seconds", "POST /learn latency in the learner", m.learn_seconds.clone());
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Records one `/predict` that took `elapsed`.
    pub fn record_predict(&self, elapsed: Duration) {
        self.predict_seconds.observe(elapsed.as_secs_f64());
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.since.elapsed() >= Duration::from_secs(1) {
            r.last = r.now.percentiles();
            r.now = Latency::default();
            r.since = Instant::now();
        }
        r.now.record(elapsed.as_nanos() as u64);
    }

    /// The last whole second's `/predict` latency percentiles (zeros after a quiet second).
    pub fn recent_latency(&self) -> Percentiles {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.since.elapsed() >= Duration::from_secs(2) {
            // Nothing recorded for a whole second: nothing to show.
            r.last = Latency::default().percentiles();
            r.now = Latency::default();
            r.since = Instant::now();
        }
        r.last
    }

    /// Takes this second's sample, unless one was taken less than a second ago (called often by
    /// the learner thread).
    pub fn sample(&self) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let t = h.started.elapsed().as_secs_f64();
        if h.samples.back().is_some_and(|s| t - s.t < 1.0) {
            return;
        }
        let lat = self.recent_latency();
        let us = |ns: u64| ns as f64 / 1e3;
        h.samples.push_back(Sample {
            t,
            rows_learned: self.rows_learned_total.get(),
            predictions: self.predictions_total.get(),
            window_loss: self.window_loss.get(),
            p50_us: us(lat.p50),
            p99_us: us(lat.p99),
            p999_us: us(lat.p999),
        });
        if h.samples.len() > HISTORY {
            h.samples.pop_front();
        }
    }

    /// The samples of the last two minutes, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        self.history.lock().unwrap_or_else(|p| p.into_inner()).samples.iter().copied().collect()
    }
}
