//! Sparse training, wired: a source of sparse rows → shards learning Hogwild-style into one
//! shared table ([`Table`]) → the model, progressive metrics and the holdout's.
//!
//! A text file is mapped and cut into ranges of lines ([`SplitText`]): each shard claims the
//! next range and parses it itself, so parsing scales with the shards. A stream (stdin, a
//! socket) is parsed by the calling thread into pooled batches of [`BATCH_ROWS`] rows that any
//! idle shard takes (a bounded channel; the buffers come back through another, so the steady
//! state allocates nothing). A mapped sparse `.ssgd` file needs no producer either: each shard
//! claims the next block itself and reads it in place. Nothing is
//! merged: the table is shared, and each shard's bias is averaged at the end, weighted by the
//! rows it learned. No `unsafe` here.

use super::rows::{RowsRef, SparseRows};
use super::{native, SparseParser};
use crate::batch::{SkipMask, BATCH_ROWS};
use crate::dataset::SparseDataset;
use crate::dedup::Dedup;
use crate::kernel::sparse::{SparseKernel, Table};
use crate::latency::{Latency, Percentiles};
use crate::learner::{BadRows, LearnError, BLOWUP, BLOWUP_BATCHES};
use crate::loss::Loss;
use crate::metrics::{evaluate, Evaluation, Progressive};
use crate::optim::OptimConfig;
use crate::source::split::{lines, position, Numbering, SplitText};
use crate::source::{Next, ParseError, RecordSource};
use crate::window::{BatchStat, EventClock, OnDrift, WindowConfig, WindowKind, WindowSlot, WindowTag, Windows};
use crossbeam::channel;
use crossbeam::queue::SegQueue;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Settings of a sparse run.
#[derive(Clone, Debug)]
pub struct SparseConfig {
    /// The loss.
    pub loss: Loss,
    /// The optimizer.
    pub optim: OptimConfig,
    /// The table has 2^bits slots.
    pub bits: u32,
    /// Namespace crosses learned (2 or 3 tags each).
    pub interactions: Vec<Vec<u8>>,
    /// Shards.
    pub threads: usize,
    /// Policy for rows that cannot be learned.
    pub bad_rows: BadRows,
    /// Passes over a mapped file.
    pub passes: usize,
    /// Set from outside (a signal handler) to end the run early with what was learned.
    pub stop: Option<Arc<AtomicBool>>,
    /// Open-loop pacing in rows/s of a mapped file (`None`: flat out): each shard waits for its
    /// block's intended time, and the latency runs from that time to the block learned.
    pub rate: Option<f64>,
    /// Drop a row equal to one of the last this many of the stream (0: off). A stream's reader
    /// keeps the window; a file's or a topic's is the one shard's (the caller sees to one).
    pub dedup_window: usize,
    /// Row windows and drift detection on the per-batch progressive loss (`None`: off). They
    /// need the stream's order: a text file is then read as a stream, and a topic by one shard.
    pub windows: Option<WindowConfig>,
}

impl SparseConfig {
    /// `threads` shards learning `loss` with `optim` into 2^`bits` slots, crossing
    /// `interactions`: one pass, bad rows an error, flat out, no feature stage or windows.
    pub fn new(loss: Loss, optim: OptimConfig, bits: u32, interactions: Vec<Vec<u8>>, threads: usize) -> Self {
        SparseConfig {
            loss,
            optim,
            bits,
            interactions,
            threads,
            bad_rows: BadRows::Error,
            passes: 1,
            stop: None,
            rate: None,
            dedup_window: 0,
            windows: None,
        }
    }
}

/// A trained sparse model: the table's weights (slot order), the bias, and how features
/// reach slots.
#[derive(Debug)]
pub struct SparseModel {
    /// The loss.
    pub loss: Loss,
    /// The weights and optimizer state.
    pub table: Table,
    /// The bias.
    pub bias: f32,
    /// Namespace crosses.
    pub interactions: Vec<Vec<u8>>,
    /// The bias's optimizer state (see [`SparseKernel::bias_state`]).
    pub bias_state: (f32, f32),
    /// Rows learned into it, all runs (the schedules' clock).
    pub examples: u64,
}

/// A model as a checkpoint or a model file holds it: the table (live, during a run), the bias
/// with its optimizer state, and the rows learned.
pub struct SparseState<'a> {
    /// The weights and optimizer state.
    pub table: &'a Table,
    /// The bias.
    pub bias: f32,
    /// The bias's optimizer state.
    pub bias_state: (f32, f32),
    /// Rows learned into it, all runs.
    pub examples: u64,
}

/// Saves a checkpoint (a model file, atomically), or says why it could not.
pub type SaveCheckpoint<'a> = &'a (dyn Fn(&SparseState<'_>) -> Result<(), String> + Sync);

/// Checkpoints during a run: about every `every` rows learned, `save` is called with the live
/// table (read while the shards go on learning: a Hogwild snapshot).
#[derive(Clone, Copy)]
pub struct Checkpoints<'a> {
    /// Rows between checkpoints.
    pub every: u64,
    /// Writes one.
    pub save: SaveCheckpoint<'a>,
}

impl SparseModel {
    /// What a model file saves of it.
    pub fn state(&self) -> SparseState<'_> {
        SparseState { table: &self.table, bias: self.bias, bias_state: self.bias_state, examples: self.examples }
    }

    /// A kernel that predicts with this model (one per predicting thread).
    pub fn kernel(&self, optim: OptimConfig) -> SparseKernel<'_> {
        let mut k = SparseKernel::new(&self.table, self.loss, optim, &self.interactions, 1);
        k.set_bias(self.bias);
        k
    }
}

