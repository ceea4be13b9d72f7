//! A shard: one worker thread with its own model replica. It pops batches from its ring (or
//! reads its own input: [`Feed`]), runs
//! the feature stage (folded into the learner's kernels, or into its own scratch columns) and
//! the duplicate window when `--dedup-window` is on, learns, returns pooled buffers, takes part
//! in merges, reports per-batch outcomes to the window reporter, and records its latency
//! distributions.
//!
//! Two ways through a batch. On the *one-read path* (`Work::fused`: a mini-batch learner, a
//! stage that folds into the kernels, the shard's own duplicate window or none), the learner's
//! predict pass over each mini-batch also fingerprints its rows and sums its columns
//! ([`predict_scan`]; a standardising stage's sums come from the learner's gradient pass
//! instead, over the rows it keeps), the rows are looked up in the window, and the learner
//! goes on with the margins it has: the data is read from memory once. Otherwise the shard
//! first reads the batch once ([`scan`]) for the fingerprints and sums, takes the batch's turn
//! at the shared window (in stream order, [`InOrder`]) or looks it up in its own, then learns.
//! A shard's own window is fed, before each batch, the rows of the stream just before it that
//! other shards learn (the look-back segments of a mapped batch), so it drops exactly what one
//! window over the stream drops.
//!
//! A shard whose learning fails keeps draining its ring and attending merges (so no other shard
//! waits forever at a barrier) and reports the error; a shard that panics makes the run fail
//! rather than hang (its `PanicGuard`). No `unsafe` here.

use crate::batch::{skipped, skipped_rows, Batch, OwnedBatch, Payload, Segment, SkipMask, BATCH_ROWS, MAX_SEGMENTS};
use crate::dataset::Dataset;
use crate::dedup::Dedup;
use crate::feed::{Feed, FeedTally};
use crate::kernel::{self, predict_scan, scan, ColumnSums, Columns, Moments, Predictor};
use crate::latency::StageLatency;
use crate::learner::{LearnError, Learner};
use crate::merge::Merger;
use crate::ring::Ring;
use crate::transform::{Transform, TransformCounts};
use crate::turns::InOrder;
use crate::window::{BatchStat, WindowTag};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// What a shard did.
#[derive(Debug)]
pub struct ShardReport {
    /// The shard's learner at the end (its stats and optimizer state).
    pub learner: Learner,
    /// Its feature stage (statistics from its share of the stream).
    pub transform: Transform,
    /// What the feature stage did.
    pub counts: TransformCounts,
    /// Rows skipped as duplicates.
    pub duplicates: u64,
    /// Memory its own duplicate window held at the end, in bytes (0 without one).
    pub window_bytes: u64,
    /// Its latency distributions.
    pub latency: StageLatency,
    /// Data batches it processed.
    pub batches: u64,
    /// The error that stopped its learning, if any.
    pub error: Option<LearnError>,
    /// A checkpoint that could not be written, if any.
    pub checkpoint_error: Option<String>,
    /// What its feed saw, when it read its own input.
    pub feed: Option<FeedTally>,
    /// When it had learned its first batch.
    pub first_learned: Option<Instant>,
}

/// Everything a shard borrows from the pipeline.
pub struct ShardContext<'a> {
    /// Shard number.
    pub id: usize,
    /// Its input ring.
    pub input: &'a Ring<Batch>,
    /// Where pooled buffers go back.
    pub pool: &'a Ring<Box<OwnedBatch>>,
    /// The mapped dataset for `Payload::Mapped` batches.
    pub dataset: Option<&'a Dataset>,
    /// The merge state.
    pub merger: &'a Merger,
    /// Set when any shard fails, so the producer stops.
    pub failed: &'a AtomicBool,
    /// Checkpoint file, written by the publishing shard at merges marked for it.
    pub checkpoint: Option<&'a Path>,
    /// Pin this thread to a core.
    pub pin: Option<core_affinity::CoreId>,
    /// Per-batch outcomes for the window reporter (when windows or drift detection are on).
    pub stats: Option<&'a Ring<BatchStat>>,
    /// Bumped by the reporter when drift calls for an optimizer reset.
    pub reset_epoch: &'a AtomicU64,
    /// 1 + the number of the last batch this shard learned (0: none yet); a stream source
    /// commits what every shard has learned.
    pub learned: &'a AtomicU64,
    /// The duplicate window all shards share (`--dedup-window`), its turns taken in batch
    /// order.
    pub dedup: Option<&'a InOrder<Dedup>>,
    /// Or the shard's own duplicate window: it sees the shard's batches and, before each, the
    /// rows of the stream other shards learn (a mapped batch's look-back segments) — the same
    /// rows dropped as by one window over the stream, without turns.
    pub own_window: Option<Dedup>,
    /// Its own input (ranges of a split text file, chunks of a stream, a source of its own),
    /// read by the shard itself instead of `input`; its buffers come and go through `pool`.
    pub feed: Option<Feed<'a>>,
}

