//! The wiring, nothing else: a producer (the calling thread) reads the source and routes
//! batches round-robin into one bounded ring per shard (in stripes of a few consecutive
//! batches where shards keep their own duplicate windows); N shard threads learn and merge;
//! at the end the merged model is evaluated on the holdout and everything is reported.
//!
//! A text file split among the shards ([`Input::Split`]) needs no producer: each shard parses
//! its own ranges ([`crate::feed`]) and the calling thread only waits for them.
//!
//! Sources: a mapped `.ssgd` file (what travels is a block reference, never a copy), or a row
//! stream (a text file, stdin, a socket, a Kafka topic) parsed into pooled columnar buffers that
//! come back through a return ring — so the steady state allocates nothing. Shards publish how
//! far they have learned, so a stream source can commit what is learned (Kafka offsets). With
//! `--rate`, the producer paces an open loop and stamps each batch with its *intended* send
//! time, so latency includes the time a late batch would have waited (no coordinated
//! omission). One `unsafe` call: `prctl` for precise pacing sleeps.

use crate::batch::{own_window_fits, Batch, OwnedBatch, Payload, Segment, BATCH_ROWS, MAX_BACK, MAX_SEGMENTS};
use crate::dataset::Dataset;
use crate::dedup::Dedup;
use crate::feed::{Chunk, Chunks, Feed, FeedTally, OwnFeed, OwnRun, Ranges, SplitFeed, SplitRun};
use crate::kernel::{self, Columns};
use crate::latency::{Percentiles, StageLatency};
use crate::learner::{BadRows, LearnError, Learner, LearnerConfig};
use crate::merge::{MergeMode, Merger};
use crate::metrics::{evaluate, Evaluation, Progressive};
use crate::model::{ModelFile, SharedModel};
use crate::ring::Ring;
use crate::shard::{self, ShardContext, ShardReport};
use crate::source::split::{line_count, lines, Numbering, SplitText};
use crate::source::{ParseError, Pull, RowSource, TextParser};
use crate::transform::{Scaling, Transform, TransformConfig, TransformCounts};
use crate::turns::InOrder;
use crate::window::{BatchStat, EventClock, WindowKind, WindowSlot, WindowTag};
pub use crate::window::{OnDrift, WindowConfig};
use indicatif::ProgressBar;
use rand::{RngExt, SeedableRng};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pipeline settings (checked by the CLI before they get here).
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Loss, optimizer, batch size, bad-row policy.
    pub learner: LearnerConfig,
    /// Shards (worker threads).
    pub threads: usize,
    /// Merge every K data batches per shard.
    pub merge_every: usize,
    /// Sync or async merging.
    pub merge: MergeMode,
    /// Ring capacity per shard, in batches.
    pub ring_capacity: usize,
    /// Open-loop pacing in rows/s (`None`: flat out).
    pub rate: Option<f64>,
    /// Pin shard i to core i.
    pub pin: bool,
    /// Passes over a mapped file.
    pub passes: usize,
    /// Shuffle block order (mapped files) with this seed.
    pub shuffle_seed: Option<u64>,
    /// Checkpoint file.
    pub checkpoint: Option<PathBuf>,
    /// Checkpoint about every this many rows (at the next merge).
    pub checkpoint_every: u64,
    /// The feature stage.
    pub transform: TransformConfig,
    /// Drop rows identical to one of the last N rows (0: off).
    pub dedup_window: usize,
    /// Windows and drift detection (`None`: off).
    pub windows: Option<WindowConfig>,
    /// Set from outside (a signal handler) to end the run early: the source stops, the shards
    /// learn what is in flight, and the run reports and returns what was learned
    /// ([`TrainReport::stopped`]).
    pub stop: Option<Arc<AtomicBool>>,
}

impl PipelineConfig {
    /// Whether the run needs a text source's rows in one stream, read by one thread: duplicate
    /// windows, tumbling windows, pacing and passes do (a file is otherwise split among the
    /// shards, a stream dealt to them).
    pub fn needs_one_stream(&self) -> bool {
        self.dedup_window > 0 || self.windows.is_some() || self.rate.is_some() || self.passes > 1
    }

    /// Defaults around `learner`: `threads` shards, sync merges every 32 batches, rings of 8,
    /// one pass in file order, no pacing, pinning, checkpoints, feature stage or windows.
    pub fn new(learner: LearnerConfig, threads: usize) -> Self {
        PipelineConfig {
            learner,
            threads,
            merge_every: 32,
            merge: MergeMode::Sync,
            ring_capacity: 8,
            rate: None,
            pin: false,
            passes: 1,
            shuffle_seed: None,
            checkpoint: None,
            checkpoint_every: u64::MAX,
            transform: TransformConfig::default(),
            dedup_window: 0,
            windows: None,
            stop: None,
        }
    }
}

/// Where the rows come from.
pub enum Input<'a> {
    /// A mapped `.ssgd` file; rows `train_rows..` are the holdout.
    Mapped {
        /// The dataset.
        dataset: &'a Dataset,
        /// Rows used for training (the rest is the holdout).
        train_rows: u64,
    },
    /// A row stream (text parser, Kafka consumer); rows after `train_rows` (when given) are
    /// the holdout.
    Stream {
        /// The source.
        parser: &'a mut dyn RowSource,
        /// Rows used for training (`None`: all).
        train_rows: Option<u64>,
        /// Count and skip malformed lines.
        skip_bad: bool,
    },
    /// A stream (stdin, a socket) that the calling thread cuts into chunks of lines, dealt
    /// round-robin to the shards, which parse them: parsing scales with the shards.
    Chunked {
        /// The stream, after its header.
        reader: &'a mut dyn std::io::BufRead,
        /// A parser of its text (its header read), copied by every shard.
        parser: TextParser<std::io::Empty>,
        /// Lines before the chunks (a CSV header).
        header_lines: u64,
        /// A last line without its newline is an error (a socket closed mid-record).
        require_newline: bool,
        /// Count and skip malformed lines.
        skip_bad: bool,
    },
    /// A source per shard (the members of one Kafka consumer group), each shard pulling from
    /// its own (no producer); no holdout.
    Owned {
        /// One per shard: the run has as many shards.
        sources: Vec<&'a mut (dyn RowSource + Send)>,
        /// Count and skip malformed records.
        skip_bad: bool,
    },
    /// A text file split among the shards, each parsing its own ranges (no producer); its
    /// held-out rows are the holdout.
    Split {
        /// The file.
        text: &'a SplitText,
        /// A parser of its text (its header read), copied by every shard.
        parser: TextParser<std::io::Empty>,
        /// Count and skip malformed lines.
        skip_bad: bool,
    },
}