/// Where the rows come from.
pub enum SparseInput<'a, R> {
    /// Text: rows after `train_rows` (when given) are the holdout.
    Stream {
        /// The parser.
        parser: &'a mut SparseParser<R>,
        /// Rows used for training (`None`: all).
        train_rows: Option<u64>,
        /// Count and skip malformed lines.
        skip_bad: bool,
    },
    /// A text file, mapped and cut into ranges of lines that the shards parse themselves
    /// (its held-out lines are the holdout).
    Split {
        /// The file.
        text: &'a SplitText,
        /// The parser that read its header: each shard parses with a copy.
        parser: &'a mut SparseParser<R>,
        /// Count and skip malformed lines.
        skip_bad: bool,
    },
    /// A source of records per shard (a Kafka topic's shares): each shard parses its records'
    /// lines itself; no holdout.
    Records {
        /// One per shard.
        sources: Vec<&'a mut dyn RecordSource>,
        /// The parser of the records' lines: each shard parses with a copy.
        parser: &'a mut SparseParser<R>,
        /// Records of native rows ([`super::native`]), not text lines.
        native: bool,
        /// Count and skip malformed lines.
        skip_bad: bool,
    },
    /// A mapped sparse `.ssgd` file; rows `train_rows..` are the holdout.
    Mapped {
        /// The dataset.
        dataset: &'a SparseDataset,
        /// Rows used for training.
        train_rows: u64,
    },
}

/// What a sparse run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SparseReport {
    /// Rows learned.
    pub rows_learned: u64,
    /// Rows rejected (malformed lines with `--skip-bad`, labels the loss cannot take).
    pub rows_rejected: u64,
    /// The first rejected row and why.
    pub first_rejected: Option<String>,
    /// Features learned, crosses included (Σ over rows).
    pub features: u64,
    /// Wall time of training, seconds.
    pub seconds: f64,
    /// Rows learned per second.
    pub rows_per_sec: f64,
    /// Features learned per second.
    pub features_per_sec: f64,
    /// Shards.
    pub threads: usize,
    /// Table bits.
    pub bits: u32,
    /// Mean progressive (predict-then-learn) loss.
    pub progressive_loss: f64,
    /// The best constant prediction's loss on the same labels.
    pub progressive_baseline: f64,
    /// Progressive accuracy (classification).
    pub progressive_accuracy: Option<f64>,
    /// Holdout metrics, when there is a holdout.
    pub holdout: Option<Evaluation>,
    /// The run was stopped early through [`SparseConfig::stop`].
    pub stopped: bool,
    /// Checkpoints written during the run.
    pub checkpoints: u64,
    /// The longest a checkpoint took to write, seconds (the shards go on learning meanwhile).
    pub checkpoint_seconds_max: f64,
    /// With `--rate`: per block, from its intended time to learned, nanoseconds.
    pub latency_ns: Option<Percentiles>,
    /// Rows dropped as duplicates of one in the window before them.
    pub rows_dropped_duplicate: u64,
    /// Rows dropped for a NaN value (`--missing drop`).
    pub rows_dropped_missing: u64,
    /// NaN values left out of their rows (`--missing zero`).
    pub cells_missing: u64,
    /// Windows reported.
    pub windows: u64,
    /// Stream rows at which drift alarms fired.
    pub drift_alarms: Vec<u64>,
    /// Rows that arrived after their event-time window had closed (learned, and counted here).
    pub rows_late: u64,
}

/// A run's model and report, and the source's failure if one ended it early (the rows before
/// it are learned).
pub struct SparseOutcome {
    /// The model.
    pub model: SparseModel,
    /// The report.
    pub report: SparseReport,
    /// The error that ended the source early.
    pub source_error: Option<ParseError>,
}

/// Why a sparse run failed.
#[derive(Debug, thiserror::Error)]
pub enum SparseError {
    /// A malformed line (without `--skip-bad`).
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A row that cannot be learned, or divergence.
    #[error(transparent)]
    Learn(#[from] LearnError),
    /// The table does not fit in memory.
    #[error("{0}")]
    Memory(String),
    /// A damaged block of a mapped file.
    #[error(transparent)]
    Format(#[from] crate::dataset::FormatError),
    /// A checkpoint that could not be written.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A model to continue that does not fit the run.
    #[error("--resume: {0}")]
    Resume(String),
    /// Settings the input cannot take.
    #[error("{0}")]
    Config(String),
    /// The window report could not be written.
    #[error("window report: {0}")]
    Windows(String),
}

/// One shard's tallies.
#[derive(Default)]
struct Tally {
    /// NaN values its parsing left out, and rows it dropped for one (`--missing`).
    missing: Missing,
    /// Its duplicate window (off where the stream's reader keeps it), and the batch's
    /// fingerprints and duplicates (bit r: row r), reused.
    window: Option<Dedup>,
    fingerprints: Vec<u64>,
    duplicate: Vec<u64>,
    duplicates: u64,
    /// Paced blocks: from the intended time to learned.
    latency: Latency,
    /// The shard.
    id: usize,
    /// Its bias's optimizer state at the end.
    bias_state: (f32, f32),
    progress: Progressive,
    learned: u64,
    rejected: u64,
    first_rejected: Option<(u64, String)>,
    features: u64,
    bias_sum: f64,
    /// Consecutive batches whose mean loss was over BLOWUP × a constant prediction's.
    blowups: usize,
    /// The drift resets this shard has applied to its bias.
    resets: u64,
    /// Rows that arrived after their event-time window had closed.
    late: u64,
}

/// What shards share besides the table.
struct Shared<'c> {
    cfg: &'c SparseConfig,
    failed: Mutex<Option<SparseError>>,
    halt: AtomicBool,
    /// The saved model the run continues.
    start: Option<BiasClock>,
    /// With checkpoints: each shard's, as of its last batch.
    live: Option<Vec<Mutex<BiasClock>>>,
    /// With windows: where each batch's outcome goes.
    reporter: Option<Reporter<'c>>,
    /// Drift resets of the table so far (each shard then resets its bias's state).
    resets: AtomicU64,
}

/// Windows and drift detection without a thread of their own: a shard queues its batch's
/// outcome and, unless another shard is at it, takes the queue into the windows (which put the
/// batches back in stream order): no thread of its own to wake or to share the cores with.
struct Reporter<'c> {
    config: &'c WindowConfig,
    queue: SegQueue<BatchStat>,
    /// The windows, and the first error writing them.
    windows: Mutex<(Windows, Option<String>)>,
}