/// The duplicate window a shard consults.
enum Window<'a> {
    Off,
    Shared(&'a InOrder<Dedup>),
    Own(Dedup),
}

/// Scratch columns of the feature stage.
#[derive(Default)]
pub(crate) struct Scratch {
    data: Vec<f32>,
    labels: Vec<f32>,
    weights: Vec<f32>,
    margins: Vec<f32>,
}

/// What a batch's scan leaves for learning it, per part of the batch: its rows' fingerprints,
/// its column sums, its duplicate rows.
#[derive(Default)]
struct Scanned {
    hashes: Vec<Vec<u64>>,
    sums: Vec<ColumnSums>,
    skips: Vec<SkipMask>,
}

/// Labels and weights of one batch, indexed like its columns: from row 0 of the block, the
/// batch starting at the columns' `r0`.
struct Targets<'b> {
    labels: &'b [f32],
    weights: Option<&'b [f32]>,
}

/// Scratch of the one-read path ([`Work::fused`]): a chunk's fingerprints, column moments (of
/// the predict pass, or of the rows learned), margins and duplicate rows, the part's moments
/// so far, the look-back rows' fingerprints.
#[derive(Default)]
struct Fused {
    hashes: Vec<u64>,
    sums: Vec<Moments>,
    taken: Vec<Moments>,
    part: Vec<Moments>,
    margins: Vec<f32>,
    dup_rows: Vec<usize>,
    back: Vec<u64>,
    back_margins: Vec<f32>,
    zeros: Vec<f32>,
}

/// Per-shard state the batch step updates.
struct Work<'a> {
    learner: Learner,
    transform: Transform,
    scratch: Scratch,
    scanned: Scanned,
    fused: Fused,
    counts: TransformCounts,
    duplicates: u64,
    error: Option<LearnError>,
    stats: Option<&'a Ring<BatchStat>>,
    window: Window<'a>,
}

