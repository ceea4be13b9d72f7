//! Training across processes on timely dataflow: the pipeline's shards become timely workers,
//! spread over processes and machines and started with timely's own arguments (`-w` workers
//! per process, `-n` processes, `-p` this process's index, `-h` a hostfile of `host:port`
//! lines).
//!
//! Every worker maps the same `.ssgd` file and takes the batches the single-process pipeline
//! would route to the shard with its index (batch `i` to worker `i mod W`), learns `K` of them
//! (`--merge-every`), then sends its replica and the examples it learned since the last merge
//! into a dataflow that **broadcasts** it to every worker, at the merge epoch as timestamp.
//! When the probe's frontier passes the epoch, every replica of that epoch has arrived at
//! every worker (the frontier is the merge barrier); each worker sorts them by worker index
//! and averages them with the pipeline's rule ([`weighted_average`]), so all adopt the same
//! model, and one process with N workers and N processes with one worker compute the same
//! merges in the same order. Workers that run out of batches keep attending merges (with no
//! examples) until every worker is done; the last merge also carries each worker's counters
//! and latency histogram, and worker 0 writes the model (atomically) and the report.
//!
//! A process that dies or never starts must not leave the others waiting forever: a
//! watchdog ends the process with an error when no merge completes for `peer_timeout`.
//! No `unsafe` here.

use crate::batch::Segment;
use crate::dataset::Dataset;
use crate::latency::{Latency, Percentiles};
use crate::learner::{LearnError, Learner, LearnerConfig};
use crate::merge::weighted_average;
use crate::metrics::{Evaluation, Progressive};
use crate::model::ModelFile;
use crate::pipeline::{self, Input, PipelineError};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Input as _, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

/// What a cluster run does.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The `.ssgd` file every worker maps (the same path on every host).
    pub data: PathBuf,
    /// Loss, optimizer, batch size, bad-row policy.
    pub learner: LearnerConfig,
    /// Merge every K batches per worker.
    pub merge_every: usize,
    /// Fraction of the rows (the last ones) held out; worker 0 reports on them.
    pub holdout: f64,
    /// Where worker 0 writes the merged model.
    pub save: Option<PathBuf>,
    /// Give up when no merge completes for this long (a peer died or never started).
    pub peer_timeout: Duration,
}

/// Why a cluster run failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The data or the model file.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The dataset could not be opened.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::FormatError),
    /// Learning stopped on some worker.
    #[error("worker {worker}: {error}")]
    Learn {
        /// The worker.
        worker: usize,
        /// What happened.
        error: LearnError,
    },
    /// Timely could not start (bad arguments, a hostfile, a connection).
    #[error("timely: {0}")]
    Timely(String),
    /// The model could not be written.
    #[error("saving the model: {0}")]
    Save(String),
}

/// One worker's replica at a merge epoch (what the dataflow broadcasts).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Share {
    /// The merge epoch (also the dataflow timestamp).
    epoch: u64,
    worker: u32,
    /// Examples learned since the last merge.
    examples: f64,
    weights: Vec<f32>,
    /// No batches left on this worker.
    done: bool,
    /// The worker's totals, sent once it is done.
    summary: Option<Summary>,
}

/// A worker's totals.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Summary {
    rows: u64,
    learned: u64,
    rejected: u64,
    /// Progressive validation sums.
    progress: Progressive,
    /// Per-batch compute latency (HdrHistogram V2 bytes).
    latency: Vec<u8>,
    error: Option<String>,
}

/// The report of a cluster run (written by worker 0; stable field names).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterReport {
    /// Workers in the cluster (processes × workers per process).
    pub workers: usize,
    /// Rows that entered training, over all workers.
    pub rows: u64,
    /// Rows learned.
    pub rows_learned: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// Wall time of worker 0 from the cluster being connected to the last merge, seconds.
    pub seconds: f64,
    /// rows / seconds: every worker's rows.
    pub rows_per_sec: f64,
    /// Merge epochs.
    pub merges: u64,
    /// Bytes each worker sends per merge (its replica to every worker, self included).
    pub merge_bytes_per_worker: u64,
    /// Mean wall time of a merge at worker 0 (send → frontier passed → average), µs.
    pub merge_us_mean: f64,
    /// Mean progressive (predict-then-learn) loss over all workers.
    pub progressive_loss: f64,
    /// Progressive accuracy (classification).
    pub progressive_accuracy: Option<f64>,
    /// Holdout metrics.
    pub holdout: Option<Evaluation>,
    /// Per-batch learning time, all workers' histograms merged, ns.
    pub latency_ns: Percentiles,
}