/// (See [`Input::Chunked`].)
impl Input<'_> {
    /// The parser the shards copy, where they parse (a split file, a chunked stream).
    fn template(&self) -> Option<&TextParser<std::io::Empty>> {
        match self {
            Input::Split { parser, .. } | Input::Chunked { parser, .. } => Some(parser),
            _ => None,
        }
    }

    /// Feature columns of its rows.
    fn features(&self) -> usize {
        match self {
            Input::Mapped { dataset, .. } => dataset.features(),
            Input::Stream { parser, .. } => parser.features(),
            Input::Split { parser, .. } | Input::Chunked { parser, .. } => parser.features(),
            Input::Owned { sources, .. } => sources.first().map_or(0, |s| s.features()),
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A bad input line.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Learning stopped (bad row, divergence).
    #[error("{source_name}: {error}")]
    Learn {
        /// The input's name.
        source_name: String,
        /// What happened.
        error: LearnError,
    },
    /// A checkpoint could not be written.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Settings that cannot work.
    #[error("{0}")]
    Config(String),
    /// An internal invariant broke (a bug): rows were lost or double-counted.
    #[error("row accounting mismatch: {0}")]
    Accounting(String),
}

/// Latency summaries per stage.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct StagePercentiles {
    /// Ingest → dequeued.
    pub queue: Percentiles,
    /// Dequeued → applied.
    pub compute: Percentiles,
}

/// The report of a training run (stable field names: the `--json` output).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainReport {
    /// Rows that entered the pipeline for training (learned + rejected).
    pub rows: u64,
    /// Rows learned.
    pub rows_learned: u64,
    /// Rows rejected (bad values, or malformed lines with `--skip-bad`).
    pub rows_rejected: u64,
    /// Rows dropped for a missing value (`--missing drop`).
    pub rows_dropped_missing: u64,
    /// Rows dropped as duplicates (`--dedup-window`).
    pub rows_dropped_duplicate: u64,
    /// Memory the duplicate windows held at the end, in bytes (0 without `--dedup-window`).
    pub dedup_bytes: u64,
    /// Duplicate windows: one per shard when each keeps its own, 1 when they share one, 0
    /// without `--dedup-window`.
    pub dedup_windows: u64,
    /// Missing cells imputed (`--missing zero|mean`).
    pub cells_imputed: u64,
    /// Windows reported.
    pub windows: u64,
    /// Rows that arrived after their event-time window had closed (learned, and counted here).
    pub rows_late: u64,
    /// The run was stopped early through [`PipelineConfig::stop`]: `rows` are those read until
    /// then, every one of them learned (or rejected, or dropped) as usual.
    pub stopped: bool,
    /// Stream rows at which drift alarms fired.
    pub drift_alarms: Vec<u64>,
    /// The first rejected row and why.
    pub first_rejected: Option<String>,
    /// Wall time of training, seconds.
    pub seconds: f64,
    /// Seconds from the start of training to the first batch learned (`None`: none was).
    pub first_batch_seconds: Option<f64>,
    /// Training throughput.
    pub rows_per_sec: f64,
    /// Shards.
    pub threads: usize,
    /// Merges performed.
    pub merges: u64,
    /// Mean progressive (predict-then-learn) loss.
    pub progressive_loss: f64,
    /// Mean loss of the best constant prediction of the labels learned (what the model must
    /// beat: see [`crate::metrics::baseline`]).
    pub progressive_baseline: f64,
    /// Progressive accuracy (classification).
    pub progressive_accuracy: Option<f64>,
    /// Progressive RMSE (regression).
    pub progressive_rmse: Option<f64>,
    /// Holdout metrics, when there is a holdout.
    pub holdout: Option<Evaluation>,
    /// End-to-end latency (ingest → applied), per batch, ns.
    pub latency_ns: Percentiles,
    /// The other stages.
    pub stages_ns: StagePercentiles,
    /// Kernel instruction set.
    pub isa: kernel::Isa,
    /// Mini-batch size (the largest, when it grows).
    pub batch: usize,
    /// Whether mini-batches grow from online ([`LearnerConfig::grow`]).
    pub batch_grows: bool,
    /// Merge mode and period.
    pub merge: MergeMode,
    /// Batches per shard between merges.
    pub merge_every: usize,
    /// Pacing rate, rows/s.
    pub rate: Option<f64>,
}

/// A finished run: the report, the latency distributions and the model file to save.
pub struct TrainOutcome {
    /// The report.
    pub report: TrainReport,
    /// All shards' latency distributions, merged.
    pub latency: StageLatency,
    /// Final merged weights with shard 0's optimizer state.
    pub model: ModelFile,
    /// The source's error that ended the run early, if one did: the report and the model are
    /// of the rows read before it, and the caller decides what to keep before failing.
    pub source_error: Option<PipelineError>,
}

struct Producer<'a> {
    rings: &'a [Ring<Batch>],
    failed: &'a AtomicBool,
    rate: Option<f64>,
    start: Instant,
    sent_rows: u64,
    batches: u64,
    merge_period: u64,
    /// Block segments per mapped batch (see [`MAX_SEGMENTS`]).
    bundle: usize,
    /// Consecutive batches dealt to one shard before the next: 1, or more where shards keep
    /// their own duplicate windows (see [`stripe`]).
    stripe: u64,
    /// The rows sent last, for mapped batches to carry to the shards' own duplicate windows.
    look_back: LookBack,
    checkpoint_every: u64,
    last_checkpoint: u64,
    checkpointing: bool,
    progress: &'a ProgressBar,
    /// The run's stop request, if it can have one.
    stop: Option<&'a AtomicBool>,
    clock: Option<EventClock>,
    /// Per shard: 1 + the number of the last batch it learned (0: none yet).
    learned: &'a [AtomicU64],
}

/// The last `window` rows sent, as segments in stream order: what a mapped batch carries for
/// the shards' own duplicate windows (`Payload::Mapped::back`). Holds nothing when `window` is
/// 0. Its queue reaches its largest size within the first few batches: it then allocates no
/// more.
struct LookBack {
    window: usize,
    rows: usize,
    recent: std::collections::VecDeque<Segment>,
}

impl LookBack {
    fn new(window: usize) -> Self {
        LookBack { window, rows: 0, recent: std::collections::VecDeque::new() }
    }

    /// Adds segments just sent, dropping those that no longer reach into the window.
    fn push(&mut self, sent: &[Segment]) {
        if self.window == 0 {
            return;
        }
        for s in sent {
            self.recent.push_back(*s);
            self.rows += s.n;
        }
        while let Some(first) = self.recent.front() {
            if self.rows - first.n < self.window {
                break;
            }
            self.rows -= first.n;
            self.recent.pop_front();
        }
    }

    /// The segments of the last `window` rows sent (fewer at the start of the stream), the
    /// first one cut to start where the window does.
    fn segments(&self) -> ([Segment; MAX_BACK], usize) {
        let mut out = [Segment::default(); MAX_BACK];
        let count = self.recent.len();
        // `own_window_fits` bounds the segments a window spans.
        assert!(count <= MAX_BACK, "a look-back of {count} segments");
        for (o, s) in out.iter_mut().zip(&self.recent) {
            *o = *s;
        }
        if let Some(first) = out[..count].first_mut() {
            let excess = self.rows.saturating_sub(self.window);
            first.r0 += excess;
            first.n -= excess;
        }
        (out, count)
    }
}

