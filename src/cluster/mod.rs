//! Training across processes on timely dataflow: the pipeline's shards become timely workers,
//! spread over processes and machines and started with timely's own arguments (`-w` workers
//! per process, `-n` processes, `-p` this process's index, `-h` a hostfile of `host:port`
//! lines).
//!
//! Every worker maps the same `.ssgd` file and takes the blocks the single-process pipeline
//! would route to the shard with its index (batch `i` to worker `i mod W`), learns `K` of them
//! (`--merge-every`), then sends its share and the examples it learned since the last merge
//! into a dataflow that **broadcasts** it to every worker, at the merge epoch as timestamp
//! (`Exchange`). When the probe's frontier passes the epoch, every share of that epoch has
//! arrived at every worker (the frontier is the merge barrier); each worker sorts them by
//! worker index and merges them, so all adopt the same model, and one process with N workers
//! and N processes with one worker compute the same merges in the same order. Dense rows
//! (`dense`) share the whole replica and average ([`crate::merge::weighted_average`]);
//! sparse rows (`sparse`) share only the slots they changed, merged per slot. Workers
//! that run out of blocks keep attending merges (with no examples) until every worker is done;
//! the last merge also carries each worker's counters and latency histogram, and worker 0
//! writes the model (atomically) and the report.
//!
//! A process that dies or never starts must not leave the others waiting forever: a
//! watchdog ends the process with an error when no merge completes for `peer_timeout`.
//! No `unsafe` here.

mod dense;
mod sparse;

use crate::dataset::{Dataset, SparseDataset};
use crate::latency::{Latency, Percentiles};
use crate::learner::{LearnError, LearnerConfig};
use crate::metrics::{Evaluation, Progressive};
use crate::pipeline::PipelineError;
use crate::sparse::train::SparseError;
use crate::sparse::{SparseConfig, SparseModel};
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
    /// A sparse `.ssgd` file: how its rows are learned (loss, optimizer, bits, crosses; the
    /// workers count as its shards). Worker 0's process returns the model; `save` is unused.
    pub sparse: Option<SparseConfig>,
}