impl Work<'_> {
    /// Reads each part of batch `seq` once before learning ([`scan`]): fingerprints its rows,
    /// and sums its columns into `scanned.sums` when the feature stage can take its moments from
    /// there; then takes the batch's turn at the shared duplicate window (even after a failure,
    /// so later batches do not wait forever), marking each part's duplicates in
    /// `scanned.skips`. Returns whether it summed.
    fn scan(&mut self, parts: &[(Columns<'_>, Targets<'_>)], seq: u64) -> bool {
        let shifts = if self.error.is_none() { self.transform.scan_shifts() } else { None };
        let summed = shifts.is_some();
        let Scanned { hashes, sums, skips } = &mut self.scanned;
        skips.clear();
        skips.resize(parts.len(), [0; BATCH_ROWS / 64]);
        sums.resize_with(parts.len(), ColumnSums::default);
        let dedup = !matches!(self.window, Window::Off);
        if !dedup && !summed {
            return false;
        }
        hashes.resize_with(parts.len(), Vec::new);
        for ((cols, t), (h, m)) in parts.iter().zip(hashes.iter_mut().zip(sums.iter_mut())) {
            let labels = &t.labels[cols.r0..cols.r0 + cols.n];
            scan(cols, labels, dedup.then_some(h), shifts.map(|s| (s, m)));
        }
        let mut mark = |w: &mut Dedup| hashes.iter().zip(skips.iter_mut()).for_each(|(h, skip)| w.mark(h, skip));
        match &mut self.window {
            Window::Off => {}
            Window::Shared(window) => window.turn(seq, mark),
            Window::Own(window) => mark(window),
        }
        summed
    }

    /// Enters into the shard's own window the rows of the stream before `first_row` that it
    /// has not seen (other shards learn them): those of `back`, the segments of the rows just
    /// before the batch, that it does not hold yet; a window further behind first skips ahead.
    fn catch_up(&mut self, first_row: u64, back: &[Segment], ds: Option<&Dataset>) {
        let Window::Own(window) = &mut self.window else { return };
        let have = window.next_row();
        if have >= first_row {
            return;
        }
        let back_rows: u64 = back.iter().map(|s| s.n as u64).sum();
        let from = first_row - back_rows;
        window.seek(from);
        // Rows of `back` the window already holds (it saw them, or was given them before).
        let mut held = have.saturating_sub(from) as usize;
        for s in back {
            let skip = held.min(s.n);
            held -= skip;
            if skip == s.n {
                continue;
            }
            let b = ds.expect("look-back segments come with their dataset").block(s.block);
            let cols = Columns::new(b.data, b.stride, b.features, s.r0 + skip, s.n - skip);
            // Fingerprints by the one-read path's column-wise pass (measured faster here than
            // the row-chunk scan), its margins of zero weights unused.
            let Fused { back, back_margins, zeros, .. } = &mut self.fused;
            zeros.resize(cols.d, 0.0);
            back_margins.resize(cols.n, 0.0);
            let p = Predictor { fold: None, w: zeros, bias: 0.0 };
            predict_scan(&cols, &p, back_margins, &b.labels[cols.r0..cols.r0 + cols.n], Some(back), None);
            window.feed(back);
        }
        debug_assert_eq!(window.next_row(), first_row, "the look-back reaches the batch");
    }

    /// Learns one part of a batch on the one-read path, when it applies (a mini-batch learner;
    /// the shard's own window or none; a stage that folds into the kernels, or none): per
    /// mini-batch, the learner's predict pass also fingerprints the rows and sums the columns
    /// ([`predict_scan`]), the rows are looked up in the window, and the learner goes on with
    /// the margins it has. A mini-batch with duplicates is compacted (rows, margins) and its
    /// moments lose the duplicates' values; one whose NaN cells the fold did not replace yet is
    /// predicted again, the fold imputing from then on. Where the fold's offsets are the
    /// shifts and it does not clamp (standardising without clipping), the gradient pass sums
    /// the rows learned instead, after the predict pass (measured: the predict pass's second
    /// read of each column, with the hash chains in the same loop, left the pass compute-bound
    /// where it had been waiting on memory). Returns None, doing nothing, where the path does
    /// not apply.
    fn fused(&mut self, cols: &Columns<'_>, t: &Targets<'_>) -> Option<Result<(), LearnError>> {
        let Work { learner, transform, scratch, fused, counts, duplicates, window, .. } = self;
        let batch = learner.batch_now();
        let identity = transform.cfg.is_identity();
        let mut window = match window {
            Window::Shared(_) => return None,
            Window::Off => None,
            Window::Own(w) => Some(w),
        };
        let dedup = window.is_some();
        if batch <= 1 || (identity && !dedup) {
            return None;
        }
        let summing = !identity && transform.begin_fold()?;
        let imputing = transform.imputing();
        let Fused { hashes, sums, taken, part, margins, dup_rows, .. } = fused;
        if summing {
            part.clear();
            part.extend(transform.fold_shifts().iter().map(|&k| Moments::empty(k)));
        }
        // A standardising stage's offsets are its shifts (both the running means): where the
        // fold does not clamp either, the learner's gradient pass sums the rows it learns
        // (`kernel::gradient_block_folded`), the duplicates already out, and the predict pass
        // only fingerprints. Rows the gradient does not sum (rows to reject, NaN cells) are
        // summed by a pass of their own.
        let centred = summing && {
            let f = transform.folded();
            !f.clamp && f.a.iter().zip(transform.fold_shifts()).all(|(a, k)| a.to_bits() == k.to_bits())
        };
        let (mut kept, mut r) = (0u64, 0);
        while r < cols.n {
            let m = batch.min(cols.n - r);
            let chunk = Columns::new(cols.data, cols.stride, cols.d, cols.r0 + r, m);
            let (labels, weights) = (&t.labels[chunk.r0..chunk.r0 + m], t.weights.map(|w| &w[chunk.r0..chunk.r0 + m]));
            let fold = (!identity).then(|| transform.folded());
            // Summed by the gradient (not once the fold imputes: its values are then not the
            // cells'), or by the predict pass.
            let deferred = centred && fold.is_some_and(|f| !f.impute);
            let shifts = (summing && !deferred).then(|| transform.fold_shifts());
            let mut skip: SkipMask = [0; BATCH_ROWS / 64];
            // NaN cells the fold does not replace yet (it then starts to: the margins are
            // redone). Summed by the predict pass, their columns have fewer values than rows;
            // otherwise they make margins NaN.
            let mut redo = false;
            let step = learner.step_with(&chunk, fold, labels, weights, deferred.then_some(&mut *taken), |p, out| {
                predict_scan(&chunk, p, out, labels, dedup.then_some(&mut *hashes), shifts.map(|k| (k, &mut *sums)));
                if let Some(w) = window.as_deref_mut() {
                    w.mark(hashes, &mut skip);
                }
                redo = summing
                    && imputing
                    && fold.is_some_and(|f| !f.impute)
                    && if deferred { out.iter().fold(false, |nan, v| nan | v.is_nan()) } else { sums.iter().any(|s| s.n < m as f64) };
                let go_on = skip.iter().all(|&w| w == 0) && !redo;
                if !go_on {
                    margins.clear();
                    margins.extend_from_slice(out);
                }
                go_on
            });
            match step {
                Err(e) => return Some(Err(e)),
                Ok(true) => {
                    kept += m as u64;
                    if deferred {
                        absorb_learned(part, taken, &chunk, transform.fold_shifts());
                    } else if summing {
                        part.iter_mut().zip(sums.iter()).for_each(|(acc, s)| acc.absorb(s));
                    }
                }
                Ok(false) => {
                    // Duplicates (their rows are taken out), or NaN cells to replace (the margins
                    // are computed again).
                    dup_rows.clear();
                    dup_rows.extend(skipped_rows(&skip, m));
                    let dups = dup_rows.len();
                    *duplicates += dups as u64;
                    for (j, (acc, s)) in part.iter_mut().zip(sums.iter_mut()).enumerate().filter(|_| shifts.is_some()) {
                        let col = chunk.col(j);
                        s.remove(dup_rows.iter().map(|&r| col[r]));
                        acc.absorb(s);
                    }
                    let (part_cols, labels, weights) = if dups > 0 {
                        let k = compact(&chunk, t, &skip, scratch);
                        scratch.margins.resize(m + 8, 0.0);
                        kernel::compact(&margins[..m], &skip, &mut scratch.margins);
                        (Columns::new(&scratch.data, k, cols.d, 0, k), &scratch.labels[..], t.weights.map(|_| &scratch.weights[..]))
                    } else {
                        (chunk, t.labels, t.weights)
                    };
                    kept += part_cols.n as u64;
                    if redo {
                        transform.impute_from_now();
                    }
                    let fold = (!identity).then(|| transform.folded());
                    let learned = if redo {
                        learner.learn_columns(&part_cols, fold, labels, weights)
                    } else {
                        // The kept rows' margins, as the pass computed them.
                        let n = part_cols.n;
                        let (labels, weights) =
                            (&labels[part_cols.r0..part_cols.r0 + n], weights.map(|w| &w[part_cols.r0..part_cols.r0 + n]));
                        let margins = if dups > 0 { &scratch.margins[..n] } else { &margins[..n] };
                        learner
                            .step_with(&part_cols, fold, labels, weights, deferred.then_some(&mut *taken), |_, out| {
                                out.copy_from_slice(margins);
                                true
                            })
                            .map(|_| ())
                    };
                    if let Err(e) = learned {
                        return Some(Err(e));
                    }
                    if deferred {
                        absorb_learned(part, taken, &part_cols, transform.fold_shifts());
                    }
                }
            }
            r += m;
        }
        if summing {
            transform.end_fold(part, kept, counts);
        }
        Some(Ok(()))
    }

    /// Learns part `cols` of a batch after its scan, part `i` of [`Work::scan`]'s (`summed`:
    /// whether the scan summed its columns).
    fn learn_scanned(&mut self, i: usize, cols: &Columns<'_>, t: &Targets<'_>, summed: bool) -> Result<(), LearnError> {
        let stage = (&self.scanned.skips[i], summed.then_some(&self.scanned.sums[i].moments[..]));
        let (learner, transform, scratch) = (&mut self.learner, &mut self.transform, &mut self.scratch);
        learn(learner, transform, cols, t, stage, scratch, &mut self.counts, &mut self.duplicates)
    }

    /// Learns one data batch, its parts in order (unless an earlier one failed), and reports
    /// its outcome to the window reporter, when there is one.
    fn batch(&mut self, parts: &[(Columns<'_>, Targets<'_>)], seq: u64, tag: WindowTag) {
        let before = self.stats.map(|_| self.learner.progress());
        if let Window::Shared(_) = self.window {
            // One turn at the shared window for the whole batch, then the parts.
            let summed = self.scan(parts, seq);
            for (i, (cols, t)) in parts.iter().enumerate() {
                if self.error.is_some() {
                    break;
                }
                self.error = self.learn_scanned(i, cols, t, summed).err();
            }
        } else {
            for (i, (cols, t)) in parts.iter().enumerate() {
                if self.error.is_some() {
                    break;
                }
                self.error = match self.fused(cols, t) {
                    Some(learned) => learned.err(),
                    None => {
                        let summed = self.scan(&parts[i..=i], seq);
                        self.learn_scanned(0, cols, t, summed).err()
                    }
                };
            }
        }
        if let (Some(stats), Some(before)) = (self.stats, before) {
            let after = self.learner.progress();
            let _ = stats.push(BatchStat {
                seq,
                tag,
                rows: parts.iter().map(|(c, _)| c.n as u64).sum(),
                loss: after.loss_sum - before.loss_sum,
                weight: after.weight_sum - before.weight_sum,
                correct: after.correct - before.correct,
                sq_err: after.sq_err - before.sq_err,
            });
        }
    }
}