impl Reporter<'_> {
    /// Queues `stat`, then takes the queue in if no other shard is; on a drift alarm with
    /// `--on-drift reset`, restarts the table's adaptive state.
    fn add(&self, stat: BatchStat, table: &Table, sh: &Shared<'_>) {
        self.queue.push(stat);
        if let Ok(mut w) = self.windows.try_lock() {
            self.drain(&mut w, table, sh);
        }
    }

    fn drain(&self, w: &mut (Windows, Option<String>), table: &Table, sh: &Shared<'_>) {
        while let Some(stat) = self.queue.pop() {
            match w.0.add(stat) {
                Ok(true) if self.config.on_drift == OnDrift::Reset => {
                    table.reset_state(&sh.cfg.optim);
                    sh.resets.fetch_add(1, Ordering::AcqRel);
                }
                Ok(_) => {}
                Err(e) => {
                    w.1.get_or_insert(e.to_string());
                }
            }
        }
    }

    /// Every batch is in: the last windows written; the windows reported and the alarms.
    fn finish(&self, table: &Table, sh: &Shared<'_>) -> Result<(u64, Vec<u64>), String> {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        self.drain(&mut w, table, sh);
        if let Some(e) = w.1.take() {
            return Err(e);
        }
        w.0.finish().map_err(|e| e.to_string())?;
        Ok((w.0.windows, std::mem::take(&mut w.0.alarms)))
    }
}

/// A learner's bias with its optimizer state, and the rows learned: a shard's, or a saved
/// model's.
#[derive(Clone, Copy, Default)]
struct BiasClock {
    bias: f32,
    state: (f32, f32),
    rows: u64,
}

impl Shared<'_> {
    /// Shard `id`'s kernel over `table`, continuing the saved model if there is one, and its
    /// tallies (with a duplicate window of its own unless `read_once`: the reader keeps it).
    fn kernel<'t>(&self, table: &'t Table, id: usize, threads: usize, read_once: bool) -> (SparseKernel<'t>, Tally) {
        let mut k = SparseKernel::new(table, self.cfg.loss, self.cfg.optim, &self.cfg.interactions, threads);
        if let Some(s) = self.start {
            k.resume(s.bias, s.state, s.rows);
        }
        let window = (self.cfg.dedup_window > 0 && !read_once).then(|| Dedup::new(self.cfg.dedup_window));
        (k, Tally { id, window, ..Tally::default() })
    }

    fn stopping(&self) -> bool {
        self.halt.load(Ordering::Relaxed) || self.cfg.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
    }

    fn fail(&self, e: SparseError) {
        // The earliest row's error wins (shards learn rows out of order).
        let row = |e: &SparseError| match e {
            SparseError::Learn(l) => l.row(),
            _ => 0,
        };
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if f.as_ref().is_none_or(|old| row(&e) < row(old)) {
            *f = Some(e);
        }
        self.halt.store(true, Ordering::Relaxed);
    }
}

/// A learner of the sparse path outside [`train`] (a cluster worker's replica): its kernel
/// over a table of its own, tracking the slots it changes, with the checks and tallies of a
/// shard.
pub(crate) struct Replica<'c, 't> {
    sh: Shared<'c>,
    /// The kernel.
    pub(crate) kernel: SparseKernel<'t>,
    tally: Tally,
}

impl<'c, 't> Replica<'c, 't> {
    /// Replica `id` of `shards`, learning into `table` as `cfg` says.
    pub(crate) fn new(cfg: &'c SparseConfig, table: &'t Table, id: usize, shards: usize) -> Self {
        let sh = Shared {
            cfg,
            failed: Mutex::new(None),
            halt: AtomicBool::new(false),
            start: None,
            live: None,
            reporter: None,
            resets: AtomicU64::new(0),
        };
        let (mut kernel, tally) = sh.kernel(table, id, shards, false);
        kernel.track_changes();
        Replica { sh, kernel, tally }
    }

    /// Learns `rows`, stream rows `first..`.
    pub(crate) fn learn(&mut self, rows: &RowsRef<'_>, first: u64) -> Result<(), LearnError> {
        learn_rows(&mut self.kernel, rows, (first, 0, WindowTag::default()), &mut self.tally, &self.sh)
    }

    /// Progressive metrics, rows learned and rows rejected so far.
    pub(crate) fn tallies(&self) -> (Progressive, u64, u64) {
        (self.tally.progress, self.tally.learned, self.tally.rejected)
    }
}

/// Learns `rows` (stream rows `first..`, the `seq`-th batch of the stream, in event-time
/// window `tag`) with `k`, into `tally`.
fn learn_rows(
    k: &mut SparseKernel<'_>,
    rows: &RowsRef<'_>,
    (first, seq, tag): (u64, u64, WindowTag),
    tally: &mut Tally,
    sh: &Shared<'_>,
) -> Result<(), LearnError> {
    let loss = sh.cfg.loss;
    let n = rows.len();
    let before = tally.progress;
    let (loss_before, weight_before) = (before.loss_sum, before.weight_sum);
    let resets = sh.resets.load(Ordering::Acquire);
    if resets != tally.resets {
        tally.resets = resets;
        k.reset_state();
    }
    if let Some(window) = tally.window.as_mut() {
        // A batch's lookups at once: the window prefetches the rows ahead.
        tally.duplicate.clear();
        for c in (0..n).step_by(BATCH_ROWS) {
            let m = (n - c).min(BATCH_ROWS);
            tally.fingerprints.clear();
            tally.fingerprints.extend((c..c + m).map(|r| rows.fingerprint(r)));
            let mut skip: SkipMask = [0; BATCH_ROWS / 64];
            window.mark(&tally.fingerprints, &mut skip);
            tally.duplicate.extend_from_slice(&skip[..m.div_ceil(64)]);
        }
    }
    for r in 0..n {
        if tally.window.is_some() && tally.duplicate[r / 64] >> (r % 64) & 1 == 1 {
            tally.duplicates += 1;
            k.skip_ahead();
            continue;
        }
        let (y, w) = (rows.labels[r], rows.weight(r));
        let y = match loss.label(y) {
            Ok(y) => y,
            Err(e) => {
                let row = first + r as u64;
                if sh.cfg.bad_rows == BadRows::Error {
                    return Err(LearnError::BadRow { row, what: e.to_string() });
                }
                tally.rejected += 1;
                tally.first_rejected.get_or_insert((row, e.to_string()));
                k.skip_ahead();
                continue;
            }
        };
        let next = (r + 1 < n).then(|| rows.row(r + 1));
        let (p, l) = k.learn_ahead(&rows.row(r), next.as_ref(), y, w);
        if !p.is_finite() {
            return Err(LearnError::Diverged { row: first + r as u64, pred: p, lr: sh.cfg.optim.lr });
        }
        tally.progress.add(p, y, w, l);
        tally.progress.y_sum += f64::from(w * y);
        tally.progress.y_sq += f64::from(w * y * y);
        tally.features += k.expanded() as u64;
        tally.learned += 1;
    }
    // Divergence that stays finite: the loss of several batches in a row orders of magnitude
    // above a constant prediction's (as the dense learner detects it).
    let p = &tally.progress;
    let (batch_loss, batch_weight) = (p.loss_sum - loss_before, p.weight_sum - weight_before);
    let baseline = p.baseline(&loss);
    if batch_weight > 0.0 && baseline > 0.0 && batch_loss / batch_weight > BLOWUP * baseline {
        tally.blowups += 1;
        if tally.blowups >= BLOWUP_BATCHES {
            return Err(LearnError::LossExploded {
                row: first + n as u64 - 1,
                loss: batch_loss / batch_weight,
                baseline,
                lr: sh.cfg.optim.lr,
            });
        }
    } else {
        tally.blowups = 0;
    }
    if let Some(live) = &sh.live {
        *live[tally.id].lock().unwrap_or_else(|p| p.into_inner()) =
            BiasClock { bias: k.bias(), state: k.bias_state(), rows: tally.learned };
    }
    if let Some(r) = &sh.reporter {
        let p = &tally.progress;
        let stat = BatchStat {
            seq,
            rows: n as u64,
            loss: batch_loss,
            weight: batch_weight,
            correct: p.correct - before.correct,
            sq_err: p.sq_err - before.sq_err,
            tag,
        };
        r.add(stat, k.table(), sh);
    }
    Ok(())
}