impl Producer<'_> {
    /// Waits for the batch's intended time under `--rate` and returns the ingest stamp. The
    /// wait sleeps (with the thread's timer slack cut to 1 µs) rather than spins: a spinning
    /// producer would take a core from the shards it feeds. Waking late costs nothing in
    /// honesty: latency is measured from the intended time.
    fn stamp(&self, origin: Option<Instant>) -> Instant {
        if let Some(t) = origin {
            return t;
        }
        let Some(rate) = self.rate else { return Instant::now() };
        let intended = self.start + Duration::from_secs_f64(self.sent_rows as f64 / rate);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        intended
    }

    /// Sends a data batch of `rows` rows (all in window `slot`, created at `origin` when the
    /// source knows); false once a shard failed.
    fn send(&mut self, payload: Payload, rows: usize, slot: WindowSlot, origin: Option<Instant>) -> bool {
        if self.failed.load(Ordering::Acquire) {
            return false;
        }
        let ingest = self.stamp(origin);
        let shard = (self.batches / self.stripe % self.rings.len() as u64) as usize;
        let window = self.clock.as_ref().map_or_else(WindowTag::default, |c| c.tag(slot));
        if self.rings[shard].push(Batch { payload, ingest, seq: self.batches, first_row: self.sent_rows, window }).is_err() {
            return false;
        }
        self.sent_rows += rows as u64;
        self.batches += 1;
        // Every batch: a live source's progress (and `train --metrics-addr`) stays current; the
        // bar's drawing is rate-limited.
        self.progress.set_position(self.sent_rows);
        if self.batches % self.merge_period == 0 {
            let due = self.checkpointing && self.sent_rows - self.last_checkpoint >= self.checkpoint_every;
            if due {
                self.last_checkpoint = self.sent_rows;
            }
            self.merge(due);
        }
        true
    }

    /// True once a stop was requested: the source sends no more.
    fn stopping(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::Acquire))
    }

    /// Every batch numbered below this has been learned.
    fn learned_prefix(&self) -> u64 {
        let (n, k) = (self.learned.len() as u64, self.stripe);
        let next = |(i, done): (usize, &AtomicU64)| next_batch(i as u64, done.load(Ordering::Acquire), n, k);
        self.learned.iter().enumerate().map(next).min().unwrap_or(0).min(self.batches)
    }

    fn merge(&self, checkpoint: bool) {
        for r in self.rings {
            let _ = r.push(Batch {
                payload: Payload::Merge { checkpoint },
                ingest: Instant::now(),
                seq: self.batches,
                first_row: self.sent_rows,
                window: WindowTag::default(),
            });
        }
    }
}

/// Consecutive batches dealt to one shard when shards keep their own duplicate windows: each
/// stripe's first batch carries the look-back its shard's window must be fed (the rows just
/// before it, which another shard learns), the others follow on from rows the window has
/// just seen. The largest power of two that divides `per_merge` (batches a shard learns
/// between merges, so each still learns as many), at most 4 and at most half a ring of
/// `ring` batches (so the producer, filling one shard's ring, can always run ahead to the
/// next's). With 2 shards, a window of 1000 rows and batches of 8192, stripes of 4 feed a
/// window 1000 rows per 32 768 learned instead of per 8192.
fn stripe(per_merge: usize, ring: usize) -> u64 {
    let most = (ring / 2).clamp(1, 4);
    1 << per_merge.trailing_zeros().min(most.ilog2())
}

/// The first batch shard `i` of `n` has yet to learn, when it has learned up to batch
/// `learned` - 1 (0: none yet) and batches are dealt in stripes of `k`: shard i learns stripes
/// i, i + n, ... The next batch of its stripe, or the first of its next stripe.
fn next_batch(i: u64, learned: u64, n: u64, k: u64) -> u64 {
    match learned {
        0 => i * k,
        v if v % k != 0 => v,
        v => v + (n - 1) * k,
    }
}