/// Lets the pipeline fail instead of hang when its shard panics (a bug, not bad input): the
/// producer stops (`failed`, and the shard's ring and the buffer pool close), and the shards
/// waiting for this one at the merge barrier or at the duplicate window's turns panic too.
struct PanicGuard<'c, 'a>(&'c ShardContext<'a>);

impl Drop for PanicGuard<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let ctx = self.0;
            ctx.failed.store(true, Ordering::Release);
            ctx.input.close();
            ctx.pool.close();
            ctx.merger.abandon();
            if let Some(window) = ctx.dedup {
                window.abandon();
            }
        }
    }
}

/// Runs a shard to the end of its ring.
pub fn run(mut ctx: ShardContext<'_>, learner: Learner, transform: Transform) -> ShardReport {
    let own_window = ctx.own_window.take();
    let mut feed = ctx.feed.take();
    let _guard = PanicGuard(&ctx);
    if let Some(core) = ctx.pin {
        core_affinity::set_for_current(core);
    }
    let mut latency = StageLatency::default();
    let mut merge_state = ctx.merger.shard_state(&learner.model().weights);
    let (mut batches, mut checkpoint_error, mut first_learned) = (0u64, None, None);
    let mut w = Work {
        learner,
        transform,
        scratch: Scratch::default(),
        scanned: Scanned::default(),
        fused: Fused::default(),
        counts: TransformCounts::default(),
        duplicates: 0,
        error: None,
        stats: ctx.stats,
        window: match (own_window, ctx.dedup) {
            (Some(w), _) => Window::Own(w),
            (None, Some(w)) => Window::Shared(w),
            (None, None) => Window::Off,
        },
    };
    let mut epoch = ctx.reset_epoch.load(Ordering::Acquire);
    while let Some(batch) = feed.as_mut().map_or_else(|| ctx.input.pop(), Feed::next_batch) {
        let dequeued = Instant::now();
        // Rows are numbered as the source numbers them (0-based data rows of the stream).
        w.learner.set_position(batch.first_row);
        let now_epoch = ctx.reset_epoch.load(Ordering::Acquire);
        if now_epoch != epoch {
            // Drift: restart the optimizer's adaptive state (weights are kept).
            epoch = now_epoch;
            w.learner.optimizer_mut().reset();
        }
        let rows = match batch.payload {
            Payload::Merge { checkpoint } => {
                let published = ctx.merger.merge(ctx.id, &mut w.learner, &mut merge_state);
                if let (true, true, Some(path)) = (checkpoint, published, ctx.checkpoint) {
                    let extra = serde_json::json!({ "transform": &w.transform }).to_string();
                    if let Err(e) = w.learner.to_file(extra).save(path) {
                        checkpoint_error = Some(e.to_string());
                    }
                }
                continue;
            }
            Payload::Mapped { segments, count, back, back_count } => {
                let ds = ctx.dataset.expect("mapped batches come with their dataset");
                w.catch_up(batch.first_row, &back[..back_count], Some(ds));
                let part = |s: &Segment| {
                    let b = ds.block(s.block);
                    (Columns::new(b.data, b.stride, b.features, s.r0, s.n), Targets { labels: b.labels, weights: b.weights })
                };
                // A fixed array (the steady state allocates nothing): unused entries repeat the first.
                let parts: [_; MAX_SEGMENTS] = std::array::from_fn(|i| part(&segments[if i < count { i } else { 0 }]));
                w.batch(&parts[..count], batch.seq, batch.window);
                segments[..count].iter().map(|s| s.n).sum()
            }
            Payload::Owned(buf) => {
                // An own window over a text stream has one shard: it sees every row.
                w.catch_up(batch.first_row, &[], None);
                let n = buf.rows;
                let cols = Columns::new(&buf.data, buf.stride, buf.d, 0, n);
                let t = Targets { labels: &buf.labels[..n], weights: buf.has_weights.then_some(&buf.weights[..n]) };
                w.batch(&[(cols, t)], batch.seq, batch.window);
                // The pool has room for every buffer in flight, so this never waits long.
                let _ = ctx.pool.push(buf);
                n
            }
        };
        if w.error.is_some() {
            ctx.failed.store(true, Ordering::Release);
        } else {
            ctx.learned.store(batch.seq + 1, Ordering::Release);
        }
        let done = Instant::now();
        first_learned.get_or_insert(done);
        merge_state.since += rows as f64;
        batches += 1;
        latency.queue.record(dequeued.saturating_duration_since(batch.ingest).as_nanos() as u64);
        latency.compute.record(done.saturating_duration_since(dequeued).as_nanos() as u64);
        latency.end_to_end.record(done.saturating_duration_since(batch.ingest).as_nanos() as u64);
    }
    ShardReport {
        learner: w.learner,
        transform: w.transform,
        counts: w.counts,
        duplicates: w.duplicates,
        window_bytes: match &w.window {
            Window::Own(d) => d.memory_bytes() as u64,
            _ => 0,
        },
        latency,
        batches,
        error: w.error,
        checkpoint_error,
        feed: feed.map(Feed::finish),
        first_learned,
    }
}