/// Runs this process's workers; `timely_args` are timely's own (`-w`, `-n`, `-p`, `-h`).
/// Returns worker 0's report in the process that hosts it, `None` in the others.
pub fn run(cfg: ClusterConfig, timely_args: Vec<String>) -> Result<Option<ClusterReport>, ClusterError> {
    // Open once here, so a bad file fails before any connection is made.
    let ds = Dataset::open(&cfg.data)?;
    drop(ds);
    let heartbeat = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let watchdog = {
        let (hb, timeout) = (heartbeat.clone(), cfg.peer_timeout);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100).min(timeout));
            let last = hb.load(Ordering::Acquire);
            if last == u64::MAX {
                return;
            }
            if started.elapsed().saturating_sub(Duration::from_nanos(last)) > timeout {
                eprintln!(
                    "error: no merge completed for {:.1} s (--peer-timeout): a peer process died, is unreachable, or never started",
                    timeout.as_secs_f64()
                );
                std::process::exit(3);
            }
        })
    };
    // Timely's network threads panic when a peer's connection breaks: say what happened in
    // one line and end the process, instead of a cascade of backtraces.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).or_else(|| info.payload().downcast_ref::<&str>().copied());
        if let Some(m) = msg.filter(|m| m.contains("timely communication error")) {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| eprintln!("error: lost the connection to a peer process ({m}): a peer died or the network failed"));
            std::process::exit(3);
        }
        default_hook(info);
    }));
    let args = std::iter::once("streamsgd".to_string()).chain(timely_args);
    let hb = heartbeat.clone();
    let guards = timely::execute_from_args(args, move |worker| work(worker, &cfg, &hb, started)).map_err(ClusterError::Timely)?;
    let mut report = None;
    for r in guards.join() {
        match r {
            Ok(Ok(Some(rep))) => report = Some(rep),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(e),
            Err(panic) => return Err(ClusterError::Timely(panic)),
        }
    }
    heartbeat.store(u64::MAX, Ordering::Release);
    let _ = watchdog.join();
    Ok(report)
}