/// NaN values left out, and rows dropped for one.
#[derive(Default, Clone, Copy)]
struct Missing {
    cells: u64,
    rows: u64,
}

impl Missing {
    fn add<R>(&mut self, p: &SparseParser<R>) {
        self.cells += p.missing_cells;
        self.rows += p.missing_rows;
    }
}

impl Tally {
    /// The shard is done with kernel `k`: its bias, weighted by the rows it learned.
    fn finish(&mut self, k: &SparseKernel<'_>) {
        self.bias_sum = f64::from(k.bias()) * self.learned as f64;
        self.bias_state = k.bias_state();
    }
}

/// Writes a checkpoint about every `c.every` rows the shards learn, until `done`: the live
/// table, the bias averaged over the shards (weighted by their rows) with the first shard's
/// optimizer state. Returns how many were written and the longest write, or the first error.
fn checkpointer(table: &Table, sh: &Shared<'_>, c: &Checkpoints<'_>, done: &AtomicBool) -> Result<(u64, f64), String> {
    let (mut written, mut longest, mut next) = (0u64, 0.0f64, c.every.max(1));
    let live = sh.live.as_ref().expect("checkpoints publish the shards' state");
    let start = sh.start.unwrap_or_default();
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let now: Vec<BiasClock> = live.iter().map(|m| *m.lock().unwrap_or_else(|p| p.into_inner())).collect();
        let learned: u64 = now.iter().map(|s| s.rows).sum();
        if learned < next {
            continue;
        }
        next = learned + c.every.max(1);
        let weighted = now.iter().map(|s| f64::from(s.bias) * s.rows as f64).sum::<f64>();
        let bias = if learned > 0 { (weighted / learned as f64) as f32 } else { start.bias };
        let state = SparseState { table, bias, bias_state: now[0].state, examples: start.rows + learned };
        let t = Instant::now();
        (c.save)(&state)?;
        longest = longest.max(t.elapsed().as_secs_f64());
        written += 1;
    }
    Ok((written, longest))
}