/// What a shard does with a batch that has no duplicates to skip, for a learner outside the
/// pipeline ([`crate::online::OnlineModel`]): the feature stage then the learner, on at most
/// [`BATCH_ROWS`] rows `cols` (`labels` and `weights` indexed from row 0 of its data).
pub(crate) fn learn_staged(
    learner: &mut Learner,
    transform: &mut Transform,
    cols: &Columns<'_>,
    (labels, weights): (&[f32], Option<&[f32]>),
    scratch: &mut Scratch,
    counts: &mut TransformCounts,
) -> Result<(), LearnError> {
    debug_assert!(cols.n <= BATCH_ROWS);
    let none: SkipMask = [0; BATCH_ROWS / 64];
    learn(learner, transform, cols, &Targets { labels, weights }, (&none, None), scratch, counts, &mut 0)
}

/// Rows of transformed columns written at a time: the learner's mini-batch, at least 256 rows
/// — so a chunk is still in L1/L2 when the learner reads it.
fn chunk_rows(batch: usize) -> usize {
    batch.clamp(256, BATCH_ROWS)
}

/// The feature stage then the learner, for one batch, skipping the rows `skip` marks (`sums`:
/// the batch's column sums from its scan, when taken). When the stage folds into the
/// learner's kernels ([`Transform::foldable`]), the learner reads the source's columns (or,
/// when the batch has duplicates to skip, a compacted copy of its kept rows); otherwise the
/// stage writes transformed columns, a chunk at a time, that the learner reads.
#[allow(clippy::too_many_arguments)]
fn learn(
    learner: &mut Learner,
    transform: &mut Transform,
    cols: &Columns<'_>,
    t: &Targets<'_>,
    (skip, sums): (&SkipMask, Option<&[Moments]>),
    scratch: &mut Scratch,
    counts: &mut TransformCounts,
    duplicates: &mut u64,
) -> Result<(), LearnError> {
    let any_skip = skip.iter().any(|&w| w != 0);
    let identity = transform.cfg.is_identity();
    if identity && !any_skip {
        return learner.learn_rows(cols.data, cols.stride, cols.d, cols.r0, cols.n, t.labels, t.weights);
    }
    if any_skip {
        *duplicates += skipped_rows(skip, cols.n).count() as u64;
    }
    if transform.foldable() {
        // The scan's sums are of all the batch's rows: a compacted batch is summed again.
        let (part, labels, weights, sums) = if any_skip {
            let m = compact(cols, t, skip, scratch);
            (Columns::new(&scratch.data, m, cols.d, 0, m), &scratch.labels[..m], t.weights.map(|_| &scratch.weights[..m]), None)
        } else {
            (*cols, t.labels, t.weights, sums)
        };
        if !identity {
            transform.fold(&part, counts, sums);
        }
        transform.centre(learner.centre_mut());
        let fold = (!identity).then(|| transform.folded());
        return learner.learn_columns(&part, fold, labels, weights);
    }
    // Transformed columns, a chunk at a time (so they are still in cache when learned).
    let chunk = chunk_rows(learner.batch_now());
    let mut c0 = 0;
    while c0 < cols.n {
        let cn = chunk.min(cols.n - c0);
        let part = Columns::new(cols.data, cols.stride, cols.d, cols.r0 + c0, cn);
        let (labels, weights) = (&t.labels[part.r0..], t.weights.map(|w| &w[part.r0..]));
        let dup = |r| skipped(skip, c0 + r);
        let m = transform.apply(&part, labels, weights, dup, &mut scratch.data, &mut scratch.labels, &mut scratch.weights, counts);
        transform.centre(learner.centre_mut());
        let w = t.weights.map(|_| &scratch.weights[..m]);
        learner.learn_rows(&scratch.data, m, transform.output_features(), 0, m, &scratch.labels[..m], w)?;
        c0 += cn;
    }
    Ok(())
}