/// Trains on `input` with `cfg`, starting from `initial` (resume) or zeros.
pub fn train(
    cfg: &PipelineConfig,
    input: &mut Input<'_>,
    source_name: &str,
    initial: Option<ModelFile>,
    shared: Arc<SharedModel>,
    progress: &ProgressBar,
) -> Result<TrainOutcome, PipelineError> {
    let d = input.features();
    let n = match input {
        Input::Owned { sources, .. } => sources.len().max(1),
        _ => cfg.threads.max(1),
    };
    let transform = match initial.as_ref().map(|f| saved_transform(&f.extra)).transpose()?.flatten() {
        Some(t) if t.cfg != cfg.transform || t.d != d => {
            return Err(PipelineError::Config(format!(
                "the resumed model's feature stage ({}, {} inputs) differs from this run's ({}, {d} inputs)",
                t.cfg, t.d, cfg.transform
            )))
        }
        Some(t) => t,
        None => Transform::new(cfg.transform, d),
    };
    let d_model = transform.output_features();
    let learners: Vec<Learner> = (0..n)
        .map(|_| {
            let mut l = match &initial {
                Some(f) => Learner::resume(cfg.learner, f.model.clone(), f.optimizer.clone()),
                None => Learner::new(cfg.learner, d_model),
            };
            l.set_scaled(cfg.transform.scaling != Scaling::None);
            l
        })
        .collect();
    if learners[0].model().features() != d_model {
        return Err(PipelineError::Config(format!(
            "the model has {} features, the data (after the feature stage) {d_model}",
            learners[0].model().features()
        )));
    }
    let initial_w = learners[0].model().weights.clone();
    shared.publish(learners[0].model().clone());
    let merger = Merger::new(cfg.merge, n, &initial_w, shared);
    let rings: Vec<Ring<Batch>> = (0..n).map(|_| Ring::new(cfg.ring_capacity)).collect();
    let in_flight = n * (cfg.ring_capacity + 2) + 1;
    let pool: Ring<Box<OwnedBatch>> = Ring::new(in_flight);
    if let Input::Stream { .. } = input {
        let bytes = in_flight as u64 * (d as u64 + 2) * BATCH_ROWS as u64 * 4;
        crate::batch::check_memory(bytes, || {
            format!(
                "{d} features: the {in_flight} pooled text batches of {BATCH_ROWS} rows ({n} shards × (--ring {} + 2) + 1)",
                cfg.ring_capacity
            )
        })
        .map_err(PipelineError::Config)?;
        for _ in 0..in_flight {
            let _ = pool.push(Box::new(OwnedBatch::new(d, BATCH_ROWS)));
        }
    }
    let failed = AtomicBool::new(false);
    // A split file or a chunked stream: the shards parse their own ranges into two buffers
    // each.
    let chunks = Chunks::default();
    let (mut senders, mut receivers) = (Vec::new(), Vec::new());
    if let Input::Chunked { .. } = input {
        for _ in 0..n {
            let (tx, rx) = crossbeam::channel::bounded::<Chunk>(2);
            senders.push(tx);
            receivers.push(Some(rx));
        }
    }
    let split = match input {
        Input::Split { .. } | Input::Chunked { .. } => {
            let ranges = match input {
                Input::Split { text, .. } => Ranges::File(text),
                _ => Ranges::Stream(&chunks),
            };
            let (Input::Split { skip_bad, .. } | Input::Chunked { skip_bad, .. }) = input else { unreachable!("split or chunked") };
            let skip_bad = *skip_bad;
            let parser = input.template().expect("split or chunked").detached(std::io::empty(), 0);
            if cfg.needs_one_stream() {
                return Err(PipelineError::Config(
                    "duplicate windows, windows, --rate and --passes read a text file as one stream, not split among the shards".into(),
                ));
            }
            let every = cfg.checkpoint.is_some().then_some(cfg.checkpoint_every.max(1));
            Some(SplitRun::new(ranges, parser, skip_bad, n, cfg.merge_every, cfg.stop.as_deref(), &failed, every))
        }
        _ => None,
    };
    // A source per shard: each shard pulls from its own.
    let mut own_sources: Vec<Option<&mut (dyn RowSource + Send)>> = Vec::new();
    let own_run = match input {
        Input::Owned { sources, skip_bad } => {
            if cfg.needs_one_stream() {
                return Err(PipelineError::Config(
                    "duplicate windows, windows, --rate and --passes need one stream, not a source per shard".into(),
                ));
            }
            let skip_bad = *skip_bad;
            own_sources = std::mem::take(sources).into_iter().map(Some).collect();
            let every = cfg.checkpoint.is_some().then_some(cfg.checkpoint_every.max(1));
            let sync = cfg.merge == MergeMode::Sync;
            Some(OwnRun::new(n, cfg.merge_every, sync, skip_bad, cfg.stop.as_deref(), &failed, every))
        }
        _ => None,
    };
    let own_pools: Vec<Ring<Box<OwnedBatch>>> = match split.is_some() || own_run.is_some() {
        true => {
            crate::batch::check_memory(2 * n as u64 * (d as u64 + 2) * BATCH_ROWS as u64 * 4, || {
                format!("{d} features: 2 text batches of {BATCH_ROWS} rows per shard ({n} shards)")
            })
            .map_err(PipelineError::Config)?;
            (0..n)
                .map(|_| {
                    let r = Ring::new(2);
                    for _ in 0..2 {
                        let _ = r.push(Box::new(OwnedBatch::new(d, BATCH_ROWS)));
                    }
                    r
                })
                .collect()
        }
        false => Vec::new(),
    };
    let cores = if cfg.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let dataset = match input {
        Input::Mapped { dataset, .. } => Some(*dataset),
        Input::Stream { .. } | Input::Split { .. } | Input::Chunked { .. } | Input::Owned { .. } => None,
    };
    let learned: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    // Duplicate windows: one per shard where each can see the rows before its batches (one
    // shard, or a mapped file and a window short enough for batches to carry them), else one
    // shared window whose turns the shards take in stream order.
    let window = |rows: usize| Dedup::try_new(rows).map_err(|e| PipelineError::Config(format!("--dedup-window {rows}: {e}")));
    let own_windows = cfg.dedup_window > 0
        && match input {
            Input::Mapped { dataset, .. } => n == 1 || own_window_fits(cfg.dedup_window, dataset.header().block_rows as usize),
            Input::Stream { .. } | Input::Split { .. } | Input::Chunked { .. } | Input::Owned { .. } => n == 1,
        };
    let own = (0..n).map(|_| own_windows.then(|| window(cfg.dedup_window)).transpose()).collect::<Result<Vec<_>, _>>()?;
    let shared = cfg.dedup_window > 0 && !own_windows;
    let dedup = shared.then(|| window(cfg.dedup_window).map(InOrder::new)).transpose()?;
    // Mapped segments bundled per batch: with dedup (one turn at a shared window, or one
    // look-back for a shard's own, per batch) and without per-batch window reports (whose boundaries are batch boundaries); a power of two that
    // divides --merge-every, so merges still come every K segments per shard.
    let bundle = if cfg.dedup_window > 0 && cfg.windows.is_none() && matches!(input, Input::Mapped { .. }) {
        1 << cfg.merge_every.max(1).trailing_zeros().min(MAX_SEGMENTS.trailing_zeros())
    } else {
        1
    };
    // Own windows that another shard's rows precede: batches carry look-back, in stripes.
    let looking_back = own_windows && n > 1;
    let start = Instant::now();
    let mut producer = Producer {
        rings: &rings,
        failed: &failed,
        rate: cfg.rate,
        start,
        sent_rows: 0,
        batches: 0,
        merge_period: (cfg.merge_every.max(1) / bundle * n) as u64,
        bundle,
        stripe: if looking_back { stripe(cfg.merge_every.max(1) / bundle, cfg.ring_capacity) } else { 1 },
        look_back: LookBack::new(if looking_back { cfg.dedup_window } else { 0 }),
        checkpoint_every: cfg.checkpoint_every.max(1),
        last_checkpoint: 0,
        checkpointing: cfg.checkpoint.is_some(),
        progress,
        stop: cfg.stop.as_deref(),
        clock: match cfg.windows.as_ref().map(|w| w.kind) {
            Some(WindowKind::Time(t)) => {
                if !matches!(input, Input::Stream { parser, .. } if parser.has_timestamps()) {
                    return Err(PipelineError::Config(
                        "event-time windows need a timestamp column (--timestamp-col) in a CSV source, or Kafka records".into(),
                    ));
                }
                Some(EventClock::new(t))
            }
            _ => None,
        },
        learned: &learned,
    };
    let stats_ring: Option<Ring<BatchStat>> = cfg.windows.as_ref().map(|_| Ring::new(4096));
    let reset_epoch = AtomicU64::new(0);
    let mut windows =
        cfg.windows.as_ref().map(|w| w.open(cfg.learner.loss.is_classification())).transpose().map_err(PipelineError::Config)?;
    if cfg.rate.is_some() {
        precise_sleep();
    }
    let mut source_rejected = 0u64;
    let mut first_source_reject: Option<String> = None;
    let (mut reports, mut produced, window_io) = std::thread::scope(|s| {
        let handles: Vec<_> = learners
            .into_iter()
            .zip(own)
            .enumerate()
            .map(|(id, (learner, own_window))| {
                let ctx = ShardContext {
                    id,
                    input: &rings[id],
                    pool: own_pools.get(id).unwrap_or(&pool),
                    dataset,
                    merger: &merger,
                    failed: &failed,
                    checkpoint: cfg.checkpoint.as_deref(),
                    pin: cores.get(id % cores.len().max(1)).copied(),
                    stats: stats_ring.as_ref(),
                    reset_epoch: &reset_epoch,
                    learned: &learned[id],
                    dedup: dedup.as_ref(),
                    own_window,
                    feed: match (&split, &own_run) {
                        (Some(run), _) => Some(Feed::Split(Box::new(SplitFeed::new(
                            run,
                            id,
                            &own_pools[id],
                            receivers.get_mut(id).and_then(Option::take),
                        )))),
                        (None, Some(run)) => {
                            own_sources[id].take().map(|source| Feed::Own(Box::new(OwnFeed::new(run, id, source, &own_pools[id]))))
                        }
                        (None, None) => None,
                    },
                };
                let t = transform.clone();
                s.spawn(move || shard::run(ctx, learner, t))
            })
            .collect();
        let reporter = match (windows.as_mut(), stats_ring.as_ref(), &cfg.windows) {
            (Some(w), Some(ring), Some(wc)) => {
                let (reset, on_drift) = (&reset_epoch, wc.on_drift);
                Some(s.spawn(move || -> std::io::Result<()> {
                    while let Some(stat) = ring.pop() {
                        if w.add(stat)? && on_drift == OnDrift::Reset {
                            reset.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    w.finish()
                }))
            }
            _ => None,
        };
        let produced = match input {
            Input::Chunked { reader, parser, require_newline, .. } => {
                let dealt = deal(&mut **reader, std::mem::take(&mut senders), &chunks, cfg.stop.as_deref(), &failed, *require_newline);
                dealt.map_err(|what| {
                    PipelineError::Parse(ParseError { source: parser.source_name().to_string(), line: 0, field: None, what, fatal: true })
                })
            }
            _ => produce(cfg, input, &mut producer, &pool, &mut source_rejected, &mut first_source_reject),
        };
        if split.is_none() && own_run.is_none() {
            producer.merge(cfg.checkpoint.is_some());
        } else {
            // The shards read their input: this thread shows how far they are.
            while !handles.iter().all(|h| h.is_finished()) {
                progress.set_position(split.as_ref().map_or(0, SplitRun::parsed) + own_run.as_ref().map_or(0, OwnRun::parsed));
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for r in &rings {
            r.close();
        }
        // Every thread is joined before a shard's panic is passed on: the reporter ends only
        // once its ring is closed.
        let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        if let Some(ring) = stats_ring.as_ref() {
            ring.close();
        }
        let window_io = reporter.map(|h| h.join().expect("window reporter panicked")).transpose();
        let reports: Vec<_> = joined.into_iter().map(|r| r.unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect();
        (reports, produced, window_io)
    });
    let seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let mut split_rows = 0;
    let header_lines = match input {
        Input::Split { text, .. } => Some(text.header_lines()),
        Input::Chunked { header_lines, .. } => Some(*header_lines),
        _ => None,
    };
    let tally = if let (Some(parser), Some(header_lines)) = (input.template(), header_lines) {
        let text = match &*input {
            Input::Split { text, .. } => Some(*text),
            _ => None,
        };
        Some(split_tally(text, header_lines, parser, &mut reports))
    } else {
        own_run.is_some().then(|| own_tally(&mut reports))
    };
    if let Some(tally) = tally {
        split_rows = tally.rows;
        source_rejected += tally.rejected;
        first_source_reject = tally.first_rejected;
        if let Some(e) = tally.failure {
            produced = Err(PipelineError::Parse(e));
        }
    }
    // A source that fails (a broken line without --skip-bad, a stream cut mid-line) ends the
    // run: what was read before it is learned, reported and returned with the error.
    let source_error = match produced {
        Err(PipelineError::Parse(e)) => Some(PipelineError::Parse(e)),
        other => {
            other?;
            None
        }
    };
    let stopped = producer.stopping();
    window_io.map_err(|e| PipelineError::Config(format!("window report: {e}")))?;
    let mut latency = StageLatency::default();
    let mut progressive = Progressive::default();
    let (mut learned, mut rejected) = (0u64, source_rejected);
    let mut first_rejected = first_source_reject;
    let mut counts = TransformCounts::default();
    let (mut duplicates, mut window_bytes) = (0u64, 0u64);
    // Every shard saw its own share of the stream, starting from the same statistics (empty,
    // or a resumed model's): the saved statistics are the base plus every shard's share.
    let mut final_transform = transform.clone();
    for r in &mut reports {
        counts.merge(&r.counts);
        duplicates += r.duplicates;
        window_bytes += r.window_bytes;
        final_transform.stats.merge(&r.transform.stats.minus(&transform.stats));
        if let Some(e) = &r.error {
            return Err(PipelineError::Learn { source_name: source_name.to_string(), error: e.clone() });
        }
        if let Some(e) = &r.checkpoint_error {
            return Err(PipelineError::Checkpoint(e.clone()));
        }
        latency.merge(&r.latency);
        progressive.merge(&r.learner.progress());
        learned += r.learner.rows_learned;
        rejected += r.learner.rows_rejected;
        if first_rejected.is_none() {
            first_rejected = r.learner.first_rejected.as_ref().map(|(row, what)| format!("row {}: {what}", row + 1));
        }
    }
    let rows = producer.sent_rows + split_rows + source_rejected;
    if learned + rejected + counts.dropped_missing + duplicates != rows {
        return Err(PipelineError::Accounting(format!(
            "{rows} rows in, {learned} learned + {rejected} rejected + {} dropped as missing + {duplicates} dropped as duplicates",
            counts.dropped_missing
        )));
    }
    // Everything sent was learned: a stream source commits its final position.
    if let (Input::Stream { parser, .. }, None) = (&mut *input, &source_error) {
        parser.learned(u64::MAX)?;
    }
    final_transform.frozen = true;
    let extra = serde_json::json!({ "transform": &final_transform }).to_string();
    let mut model = reports[0].learner.to_file(extra);
    model.model.weights = merger.merged_weights();
    let loss = cfg.learner.loss;
    let cls = loss.is_classification();
    // A stream's holdout is the rest of the stream: not read after a stop or a failure.
    let cut_short = source_error.is_some() || stopped;
    let holdout = match input {
        Input::Stream { .. } if cut_short => None,
        _ => evaluate_holdout(input, &model.model, Some(&final_transform), cfg.learner.bad_rows)?,
    };
    let (window_count, drift_alarms) = windows.map_or((0, Vec::new()), |w| (w.windows, w.alarms));
    let report = TrainReport {
        rows,
        rows_learned: learned,
        rows_rejected: rejected,
        rows_dropped_missing: counts.dropped_missing,
        rows_dropped_duplicate: duplicates,
        dedup_windows: if own_windows { n as u64 } else { u64::from(dedup.is_some()) },
        dedup_bytes: dedup.map_or(0, |d| d.into_inner().memory_bytes() as u64) + window_bytes,
        cells_imputed: counts.imputed_cells,
        windows: window_count,
        rows_late: producer.clock.as_ref().map_or(0, |c| c.late),
        stopped,
        drift_alarms,
        first_rejected,
        seconds,
        first_batch_seconds: reports.iter().filter_map(|r| r.first_learned).min().map(|t| t.duration_since(start).as_secs_f64()),
        rows_per_sec: rows as f64 / seconds.max(1e-9),
        threads: n,
        merges: merger.merges(),
        progressive_loss: progressive.mean_loss(),
        progressive_baseline: progressive.baseline(&cfg.learner.loss),
        progressive_accuracy: cls.then(|| progressive.correct / progressive.weight_sum),
        progressive_rmse: (!cls).then(|| (progressive.sq_err / progressive.weight_sum).sqrt()),
        holdout,
        latency_ns: latency.end_to_end.percentiles(),
        stages_ns: StagePercentiles { queue: latency.queue.percentiles(), compute: latency.compute.percentiles() },
        isa: kernel::isa(),
        batch: cfg.learner.batch,
        batch_grows: cfg.learner.grow,
        merge: cfg.merge,
        merge_every: cfg.merge_every,
        rate: cfg.rate,
    };
    Ok(TrainOutcome { report, latency, model, source_error })
}

/// The segments of the first `train_rows` rows of a mapped file, in file order, at most
/// [`BATCH_ROWS`] rows each (larger blocks are cut).
pub fn segments(dataset: &Dataset, train_rows: u64) -> Vec<Segment> {
    let per_block = (dataset.header().block_rows as usize).div_ceil(BATCH_ROWS);
    let mut segments = Vec::with_capacity(dataset.blocks() as usize * per_block);
    let mut left = train_rows;
    for b in 0..dataset.blocks() {
        if left == 0 {
            break;
        }
        let n = dataset.header().rows_in_block(b).min(left) as usize;
        for r0 in (0..n).step_by(BATCH_ROWS) {
            segments.push(Segment { block: b, r0, n: BATCH_ROWS.min(n - r0) });
        }
        left -= n as u64;
    }
    segments
}

/// The producer loop: reads the source and sends batches until the training rows are done.
fn produce(
    cfg: &PipelineConfig,
    input: &mut Input<'_>,
    p: &mut Producer<'_>,
    pool: &Ring<Box<OwnedBatch>>,
    rejected: &mut u64,
    first_reject: &mut Option<String>,
) -> Result<(), PipelineError> {
    match input {
        Input::Mapped { dataset, train_rows } => {
            let mut segments = segments(dataset, *train_rows);
            for pass in 0..cfg.passes.max(1) {
                // A file too large to prefault is read ahead of the batches sent and dropped
                // behind them (in file order only: shuffled blocks are read where they fall).
                let mut streaming = dataset.streaming().filter(|_| cfg.shuffle_seed.is_none());
                if let Some(seed) = cfg.shuffle_seed {
                    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed ^ (pass as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    for i in (1..segments.len()).rev() {
                        segments.swap(i, rng.random_range(0..=i));
                    }
                }
                for bundle in segments.chunks(p.bundle) {
                    let mut parts = [Segment::default(); MAX_SEGMENTS];
                    parts[..bundle.len()].copy_from_slice(bundle);
                    let rows = bundle.iter().map(|s| s.n).sum();
                    // Only a stripe's first batch: the others follow on from rows their
                    // shard's window has just seen.
                    let (back, back_count) =
                        if p.batches % p.stripe == 0 { p.look_back.segments() } else { ([Segment::default(); MAX_BACK], 0) };
                    if p.stopping()
                        || !p.send(Payload::Mapped { segments: parts, count: bundle.len(), back, back_count }, rows, WindowSlot::None, None)
                    {
                        return Ok(());
                    }
                    p.look_back.push(bundle);
                    if let (Some(st), Some(last)) = (streaming.as_mut(), bundle.last()) {
                        st.at(dataset.block_offset(last.block));
                    }
                }
            }
            Ok(())
        }
        // The shards read it themselves (a chunked stream is dealt by `deal`).
        Input::Split { .. } | Input::Chunked { .. } | Input::Owned { .. } => Ok(()),
        Input::Stream { parser, train_rows, skip_bad } => {
            if cfg.passes > 1 {
                return Err(PipelineError::Config(
                    "--passes replays a file: a stream cannot be read twice (save it to a file first)".into(),
                ));
            }
            let limit = train_rows.unwrap_or(u64::MAX);
            let mut row = vec![0.0f32; parser.features()];
            let mut taken = 0u64;
            let mut done = false;
            let mut failure = None;
            // A batch holds rows of one event-time window: a row of another window is carried
            // over to the next batch.
            let mut carry: Option<(f32, f32, WindowSlot)> = None;
            while !done {
                let Some(mut buf) = pool.pop() else { return Ok(()) };
                buf.clear();
                let mut slot = WindowSlot::None;
                if let Some((y, w, s)) = carry.take() {
                    buf.push(&row, y, w);
                    slot = s;
                }
                while !buf.is_full() && taken < limit {
                    if p.stopping() {
                        // What the batch holds is still sent and learned.
                        done = true;
                        break;
                    }
                    // A live source with nothing new sends what the batch holds (no linger);
                    // an empty batch waits, and meanwhile learned rows are committed.
                    match parser.pull(&mut row, buf.rows == 0) {
                        Ok(Pull::Row(r)) => {
                            taken += 1;
                            if let Some(clock) = p.clock.as_mut() {
                                let s = clock.assign(r.time);
                                if buf.rows > 0 && s != slot {
                                    carry = Some((r.label, r.weight, s));
                                    break;
                                }
                                slot = s;
                            }
                            buf.push(&row, r.label, r.weight);
                        }
                        Ok(Pull::Idle) if buf.rows > 0 => break,
                        Ok(Pull::Idle) => {
                            if p.failed.load(Ordering::Acquire) {
                                let _ = pool.push(buf);
                                return Ok(());
                            }
                            parser.learned(p.learned_prefix())?;
                        }
                        Ok(Pull::End) => {
                            done = true;
                            break;
                        }
                        Err(e) if *skip_bad && !e.fatal => {
                            *rejected += 1;
                            taken += 1;
                            first_reject.get_or_insert_with(|| e.to_string());
                        }
                        Err(e) => {
                            // The rows read before it are still learned.
                            failure = Some(e);
                            done = true;
                            break;
                        }
                    }
                }
                if taken >= limit && carry.is_none() {
                    done = true;
                }
                let rows = buf.rows;
                if rows == 0 {
                    let _ = pool.push(buf);
                    continue;
                }
                let (seq, origin) = (p.batches, parser.take_origin());
                if !p.send(Payload::Owned(buf), rows, slot, origin) {
                    break;
                }
                parser.sent(seq, carry.is_some());
                if failure.is_none() {
                    parser.learned(p.learned_prefix())?;
                }
            }
            failure.map_or(Ok(()), |e| Err(e.into()))
        }
    }
}

/// Evaluates `model` on what is left of the input after training (the holdout); with
/// `train_rows` 0 (or `Some(0)`), on the whole input.
pub fn evaluate_holdout(
    input: &mut Input<'_>,
    model: &crate::model::LinearModel,
    transform: Option<&Transform>,
    bad: BadRows,
) -> Result<Option<Evaluation>, PipelineError> {
    let loss = model.loss;
    let inputs = transform.map_or(model.features(), |t| t.d);
    // A chunked stream and sources of their own have no holdout (their rows are not counted
    // ahead).
    if matches!(input, Input::Chunked { .. } | Input::Owned { .. }) {
        return Ok(None);
    }
    let have = input.features();
    if have != inputs {
        return Err(PipelineError::Config(format!("the model has {inputs} input features, the data {have}")));
    }
    let transform = transform.filter(|t| !t.cfg.is_identity());
    let mut t_out = vec![0.0f32; model.features()];
    let mut t_in = vec![0.0f32; transform.map_or(0, |t| t.d)];
    // The margin of one raw row through the frozen feature stage (NaN when it would be dropped).
    let mut margin = |x: &[f32]| -> f32 {
        match transform {
            Some(t) if t.apply_row(x, &mut t_out) => model.predict_row(&t_out),
            Some(_) => f32::NAN,
            None => model.predict_row(x),
        }
    };
    let (mut p, mut y, mut w) = (Vec::new(), Vec::new(), Vec::new());
    let mut keep = |pred: f32, label: f32, weight: f32| -> Result<(), String> {
        match loss.label(label) {
            Ok(yl) if pred.is_finite() && weight.is_finite() && weight >= 0.0 => {
                p.push(pred);
                y.push(yl);
                w.push(weight);
                Ok(())
            }
            Ok(_) => Err(format!("holdout row with a non-finite feature or weight (prediction {pred})")),
            Err(e) => Err(e.to_string()),
        }
    };
    let check = |r: Result<(), String>| match (r, bad) {
        (Err(what), BadRows::Error) => Err(PipelineError::Config(format!("holdout: {what}"))),
        _ => Ok(()),
    };
    match input {
        Input::Mapped { dataset, train_rows } => {
            if *train_rows >= dataset.rows() {
                return Ok(None);
            }
            let br = dataset.header().block_rows as u64;
            let mut out = vec![0.0f32; br as usize];
            // A stage that folds is applied inside the predict kernel, a block at a time.
            let mut folding = transform.filter(|t| t.foldable()).map(|t| {
                let mut t = t.clone();
                t.frozen = true;
                t
            });
            let mut w_fold = vec![0.0f32; model.features()];
            for b in train_rows.div_euclid(br)..dataset.blocks() {
                let blk = dataset.block(b);
                let r0 = if b * br < *train_rows { (*train_rows - b * br) as usize } else { 0 };
                let m = blk.rows - r0;
                let cols = Columns::new(blk.data, blk.stride, blk.features, r0, m);
                if let Some(t) = folding.as_mut() {
                    let f = t.fold(&cols, &mut TransformCounts::default(), None);
                    for ((o, &w), &k) in w_fold.iter_mut().zip(&model.weights).zip(&f.b) {
                        *o = w * k;
                    }
                    kernel::predict_block_folded(&cols, f, &w_fold, model.bias(), &mut out[..m]);
                } else if transform.is_some() {
                    for (i, o) in out[..m].iter_mut().enumerate() {
                        blk.row_into(r0 + i, &mut t_in);
                        *o = margin(&t_in);
                    }
                } else {
                    model.predict_block(&cols, &mut out[..m]);
                }
                for (i, &pred) in out[..m].iter().enumerate() {
                    check(keep(pred, blk.labels[r0 + i], blk.weight(r0 + i)))?;
                }
            }
        }
        Input::Stream { parser, train_rows, skip_bad } => {
            if train_rows.is_none() {
                return Ok(None);
            }
            let mut row = vec![0.0f32; parser.features()];
            while let Some((label, weight)) = next_held(*parser, &mut row, *skip_bad)? {
                check(keep(margin(&row), label, weight))?;
            }
        }
        Input::Chunked { .. } | Input::Owned { .. } => {}
        Input::Split { text, parser, skip_bad } => {
            let mut held = parser.detached(text.holdout(), text.lines_before_holdout());
            let mut row = vec![0.0f32; parser.features()];
            while let Some((label, weight)) = next_held(&mut held, &mut row, *skip_bad)? {
                check(keep(margin(&row), label, weight))?;
            }
        }
    }
    Ok((!p.is_empty()).then(|| evaluate(&loss, &p, &y, Some(&w))))
}

/// Cuts `reader` into chunks of whole lines (about a batch of them each, measured on the first
/// lines read) dealt round-robin to the shards' channels, until the stream ends, a stop is
/// asked for, or a shard is gone. A last line without its newline is flagged where
/// `require_newline` makes it an error.
fn deal(
    reader: &mut dyn std::io::BufRead,
    senders: Vec<crossbeam::channel::Sender<Chunk>>,
    chunks: &Chunks,
    stop: Option<&AtomicBool>,
    failed: &AtomicBool,
    require_newline: bool,
) -> Result<(), String> {
    let n = senders.len().max(1) as u64;
    let (mut index, mut pending, mut target) = (0u64, Vec::new(), 0usize);
    let send = |index: &mut u64, bytes: Vec<u8>, unterminated: bool| {
        let ok = senders[(*index % n) as usize].send(Chunk { index: *index, bytes, unterminated }).is_ok();
        *index += 1;
        chunks.sent(*index);
        ok
    };
    let result = loop {
        if stop.is_some_and(|s| s.load(Ordering::Acquire)) || failed.load(Ordering::Acquire) {
            break Ok(());
        }
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) => break Err(e),
        };
        if buf.is_empty() {
            if !pending.is_empty() {
                let unterminated = require_newline && pending.last() != Some(&b'\n');
                send(&mut index, std::mem::take(&mut pending), unterminated);
            }
            break Ok(());
        }
        let took = buf.len();
        pending.extend_from_slice(buf);
        reader.consume(took);
        if target == 0 {
            let lines = line_count(&pending);
            if lines > 1 {
                target = (pending.len() / lines as usize * BATCH_ROWS).clamp(4 << 10, 4 << 20);
            }
        }
        if pending.len() >= target.max(4 << 10) {
            match memchr::memrchr(b'\n', &pending) {
                Some(p) => {
                    let rest = pending.split_off(p + 1);
                    if !send(&mut index, std::mem::replace(&mut pending, rest), false) {
                        break Ok(());
                    }
                }
                None if pending.len() > crate::source::text::MAX_LINE => {
                    break Err(std::io::Error::other(crate::source::text::too_long()));
                }
                None => {}
            }
        }
    };
    chunks.end();
    result.map_err(|e| format!("read failed: {e}"))
}

/// The next held-out row of `source` into `row` (its label and weight), malformed ones skipped
/// with `skip_bad`; `None` at the end.
fn next_held(source: &mut dyn RowSource, row: &mut [f32], skip_bad: bool) -> Result<Option<(f32, f32)>, PipelineError> {
    loop {
        match source.pull(row, true) {
            Ok(Pull::Row(r)) => return Ok(Some((r.label, r.weight))),
            Ok(Pull::Idle) => {}
            Ok(Pull::End) => return Ok(None),
            Err(e) if skip_bad && !e.fatal => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the shards' feeds of a split file saw, summed, with every row and line numbered in
/// the stream: the rows parsed and the lines rejected, the first of them and the malformed
/// line that stopped the run (the earliest), as one reader would report them.
struct SplitSummary {
    rows: u64,
    rejected: u64,
    first_rejected: Option<String>,
    failure: Option<ParseError>,
}

/// Sums the feeds of sources of their own: rows are numbered as the shards took them, and
/// errors name their record.
fn own_tally(reports: &mut [ShardReport]) -> SplitSummary {
    let feeds: Vec<FeedTally> = reports.iter_mut().filter_map(|r| r.feed.take()).collect();
    let first = feeds.iter().filter_map(|f| f.first_rejected.as_ref()).min_by_key(|(pos, _, _)| *pos);
    SplitSummary {
        rows: feeds.iter().map(|f| f.rows).sum(),
        rejected: feeds.iter().map(|f| f.rejected).sum(),
        first_rejected: first.map(|(_, _, e)| e.to_string()),
        failure: feeds.into_iter().find_map(|f| f.failure).map(|(_, e)| e),
    }
}

/// Sums the feeds of `reports` and numbers the rows their learners name (the first rejected,
/// a learning error) in the stream.
fn split_tally(
    text: Option<&SplitText>,
    header_lines: u64,
    parser: &TextParser<std::io::Empty>,
    reports: &mut [ShardReport],
) -> SplitSummary {
    let feeds: Vec<FeedTally> = reports.iter_mut().filter_map(|r| r.feed.take()).collect();
    // A run that stopped early left ranges unparsed: those before a position to number are
    // counted now (by one thread: at most a round's ranges).
    let range_of = |pos: u64| pos >> 32;
    let positions = reports.iter().flat_map(|r| {
        let learned = r.learner.first_rejected.as_ref().map(|(row, _)| range_of(*row));
        learned.into_iter().chain(r.error.as_ref().map(|e| range_of(e.row())))
    });
    let parsed =
        feeds.iter().flat_map(|f| f.first_rejected.iter().map(|(_, range, _)| *range).chain(f.failure.iter().map(|(range, _)| *range)));
    let need = positions.chain(parsed).max().unwrap_or(0);
    let mut counts: Vec<(u64, u64, u64)> = feeds.iter().flat_map(|f| f.counts.iter().copied()).collect();
    let mut done = vec![false; need as usize];
    counts.iter().filter(|c| c.0 < need).for_each(|c| done[c.0 as usize] = true);
    let mut p = parser.detached(std::io::empty(), 0);
    let mut row = vec![0.0f32; parser.features()];
    // (A stream's chunks are gone: its stopped runs number what they parsed.)
    for i in (0..need).filter(|&i| !done[i as usize] && text.is_some()) {
        let bytes = text.map_or(&[][..], |t| t.range(i));
        let rows = lines(bytes).filter(|l| matches!(p.parse_record(l, &mut row), Ok(Some(_)))).count() as u64;
        counts.push((i, rows, line_count(bytes)));
    }
    let ranges = counts.iter().map(|c| c.0 + 1).max().unwrap_or(0).max(need);
    let numbering = Numbering::new(ranges, counts, header_lines);
    for r in reports.iter_mut() {
        if let Some((row, _)) = r.learner.first_rejected.as_mut() {
            *row = numbering.row(*row);
        }
        if let Some(e) = r.error.as_mut() {
            *e.row_mut() = numbering.row(e.row());
        }
    }
    let line = |range: u64, e: &ParseError| ParseError { line: numbering.line(range, e.line), ..e.clone() };
    let first = feeds.iter().filter_map(|f| f.first_rejected.as_ref()).min_by_key(|(pos, _, _)| *pos);
    let failure = feeds.iter().filter_map(|f| f.failure.as_ref()).min_by_key(|(range, e)| (*range, e.line));
    SplitSummary {
        rows: feeds.iter().map(|f| f.rows).sum(),
        rejected: feeds.iter().map(|f| f.rejected).sum(),
        first_rejected: first.map(|(_, range, e)| line(*range, e).to_string()),
        failure: failure.map(|(range, e)| line(*range, e)),
    }
}

/// Cuts this thread's timer slack to 1 µs so paced sleeps wake on time (Linux; elsewhere the
/// default slack applies).
pub(crate) fn precise_sleep() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

/// The feature stage saved in a model file's extra JSON, if any.
pub fn saved_transform(extra: &str) -> Result<Option<Transform>, PipelineError> {
    let v: serde_json::Value =
        serde_json::from_str(extra).map_err(|e| PipelineError::Config(format!("model file: extra section is not JSON: {e}")))?;
    match v.get("transform") {
        None => Ok(None),
        Some(t) => {
            let mut t: Transform =
                serde_json::from_value(t.clone()).map_err(|e| PipelineError::Config(format!("model file: bad feature stage: {e}")))?;
            t.frozen = true;
            Ok(Some(t))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{next_batch, stripe};

    #[test]
    fn stripes_divide_the_batches_between_merges_and_fit_half_a_ring() {
        // (batches a shard learns between merges, ring) -> stripe
        for (per_merge, ring, want) in
            [(4, 8, 4), (8, 8, 4), (2, 8, 2), (3, 8, 1), (12, 8, 4), (6, 8, 2), (4, 4, 2), (4, 2, 1), (4, 1, 1), (1, 8, 1), (16, 6, 2)]
        {
            assert_eq!(stripe(per_merge, ring), want, "per_merge {per_merge}, ring {ring}");
        }
    }

    #[test]
    fn next_batch_is_the_first_unlearned_batch_of_the_shard() {
        for n in 1..5u64 {
            for k in [1u64, 2, 4] {
                let owner = |b: u64| b / k % n;
                for i in 0..n {
                    // Shard i has learned its batches below `upto` (none when upto is its first).
                    for upto in (0..60).filter(|&b| owner(b) == i) {
                        let learned = (0..upto).rev().find(|&b| owner(b) == i).map_or(0, |b| b + 1);
                        assert_eq!(next_batch(i, learned, n, k), upto, "n {n}, k {k}, shard {i}, learned {learned}");
                    }
                }
            }
        }
    }
}