/// Trains on `input`; the holdout (if any) is evaluated with the final model.
///
/// `start`: a saved model to continue (its table, bias and their optimizer state, and its
/// clock), laid out as `cfg` asks; `checkpoints`: write some during the run.
pub fn train<R: BufRead>(
    cfg: &SparseConfig,
    input: SparseInput<'_, R>,
    start: Option<SparseModel>,
    checkpoints: Option<Checkpoints<'_>>,
) -> Result<SparseOutcome, SparseError> {
    let table = match start.as_ref() {
        Some(m) if m.table.len() != 1 << cfg.bits || m.table.kind() != cfg.optim.kind => {
            return Err(SparseError::Resume(format!(
                "the model to continue has 2^{} slots for {:?}, this run asks for 2^{} for {:?}",
                m.table.len().ilog2(),
                m.table.kind(),
                cfg.bits,
                cfg.optim.kind
            )))
        }
        Some(_) => None,
        None => {
            let bytes = Table::bytes(cfg.bits, cfg.optim.kind);
            crate::batch::check_memory(bytes, || format!("--bits {}: a table of 2^{} slots", cfg.bits, cfg.bits))
                .map_err(SparseError::Memory)?;
            Some(Table::new(cfg.bits, cfg.optim.kind))
        }
    };
    let (table, begun) = match start {
        Some(m) => (m.table, Some(BiasClock { bias: m.bias, state: m.bias_state, rows: m.examples })),
        None => (table.expect("a new table"), None),
    };
    let threads = cfg.threads.max(1);
    let live = checkpoints.as_ref().map(|_| (0..threads).map(|_| Mutex::default()).collect());
    let reporter = match &cfg.windows {
        Some(config) => {
            check_windows(config, &input)?;
            let w = config.open(cfg.loss.is_classification()).map_err(SparseError::Windows)?;
            Some(Reporter { config, queue: SegQueue::new(), windows: Mutex::new((w, None)) })
        }
        None => None,
    };
    let sh =
        Shared { cfg, failed: Mutex::new(None), halt: AtomicBool::new(false), start: begun, live, reporter, resets: AtomicU64::new(0) };
    let started = Instant::now();
    let mapped_holdout = match &input {
        SparseInput::Mapped { dataset, train_rows } => Some((*dataset, *train_rows)),
        SparseInput::Stream { .. } | SparseInput::Split { .. } | SparseInput::Records { .. } => None,
    };
    let done = AtomicBool::new(false);
    let (learned, written) = std::thread::scope(|s| {
        let writer = checkpoints.as_ref().map(|c| s.spawn(|| checkpointer(&table, &sh, c, &done)));
        let learned = match input {
            SparseInput::Stream { parser, train_rows, skip_bad } => stream(&table, &sh, threads, parser, train_rows, skip_bad),
            SparseInput::Mapped { dataset, train_rows } => Ok(mapped(&table, &sh, threads, dataset, train_rows)),
            SparseInput::Split { text, parser, skip_bad } => split(&table, &sh, threads, text, parser, skip_bad),
            SparseInput::Records { sources, parser, native, skip_bad } => Ok(records(&table, &sh, sources, parser, native, skip_bad)),
        };
        done.store(true, Ordering::Release);
        (learned, writer.map(|w| w.join().expect("the checkpoint writer panicked")))
    });
    let (tallies, held, source_error) = learned?;
    let (checkpoints, checkpoint_seconds_max) = written.transpose().map_err(SparseError::Checkpoint)?.unwrap_or_default();
    let (windows, drift_alarms) =
        sh.reporter.as_ref().map(|r| r.finish(&table, &sh)).transpose().map_err(SparseError::Windows)?.unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = sh.failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut t = Tally::default();
    for s in &tallies {
        t.latency.merge(&s.latency);
        t.duplicates += s.duplicates;
        t.late += s.late;
        t.missing.cells += s.missing.cells;
        t.missing.rows += s.missing.rows;
        t.progress.merge(&s.progress);
        t.learned += s.learned;
        t.rejected += s.rejected;
        t.features += s.features;
        t.bias_sum += s.bias_sum;
        if let Some(f) = &s.first_rejected {
            if t.first_rejected.as_ref().is_none_or(|old| f.0 < old.0) {
                t.first_rejected = Some(f.clone());
            }
        }
    }
    let start = sh.start.unwrap_or_default();
    let bias = if t.learned > 0 { (t.bias_sum / t.learned as f64) as f32 } else { start.bias };
    let model = SparseModel {
        loss: cfg.loss,
        table,
        bias,
        interactions: cfg.interactions.clone(),
        bias_state: tallies.first().map_or((0.0, 0.0), |t| t.bias_state),
        examples: start.rows + t.learned,
    };
    let holdout = match (held, mapped_holdout) {
        (Some(h), _) if !h.is_empty() => Some(evaluate_rows(&model, cfg.optim, &h.as_ref())),
        (_, Some((ds, from))) if from < ds.rows() => Some(evaluate_mapped(&model, cfg.optim, ds, from)?),
        _ => None,
    };
    let cls = cfg.loss.is_classification();
    let report = SparseReport {
        rows_learned: t.learned,
        rows_rejected: t.rejected,
        first_rejected: t.first_rejected.map(|(row, what)| format!("row {}: {what}", row + 1)),
        features: t.features,
        seconds,
        rows_per_sec: t.learned as f64 / seconds.max(1e-9),
        features_per_sec: t.features as f64 / seconds.max(1e-9),
        threads,
        bits: cfg.bits,
        progressive_loss: t.progress.mean_loss(),
        progressive_baseline: t.progress.baseline(&cfg.loss),
        progressive_accuracy: cls.then(|| t.progress.correct / t.progress.weight_sum),
        holdout,
        stopped: cfg.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)),
        checkpoints,
        checkpoint_seconds_max,
        latency_ns: cfg.rate.map(|_| t.latency.percentiles()),
        rows_dropped_duplicate: t.duplicates,
        rows_dropped_missing: t.missing.rows,
        cells_missing: t.missing.cells,
        windows,
        drift_alarms,
        rows_late: t.late,
    };
    Ok(SparseOutcome { model, report, source_error })
}

/// Windows need the stream's order: refused where shards read their own parts of it.
fn check_windows<R: BufRead>(wc: &WindowConfig, input: &SparseInput<'_, R>) -> Result<(), SparseError> {
    match (wc.kind, input) {
        (WindowKind::Time(_), SparseInput::Stream { parser, .. }) if parser.timestamp_name().is_some() => return Ok(()),
        (WindowKind::Time(_), _) => {
            return Err(SparseError::Config(
                "event-time windows read a CSV's timestamp column (--timestamp-col, with --categorical), read as one stream: VW and LibSVM rows have none (use --window-rows)".into(),
            ))
        }
        _ => {}
    }
    match input {
        SparseInput::Split { .. } => {
            Err(SparseError::Config("windows follow the stream's order: read the text as a stream, not split among the shards".into()))
        }
        SparseInput::Records { sources, .. } if sources.len() > 1 => {
            Err(SparseError::Config("windows follow the stream's order: a topic read by several shards has none (use --threads 1)".into()))
        }
        _ => Ok(()),
    }
}

/// Margins of `rows` under `model`.
pub fn predict_rows(model: &SparseModel, optim: OptimConfig, rows: &RowsRef<'_>, out: &mut Vec<f32>) {
    let mut k = model.kernel(optim);
    out.extend((0..rows.len()).map(|r| k.predict(&rows.row(r))));
}

/// Holdout metrics of `model` on `rows` (labels the loss cannot take are left out).
pub fn evaluate_rows(model: &SparseModel, optim: OptimConfig, rows: &RowsRef<'_>) -> Evaluation {
    let mut scored = Scored::default();
    scored.add(&mut model.kernel(optim), rows, 0);
    scored.evaluation(&model.loss)
}

/// Predictions, converted labels and weights of the rows scored so far.
#[derive(Default)]
struct Scored {
    p: Vec<f32>,
    y: Vec<f32>,
    w: Vec<f32>,
}

impl Scored {
    /// Scores rows `from..` of `rows` (labels the loss cannot take are left out).
    fn add(&mut self, k: &mut SparseKernel<'_>, rows: &RowsRef<'_>, from: usize) {
        for r in from..rows.len() {
            if let Ok(label) = k.loss().label(rows.labels[r]) {
                self.p.push(k.predict(&rows.row(r)));
                self.y.push(label);
                self.w.push(rows.weight(r));
            }
        }
    }