/// One worker, start to end.
fn work(
    worker: &mut timely::worker::Worker,
    cfg: &ClusterConfig,
    heartbeat: &AtomicU64,
    started: Instant,
) -> Result<Option<ClusterReport>, ClusterError> {
    let (index, peers) = (worker.index(), worker.peers());
    let ds = Dataset::open(&cfg.data)?;
    let train_rows = ds.rows() - ((ds.rows() as f64 * cfg.holdout).round() as u64).min(ds.rows());
    let segments = pipeline::segments(&ds, train_rows);
    let mut mine = segments.iter().skip(index).step_by(peers).peekable();
    let mut learner = Learner::new(cfg.learner, ds.features());
    let arrived: Rc<RefCell<Vec<Share>>> = Rc::default();
    let mut input = InputHandle::new();
    let probe = ProbeHandle::new();
    let sink = arrived.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        scope
            .input_from(&mut input)
            .container::<Vec<Share>>()
            .broadcast()
            .inspect(move |s: &Share| sink.borrow_mut().push(s.clone()))
            .probe_with(&probe);
    });
    // A first, empty round: every process is connected and running once it completes (peers
    // may still be connecting to each other when this one starts), so the clock starts after.
    input.advance_to(1);
    while probe.less_than(input.time()) {
        worker.step_or_park(None);
    }
    heartbeat.store(started.elapsed().as_nanos() as u64, Ordering::Release);
    let started_work = Instant::now();
    let mut latency = Latency::default();
    let (mut rows, mut error) = (0u64, None::<LearnError>);
    let (mut merges, mut merge_time) = (0u64, Duration::ZERO);
    let mut avg = vec![0.0f32; learner.model().weights.len()];
    loop {
        let mut examples = 0.0;
        for _ in 0..cfg.merge_every.max(1) {
            let Some(&Segment { block, r0, n }) = mine.next() else { break };
            let b = ds.block(block);
            let t = Instant::now();
            if error.is_none() {
                error = learner.learn_rows(b.data, b.stride, b.features, r0, n, b.labels, b.weights).err();
            }
            latency.record(t.elapsed().as_nanos() as u64);
            rows += n as u64;
            examples += n as f64;
        }
        let done = mine.peek().is_none();
        let summary = done.then(|| {
            let p = learner.progress();
            Summary {
                rows,
                learned: learner.rows_learned,
                rejected: learner.rows_rejected,
                progress: p,
                latency: latency.to_bytes(),
                error: error.as_ref().map(|e| e.to_string()),
            }
        });
        let t = Instant::now();
        input.send(Share { epoch: merges + 1, worker: index as u32, examples, weights: learner.model().weights.clone(), done, summary });
        input.advance_to(merges + 2);
        while probe.less_than(input.time()) {
            // Park while waiting for peers (woken by their messages): a spinning worker
            // would take the core a peer on the same machine needs.
            worker.step_or_park(None);
        }
        // Faster workers' replicas of the next epoch may be here already: keep them.
        let (mut shares, later): (Vec<Share>, Vec<Share>) = arrived.borrow_mut().drain(..).partition(|s| s.epoch == merges + 1);
        *arrived.borrow_mut() = later;
        shares.sort_by_key(|s| s.worker);
        if shares.len() != peers {
            return Err(ClusterError::Timely(format!("merge {merges}: {} of {peers} replicas arrived", shares.len())));
        }
        weighted_average(&mut avg, shares.iter().map(|s| (s.examples, &s.weights[..])));
        learner.set_weights(&avg);
        merges += 1;
        merge_time += t.elapsed();
        heartbeat.store(started.elapsed().as_nanos() as u64, Ordering::Release);
        if let Some(e) = error.take() {
            return Err(ClusterError::Learn { worker: index, error: e });
        }
        if let Some((w, e)) = shares.iter().find_map(|s| Some((s.worker, s.summary.as_ref()?.error.clone()?))) {
            return Err(ClusterError::Timely(format!("worker {w} failed: {e}")));
        }
        if shares.iter().all(|s| s.done) {
            if index != 0 {
                return Ok(None);
            }
            let summaries: Vec<&Summary> = shares.iter().filter_map(|s| s.summary.as_ref()).collect();
            return finish(cfg, &ds, train_rows, &learner, &summaries, peers, merges, merge_time, started_work).map(Some);
        }
    }
}

/// Worker 0's last step: the merged model, saved and evaluated, and the report.
#[allow(clippy::too_many_arguments)]
fn finish(
    cfg: &ClusterConfig,
    ds: &Dataset,
    train_rows: u64,
    learner: &Learner,
    summaries: &[&Summary],
    workers: usize,
    merges: u64,
    merge_time: Duration,
    started: Instant,
) -> Result<ClusterReport, ClusterError> {
    let seconds = started.elapsed().as_secs_f64();
    let mut latency = Latency::default();
    let mut p = Progressive::default();
    let (mut rows, mut learned, mut rejected) = (0, 0, 0);
    for s in summaries {
        if let Some(l) = Latency::from_bytes(&s.latency) {
            latency.merge(&l);
        }
        p.merge(&s.progress);
        rows += s.rows;
        learned += s.learned;
        rejected += s.rejected;
    }
    let file: ModelFile = learner.to_file(String::new());
    if let Some(path) = &cfg.save {
        file.save(path).map_err(|e| ClusterError::Save(e.to_string()))?;
    }
    let holdout = pipeline::evaluate_holdout(&mut Input::Mapped { dataset: ds, train_rows }, &file.model, None, cfg.learner.bad_rows)?;
    let d = learner.model().weights.len() as u64;
    Ok(ClusterReport {
        workers,
        rows,
        rows_learned: learned,
        rows_rejected: rejected,
        seconds,
        rows_per_sec: rows as f64 / seconds.max(1e-9),
        merges,
        merge_bytes_per_worker: workers as u64 * (4 * d + 24),
        merge_us_mean: merge_time.as_secs_f64() * 1e6 / merges.max(1) as f64,
        progressive_loss: p.mean_loss(),
        progressive_accuracy: cfg.learner.loss.is_classification().then(|| p.correct / p.weight_sum.max(f64::MIN_POSITIVE)),
        holdout,
        latency_ns: latency.percentiles(),
    })
}