/// Adds to a part's moments those of the rows `cols` just learned: the moments the learner's
/// gradient pass took (`taken`), or where it took none (rows to reject, NaN cells), a pass's of
/// the rows' non-NaN values shifted by `shifts`.
fn absorb_learned(part: &mut [Moments], taken: &mut Vec<Moments>, cols: &Columns<'_>, shifts: &[f32]) {
    if taken.len() != cols.d {
        taken.clear();
        taken.extend(shifts.iter().enumerate().map(|(j, &k)| kernel::moments(cols.col(j), k, false)));
    }
    for (acc, s) in part.iter_mut().zip(taken.iter()) {
        acc.absorb(s);
    }
}

/// Copies the rows of `cols` that `skip` does not mark, with their labels and weights, into
/// `scratch` (column-major, stride = the rows kept); returns how many.
fn compact(cols: &Columns<'_>, t: &Targets<'_>, skip: &SkipMask, scratch: &mut Scratch) -> usize {
    let n = cols.n;
    let m = n - skipped_rows(skip, n).count();
    // Column j at j·m; the last one's compaction needs room for n + 8 values.
    let room = |k: usize| k.saturating_sub(1) * m + n + 8;
    for (out, k) in [(&mut scratch.data, cols.d), (&mut scratch.labels, 1), (&mut scratch.weights, usize::from(t.weights.is_some()))] {
        if out.len() < room(k) {
            out.resize(room(k), 0.0);
        }
    }
    for j in 0..cols.d {
        kernel::compact(cols.col(j), skip, &mut scratch.data[j * m..]);
    }
    kernel::compact(&t.labels[cols.r0..cols.r0 + n], skip, &mut scratch.labels);
    if let Some(w) = t.weights {
        kernel::compact(&w[cols.r0..cols.r0 + n], skip, &mut scratch.weights);
    }
    m
}