    fn evaluation(&self, loss: &Loss) -> Evaluation {
        evaluate(loss, &self.p, &self.y, Some(&self.w))
    }
}

/// Holdout metrics of `model` on the rows of `ds` from `from` on, read in place.
pub(crate) fn evaluate_mapped(model: &SparseModel, optim: OptimConfig, ds: &SparseDataset, from: u64) -> Result<Evaluation, SparseError> {
    let (mut k, mut scored) = (model.kernel(optim), Scored::default());
    let block_rows = ds.block_rows();
    for b in from / block_rows..ds.blocks() {
        scored.add(&mut k, &ds.block(b)?, from.saturating_sub(b * block_rows) as usize);
    }
    Ok(scored.evaluation(&model.loss))
}

type Learned = (Vec<Tally>, Option<SparseRows>, Option<ParseError>);

/// A batch of rows, the stream position of its first, its own, and its event-time window.
struct Work {
    rows: SparseRows,
    first: u64,
    seq: u64,
    tag: WindowTag,
}

/// Text: the calling thread parses, shards learn whatever batch comes next.
fn stream<R: BufRead>(
    table: &Table,
    sh: &Shared<'_>,
    threads: usize,
    parser: &mut SparseParser<R>,
    train_rows: Option<u64>,
    skip_bad: bool,
) -> Result<Learned, SparseError> {
    let (full_tx, full_rx) = channel::bounded::<Work>(2 * threads);
    let (empty_tx, empty_rx) = channel::bounded::<SparseRows>(4 * threads);
    let mut held = train_rows.map(|_| SparseRows::new());
    let mut source_error = None;
    let (mut window, mut duplicates) = ((sh.cfg.dedup_window > 0).then(|| Dedup::new(sh.cfg.dedup_window)), 0u64);
    let mut parse_rejected = (0u64, None::<(u64, String)>);
    let tallies = std::thread::scope(|s| -> Result<Vec<Tally>, SparseError> {
        let shards: Vec<_> = (0..threads)
            .map(|id| {
                let (rx, back) = (full_rx.clone(), empty_tx.clone());
                s.spawn(move || {
                    let (mut k, mut t) = sh.kernel(table, id, threads, true);
                    for work in rx {
                        if !sh.halt.load(Ordering::Relaxed) {
                            if let Err(e) = learn_rows(&mut k, &work.rows.as_ref(), (work.first, work.seq, work.tag), &mut t, sh) {
                                sh.fail(e.into());
                            }
                        }
                        let mut rows = work.rows;
                        rows.clear();
                        let _ = back.try_send(rows);
                    }
                    t.finish(&k);
                    t
                })
            })
            .collect();
        drop(full_rx);
        let (mut row, mut seq) = (0u64, 0u64);
        let mut failure = None;
        // Event time: a batch's rows share a window; a row of another ends the batch and
        // starts the next (`carry`).
        let mut clock = match sh.cfg.windows.as_ref().map(|w| w.kind) {
            Some(WindowKind::Time(t)) => Some(EventClock::new(t)),
            _ => None,
        };
        let mut carry: Option<(SparseRows, WindowSlot)> = None;
        while !sh.stopping() {
            let mut rows = empty_rx.try_recv().unwrap_or_else(|_| SparseRows::new());
            let mut slot = None;
            if let Some((c, s)) = carry.take() {
                rows.push_row(&c.as_ref(), 0);
                slot = Some(s);
            }
            let first = row - rows.len() as u64;
            let (mut end, mut gap) = (false, false);
            while rows.len() < BATCH_ROWS && !end && !gap {
                let in_training = train_rows.is_none_or(|n| row < n);
                let target = if in_training { &mut rows } else { held.as_mut().expect("a holdout") };
                match parser.next_row(target) {
                    // A duplicate of a training row in the window is dropped as it is read; it
                    // keeps its number, so the batch ends before it (its rows are numbered
                    // from the first on).
                    Ok(true)
                        if in_training && window.as_mut().is_some_and(|w| w.is_duplicate(rows.as_ref().fingerprint(rows.len() - 1))) =>
                    {
                        rows.pop_row();
                        duplicates += 1;
                        row += 1;
                        gap = true;
                    }
                    Ok(true) if in_training && clock.is_some() => {
                        row += 1;
                        let s = clock.as_mut().map_or(WindowSlot::None, |c| c.assign(parser.time()));
                        if *slot.get_or_insert(s) != s {
                            let mut c = SparseRows::new();
                            c.push_row(&rows.as_ref(), rows.len() - 1);
                            rows.pop_row();
                            carry = Some((c, s));
                            gap = true;
                        }
                    }
                    Ok(true) => row += u64::from(in_training),
                    Ok(false) => end = true,
                    Err(e) if skip_bad && !e.fatal => {
                        parse_rejected.0 += 1;
                        parse_rejected.1.get_or_insert((row, e.to_string()));
                    }
                    // The rows before a failing stream are learned, and the failure reported.
                    Err(e) if e.fatal && row > 0 => {
                        source_error = Some(e);
                        end = true;
                    }
                    Err(e) => {
                        failure = Some(e);
                        end = true;
                    }
                }
            }
            if !rows.is_empty() {
                let tag = clock.as_ref().zip(slot).map_or_else(WindowTag::default, |(c, s)| c.tag(s));
                if failure.is_some() || full_tx.send(Work { rows, first, seq, tag }).is_err() {
                    break;
                }
                seq += 1;
            }
            if failure.is_some() || end {
                break;
            }
        }
        drop(full_tx);
        let mut tallies: Vec<Tally> = shards.into_iter().map(|h| h.join().expect("a shard panicked")).collect();
        if let Some(e) = failure {
            return Err(SparseError::Parse(e));
        }
        tallies[0].late = clock.map_or(0, |c| c.late);
        tallies[0].rejected += parse_rejected.0;
        tallies[0].duplicates += duplicates;
        tallies[0].missing.add(parser);
        if let Some((row, what)) = parse_rejected.1 {
            tallies[0].first_rejected = Some((row, what));
        }
        Ok(tallies)
    })?;
    Ok((tallies, held, source_error))
}