impl ClusterConfig {
    /// The rows of a file of `rows` that are learned: all but the held-out last fraction.
    fn train_rows(&self, rows: u64) -> u64 {
        rows - ((rows as f64 * self.holdout).round() as u64).min(rows)
    }
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
    /// The sparse table does not fit, or its holdout could not be read.
    #[error(transparent)]
    Sparse(#[from] SparseError),
}

/// One worker's share at a merge epoch (what the dataflow broadcasts): its replica
/// (`payload`: the dense weights, or the sparse slots it changed).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Share<P> {
    /// The merge epoch (also the dataflow timestamp).
    epoch: u64,
    worker: u32,
    /// Examples learned since the last merge.
    examples: f64,
    payload: P,
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
    /// Bytes each worker sends per merge (its share to every worker, self included; sparse:
    /// the mean over workers and merges).
    pub merge_bytes_per_worker: u64,
    /// Sparse: the bytes of the whole table a worker would send instead (weights and
    /// optimizer state, to every worker).
    pub table_bytes_per_worker: Option<u64>,
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

/// What worker 0's process ends with.
pub struct ClusterOutcome {
    /// The report.
    pub report: ClusterReport,
    /// A sparse run's merged model (a dense run's is saved to `save`).
    pub sparse: Option<SparseModel>,
}

/// Runs this process's workers; `timely_args` are timely's own (`-w`, `-n`, `-p`, `-h`).
/// Returns worker 0's outcome in the process that hosts it, `None` in the others.
pub fn run(cfg: ClusterConfig, timely_args: Vec<String>) -> Result<Option<ClusterOutcome>, ClusterError> {
    // Open once here, so a bad file fails before any connection is made.
    match cfg.sparse {
        Some(_) => drop(SparseDataset::open(&cfg.data)?),
        None => drop(Dataset::open(&cfg.data)?),
    }
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
    let guards = timely::execute_from_args(args, move |worker| match &cfg.sparse {
        Some(sc) => sparse::work(worker, &cfg, sc, &hb, started),
        None => dense::work(worker, &cfg, &hb, started),
    })
    .map_err(ClusterError::Timely)?;
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

/// What a share carries: anything the dataflow can send.
trait Payload: timely::ExchangeData + Clone + std::fmt::Debug {}
impl<P: timely::ExchangeData + Clone + std::fmt::Debug> Payload for P {}

/// The broadcast dataflow of one worker: each round it sends its share and gets every
/// worker's for that epoch, in worker order, once the frontier has passed it.
struct Exchange<'h, P: Payload> {
    input: InputHandle<u64, timely::container::CapacityContainerBuilder<Vec<Share<P>>>>,
    probe: ProbeHandle<u64>,
    arrived: Rc<RefCell<Vec<Share<P>>>>,
    peers: usize,
    heartbeat: &'h AtomicU64,
    started: Instant,
}

impl<'h, P: Payload> Exchange<'h, P> {
    /// Builds the dataflow and runs a first, empty round: every process is connected and
    /// running once it completes (peers may still be connecting to each other when this one
    /// starts), so a clock started after it times only the work.
    fn new(worker: &mut timely::worker::Worker, heartbeat: &'h AtomicU64, started: Instant) -> Self {
        let arrived: Rc<RefCell<Vec<Share<P>>>> = Rc::default();
        let mut input = InputHandle::new();
        let probe = ProbeHandle::new();
        let sink = arrived.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .container::<Vec<Share<P>>>()
                .broadcast()
                .inspect(move |s: &Share<P>| sink.borrow_mut().push(s.clone()))
                .probe_with(&probe);
        });
        input.advance_to(1);
        while probe.less_than(input.time()) {
            worker.step_or_park(None);
        }
        heartbeat.store(started.elapsed().as_nanos() as u64, Ordering::Release);
        Exchange { input, probe, arrived, peers: worker.peers(), heartbeat, started }
    }

    /// Sends `share` (its epoch: the next merge's) and returns every worker's share of that
    /// epoch, sorted by worker.
    fn round(&mut self, worker: &mut timely::worker::Worker, share: Share<P>) -> Result<Vec<Share<P>>, ClusterError> {
        let epoch = share.epoch;
        self.input.send(share);
        self.input.advance_to(epoch + 1);
        while self.probe.less_than(self.input.time()) {
            // Park while waiting for peers (woken by their messages): a spinning worker
            // would take the core a peer on the same machine needs.
            worker.step_or_park(None);
        }
        // Faster workers' shares of the next epoch may be here already: keep them.
        let (mut shares, later): (Vec<Share<P>>, Vec<Share<P>>) = self.arrived.borrow_mut().drain(..).partition(|s| s.epoch == epoch);
        *self.arrived.borrow_mut() = later;
        shares.sort_by_key(|s| s.worker);
        if shares.len() != self.peers {
            return Err(ClusterError::Timely(format!("merge {}: {} of {} shares arrived", epoch - 1, shares.len(), self.peers)));
        }
        self.heartbeat.store(self.started.elapsed().as_nanos() as u64, Ordering::Release);
        Ok(shares)
    }
}

/// A worker's counters and latency, for the last share.
fn summary(rows: u64, learned: u64, rejected: u64, progress: Progressive, latency: &Latency, error: Option<&LearnError>) -> Summary {
    Summary { rows, learned, rejected, progress, latency: latency.to_bytes(), error: error.map(|e| e.to_string()) }
}

/// Every worker's totals merged: rows, learned, rejected, progressive sums, latency.
fn totals(summaries: &[&Summary]) -> (u64, u64, u64, Progressive, Latency) {
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
    (rows, learned, rejected, p, latency)
}

/// What a worker does after a merge.
enum Next<'a> {
    /// Learn the next round.
    Learn,
    /// Every worker is done; this one is not worker 0.
    End,
    /// Every worker is done: worker 0 reports on their totals.
    Report(Vec<&'a Summary>),
}

/// After the merge of `shares`: this worker's learning `error`, or a failure any share
/// reports, ends every worker with it; once all are done, worker 0 reports.
fn after_merge<P>(index: usize, error: Option<LearnError>, shares: &[Share<P>]) -> Result<Next<'_>, ClusterError> {
    if let Some(error) = error {
        return Err(ClusterError::Learn { worker: index, error });
    }
    if let Some((w, e)) = shares.iter().find_map(|s| Some((s.worker, s.summary.as_ref()?.error.clone()?))) {
        return Err(ClusterError::Timely(format!("worker {w} failed: {e}")));
    }
    Ok(match (shares.iter().all(|s| s.done), index) {
        (false, _) => Next::Learn,
        (true, 0) => Next::Report(shares.iter().filter_map(|s| s.summary.as_ref()).collect()),
        (true, _) => Next::End,
    })
}