/// A source of records per shard: each shard parses its records' lines into batches (a
/// partial one when nothing more comes now), learns them, and then tells its source, which
/// commits what is learned; once its source ends, the final commit (none after a failure). A
/// malformed line (without `--skip-bad`) or a failing source ends the run, the rows before it
/// learned. Rows are numbered in the order the shards take them.
fn records<R: BufRead>(
    table: &Table,
    sh: &Shared<'_>,
    sources: Vec<&mut dyn RecordSource>,
    parser: &SparseParser<R>,
    native: bool,
    skip_bad: bool,
) -> Learned {
    let (template, taken, threads) = (&parser.detached(std::io::empty(), 0), &AtomicU64::new(0), sources.len());
    let done: Vec<(Tally, Option<ParseError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = sources
            .into_iter()
            .enumerate()
            .map(|(id, src)| {
                s.spawn(move || {
                    let (mut k, mut t) = sh.kernel(table, id, threads, false);
                    let (mut p, mut rows, mut seq, mut failed) = (template.detached(std::io::empty(), 0), SparseRows::new(), 0u64, None);
                    while !sh.stopping() {
                        let (mut end, mut idle) = (false, false);
                        match src.next_record(rows.is_empty()) {
                            Ok(Next::Record(bytes)) => {
                                let before = rows.len();
                                // (Errors are named once the record is no longer borrowed.)
                                // Bad lines or native rows, with their line (row) in the record.
                                let mut errors: Vec<(ParseError, u64)> = Vec::new();
                                if native {
                                    let before = rows.len();
                                    native::decode(bytes, &mut rows, |e| {
                                        let what = ParseError {
                                            source: String::new(),
                                            line: 0,
                                            field: Some(e.field.into()),
                                            what: e.what,
                                            fatal: e.fatal,
                                        };
                                        errors.push((what, e.row));
                                    });
                                    // A row that ends the run takes its record with it: unlearned,
                                    // uncommitted, it is read again by the next run.
                                    if errors.iter().any(|(e, _)| !skip_bad || e.fatal) {
                                        while rows.len() > before {
                                            rows.pop_row();
                                        }
                                    }
                                } else {
                                    p.restart_lines(0);
                                    for (i, line) in lines(bytes).enumerate() {
                                        if let Err(e) = p.parse_record(line, &mut rows) {
                                            let stop = !skip_bad || e.fatal;
                                            errors.push((e, i as u64 + 1));
                                            if stop {
                                                break;
                                            }
                                        }
                                    }
                                }
                                let (mut rejected, mut bad) = (None, None);
                                for (e, line) in errors {
                                    if skip_bad && !e.fatal {
                                        t.rejected += 1;
                                        let at = taken.load(Ordering::Relaxed) + rows.len() as u64;
                                        rejected = rejected.or(Some((at, e, line)));
                                    } else if bad.is_none() {
                                        bad = Some((e, line));
                                    }
                                }
                                if let (Some((at, e, line)), None) = (rejected, &t.first_rejected) {
                                    t.first_rejected = Some((at, src.locate(e, line).to_string()));
                                }
                                if let Some((e, line)) = bad {
                                    failed = Some(src.locate(e, line));
                                    end = true;
                                }
                                src.rows((rows.len() - before) as u64);
                            }
                            Ok(Next::Idle) => idle = true,
                            Ok(Next::End) => end = true,
                            Err(e) => {
                                failed = Some(e);
                                end = true;
                            }
                        }
                        if !rows.is_empty() && (end || idle || rows.len() >= BATCH_ROWS) {
                            let first = taken.fetch_add(rows.len() as u64, Ordering::Relaxed);
                            src.sent(seq);
                            seq += 1;
                            if let Err(e) = learn_rows(&mut k, &rows.as_ref(), (first, seq - 1, WindowTag::default()), &mut t, sh) {
                                sh.fail(e.into());
                            } else if failed.is_none() {
                                failed = src.learned(seq).err();
                            }
                            rows.clear();
                        }
                        if end || failed.is_some() {
                            break;
                        }
                    }
                    if failed.is_some() {
                        // The others end too; what they learned is theirs to commit.
                        sh.halt.store(true, Ordering::Relaxed);
                    } else if sh.failed.lock().map_or(true, |f| f.is_none()) {
                        failed = src.learned(u64::MAX).err();
                    }
                    t.missing.add(&p);
                    t.finish(&k);
                    (t, failed)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a shard panicked")).collect()
    });
    let mut tallies = Vec::with_capacity(done.len());
    let mut source_error = None;
    for (t, failed) in done {
        tallies.push(t);
        source_error = source_error.or(failed);
    }
    (tallies, None, source_error)
}

/// A mapped file: each shard claims the next block (pass after pass) and learns it in place.
fn mapped(table: &Table, sh: &Shared<'_>, threads: usize, ds: &SparseDataset, train_rows: u64) -> Learned {
    let block_rows = ds.block_rows();
    let train_blocks = train_rows.div_ceil(block_rows);
    let next = AtomicU64::new(0);
    let total = train_blocks * sh.cfg.passes as u64;
    let start = Instant::now();
    let tallies = std::thread::scope(|s| {
        let shards: Vec<_> = (0..threads)
            .map(|id| {
                let next = &next;
                s.spawn(move || {
                    let (mut k, mut t) = sh.kernel(table, id, threads, false);
                    if sh.cfg.rate.is_some() {
                        crate::pipeline::precise_sleep();
                    }
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total || sh.stopping() {
                            break;
                        }
                        // Paced: block i is due when the rows before it are (an open loop: a
                        // late block's latency counts the wait it would have had).
                        let due = sh.cfg.rate.map(|r| {
                            let due = start + std::time::Duration::from_secs_f64((i * block_rows) as f64 / r);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            due
                        });
                        let b = i % train_blocks;
                        let first = b * block_rows;
                        let rows = match ds.block(b) {
                            Ok(rows) => rows.head((train_rows - first) as usize),
                            Err(e) => {
                                sh.fail(e.into());
                                break;
                            }
                        };
                        if let Err(e) = learn_rows(&mut k, &rows, (first, i, WindowTag::default()), &mut t, sh) {
                            sh.fail(e.into());
                            break;
                        }
                        if let Some(due) = due {
                            t.latency.record(Instant::now().saturating_duration_since(due).as_nanos() as u64);
                        }
                    }
                    t.finish(&k);
                    t
                })
            })
            .collect();
        shards.into_iter().map(|h| h.join().expect("a shard panicked")).collect()
    });
    (tallies, None, None)
}

/// What a shard of [`split`] leaves: its tallies, per range it did `(range, rows, lines)`, the
/// first line it rejected (position, range, error) and the parse error that stopped it.
#[derive(Default)]
struct SplitShard {
    tally: Tally,
    counts: Vec<(u64, u64, u64)>,
    rejected: Option<(u64, u64, ParseError)>,
    failed: Option<(u64, ParseError)>,
    max_index: u64,
}

/// A mapped text file: each shard claims the next range of lines, parses it with its own copy
/// of `parser` and learns it in batches. Rows are numbered within ranges while learning (see
/// [`position`]) and in the stream once every range is done. After a failure or a stop a
/// shard still parses the rest of its range, unlearned, so that numbering is exact.
fn split<R: BufRead>(
    table: &Table,
    sh: &Shared<'_>,
    threads: usize,
    text: &SplitText,
    parser: &mut SparseParser<R>,
    skip_bad: bool,
) -> Result<Learned, SparseError> {
    let (next, ranges) = (AtomicU64::new(0), text.ranges());
    let template = &parser.detached(std::io::empty(), 0);
    let shards: Vec<SplitShard> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|id| {
                let next = &next;
                s.spawn(move || {
                    let (mut k, tally) = sh.kernel(table, id, threads, false);
                    let mut out = SplitShard { tally, ..SplitShard::default() };
                    let (mut p, mut rows) = (template.detached(std::io::empty(), 0), SparseRows::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= ranges || sh.stopping() {
                            break;
                        }
                        p.restart_lines(0);
                        let (mut row, mut first) = (0u64, 0u64);
                        for line in lines(text.range(i)) {
                            match p.parse_record(line, &mut rows) {
                                Ok(true) => row += 1,
                                Ok(false) => {}
                                Err(e) if skip_bad && !e.fatal => {
                                    out.tally.rejected += 1;
                                    out.rejected.get_or_insert((position(i, row), i, e));
                                }
                                Err(e) => {
                                    out.failed = Some((i, e));
                                    sh.halt.store(true, Ordering::Relaxed);
                                    break;
                                }
                            }
                            if rows.len() == BATCH_ROWS {
                                learn_split(&mut k, &mut rows, position(i, first), &mut out.tally, sh);
                                first = row;
                            }
                        }
                        learn_split(&mut k, &mut rows, position(i, first), &mut out.tally, sh);
                        if out.failed.is_some() {
                            break;
                        }
                        out.counts.push((i, row, p.line_no()));
                    }
                    out.tally.finish(&k);
                    out.max_index = p.max_index;
                    out.tally.missing.add(&p);
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a shard panicked")).collect()
    });
    let counts = shards.iter().flat_map(|o| o.counts.iter().copied());
    let numbering = Numbering::new(ranges, counts, text.header_lines());
    let line = |range: u64, mut e: ParseError| {
        e.line = numbering.line(range, e.line);
        e
    };
    // Learning errors name rows by position until now; a parse error stops the run first.
    renumber(&sh.failed, &numbering);
    if let Some((i, e)) = shards.iter().filter_map(|o| o.failed.clone()).min_by_key(|(i, e)| (*i, e.line)) {
        sh.fail(SparseError::Parse(line(i, e)));
    }
    let mut tallies = Vec::with_capacity(shards.len());
    let mut rejected: Option<(u64, String)> = None;
    for o in shards {
        parser.max_index = parser.max_index.max(o.max_index);
        let mut t = o.tally;
        if let Some((pos, what)) = t.first_rejected.take() {
            t.first_rejected = Some((numbering.row(pos), what));
        }
        if let Some((pos, range, e)) = o.rejected {
            let row = numbering.row(pos);
            if rejected.as_ref().is_none_or(|(r, _)| row < *r) {
                rejected = Some((row, line(range, e).to_string()));
            }
        }
        tallies.push(t);
    }
    // A parse rejection names its line; one before the first learning rejection is reported.
    if let Some((row, what)) = rejected {
        let t = &mut tallies[0];
        if t.first_rejected.as_ref().is_none_or(|(r, _)| row <= *r) {
            t.first_rejected = Some((row, what));
        }
    }
    let held = held_out(text, parser, skip_bad, &mut tallies[0])?;
    Ok((tallies, held, None))
}

/// Learns the rows `rows` holds (their first at `first`), unless the run is stopping, and
/// empties it.
fn learn_split(k: &mut SparseKernel<'_>, rows: &mut SparseRows, first: u64, tally: &mut Tally, sh: &Shared<'_>) {
    if !rows.is_empty() && !sh.stopping() {
        // (No windows here: they read text as a stream.)
        if let Err(e) = learn_rows(k, &rows.as_ref(), (first, 0, WindowTag::default()), tally, sh) {
            sh.fail(e.into());
        }
    }
    rows.clear();
}

/// Turns the positions of a learning error into stream rows.
fn renumber(failed: &Mutex<Option<SparseError>>, numbering: &Numbering) {
    let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(SparseError::Learn(e)) = f.as_mut() {
        *e.row_mut() = numbering.row(e.row());
    }
}

/// The held-out lines of a split file, parsed (`None` without any).
fn held_out<R: BufRead>(
    text: &SplitText,
    parser: &SparseParser<R>,
    skip_bad: bool,
    t: &mut Tally,
) -> Result<Option<SparseRows>, SparseError> {
    let bytes = text.holdout();
    if bytes.is_empty() {
        return Ok(None);
    }
    let (mut p, mut held) = (parser.detached(std::io::empty(), text.lines_before_holdout()), SparseRows::new());
    for line in lines(bytes) {
        match p.parse_record(line, &mut held) {
            Ok(_) => {}
            Err(e) if skip_bad && !e.fatal => t.rejected += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(held))
}
