//! A shard: one worker thread with its own model replica. It pops batches from its ring, runs
//! the feature stage (transforms, skipping rows the producer marked as duplicates) into its own
//! scratch columns when there is anything to do, learns, returns pooled buffers, takes part in
//! merges, reports per-batch outcomes to the window reporter, and records its latency
//! distributions. A shard whose learning fails keeps draining its ring and attending merges (so
//! no other shard waits forever at a barrier) and reports the error. No `unsafe` here.

use crate::batch::{skipped, Batch, OwnedBatch, Payload, SkipMask};
use crate::dataset::Dataset;
use crate::kernel::Columns;
use crate::latency::StageLatency;
use crate::learner::{LearnError, Learner};
use crate::merge::Merger;
use crate::optim::Optimizer;
use crate::ring::Ring;
use crate::transform::{Transform, TransformCounts};
use crate::window::BatchStat;
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
    /// Rows skipped as duplicates (marked by the producer).
    pub duplicates: u64,
    /// Its latency distributions.
    pub latency: StageLatency,
    /// Data batches it processed.
    pub batches: u64,
    /// The error that stopped its learning, if any.
    pub error: Option<LearnError>,
    /// A checkpoint that could not be written, if any.
    pub checkpoint_error: Option<String>,
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
}

/// Scratch columns of the feature stage.
#[derive(Default)]
struct Scratch {
    data: Vec<f32>,
    labels: Vec<f32>,
    weights: Vec<f32>,
}

/// The rows of one batch, wherever they live (labels and weights indexed like the columns:
/// from row 0 of the block, the batch starting at the columns' `r0`).
struct Rows<'b> {
    data: &'b [f32],
    stride: usize,
    d: usize,
    n: usize,
    labels: &'b [f32],
    weights: Option<&'b [f32]>,
}

/// Runs a shard to the end of its ring.
pub fn run(ctx: ShardContext<'_>, mut learner: Learner, mut transform: Transform) -> ShardReport {
    if let Some(core) = ctx.pin {
        core_affinity::set_for_current(core);
    }
    let mut latency = StageLatency::default();
    let mut merge_state = ctx.merger.shard_state(&learner.model().weights);
    let (mut batches, mut error, mut checkpoint_error) = (0u64, None, None);
    let mut counts = TransformCounts::default();
    let mut duplicates = 0u64;
    let mut scratch = Scratch::default();
    let mut epoch = ctx.reset_epoch.load(Ordering::Acquire);
    while let Some(batch) = ctx.input.pop() {
        let dequeued = Instant::now();
        // Rows are numbered as the source numbers them (0-based data rows of the stream).
        learner.set_position(batch.first_row);
        let now_epoch = ctx.reset_epoch.load(Ordering::Acquire);
        if now_epoch != epoch {
            // Drift: restart the optimizer's adaptive state (weights are kept).
            epoch = now_epoch;
            let cfg = learner.config().optim;
            *learner.optimizer_mut() = Optimizer::new(cfg, learner.model().features());
        }
        let rows = match batch.payload {
            Payload::Merge { checkpoint } => {
                let published = ctx.merger.merge(ctx.id, &mut learner, &mut merge_state);
                if let (true, true, Some(path)) = (checkpoint, published, ctx.checkpoint) {
                    let extra = serde_json::json!({ "transform": &transform }).to_string();
                    if let Err(e) = learner.to_file(extra).save(path) {
                        checkpoint_error = Some(e.to_string());
                    }
                }
                continue;
            }
            Payload::Mapped { block, r0, n } => {
                let b = ctx.dataset.expect("mapped batches come with their dataset").block(block);
                let rows = Rows { data: b.data, stride: b.stride, d: b.features, n, labels: b.labels, weights: b.weights };
                let cols = Columns::new(b.data, b.stride, b.features, r0, n);
                let before = learner.progress();
                if error.is_none() {
                    error =
                        learn(&mut learner, &mut transform, &cols, &rows, &batch.skip, &mut scratch, &mut counts, &mut duplicates).err();
                }
                report(&ctx, &mut learner, before, batch.seq, n);
                n
            }
            Payload::Owned(buf) => {
                let n = buf.rows;
                let w = buf.has_weights.then_some(&buf.weights[..n]);
                let rows = Rows { data: &buf.data, stride: buf.stride, d: buf.d, n, labels: &buf.labels[..n], weights: w };
                let cols = Columns::new(&buf.data, buf.stride, buf.d, 0, n);
                let before = learner.progress();
                if error.is_none() {
                    error =
                        learn(&mut learner, &mut transform, &cols, &rows, &batch.skip, &mut scratch, &mut counts, &mut duplicates).err();
                }
                report(&ctx, &mut learner, before, batch.seq, n);
                // The pool has room for every buffer in flight, so this never waits long.
                let _ = ctx.pool.push(buf);
                n
            }
        };
        if error.is_some() {
            ctx.failed.store(true, Ordering::Release);
        }
        let done = Instant::now();
        merge_state.since += rows as f64;
        batches += 1;
        latency.queue.record(dequeued.saturating_duration_since(batch.ingest).as_nanos() as u64);
        latency.compute.record(done.saturating_duration_since(dequeued).as_nanos() as u64);
        latency.end_to_end.record(done.saturating_duration_since(batch.ingest).as_nanos() as u64);
    }
    ShardReport { learner, transform, counts, duplicates, latency, batches, error, checkpoint_error }
}

/// The feature stage then the learner, for one batch.
#[allow(clippy::too_many_arguments)]
fn learn(
    learner: &mut Learner,
    transform: &mut Transform,
    cols: &Columns<'_>,
    rows: &Rows<'_>,
    skip: &SkipMask,
    scratch: &mut Scratch,
    counts: &mut TransformCounts,
    duplicates: &mut u64,
) -> Result<(), LearnError> {
    let any_skip = skip.iter().any(|&w| w != 0);
    if transform.cfg.is_identity() && !any_skip {
        return learner.learn_rows(rows.data, rows.stride, rows.d, cols.r0, rows.n, rows.labels, rows.weights);
    }
    if any_skip {
        *duplicates += (0..rows.n).filter(|&r| skipped(skip, r)).count() as u64;
    }
    let (labels, weights) = (&rows.labels[cols.r0..], rows.weights.map(|w| &w[cols.r0..]));
    let m =
        transform.apply(cols, labels, weights, |r| skipped(skip, r), &mut scratch.data, &mut scratch.labels, &mut scratch.weights, counts);
    let w = rows.weights.map(|_| &scratch.weights[..m]);
    learner.learn_rows(&scratch.data, m, transform.output_features(), 0, m, &scratch.labels[..m], w)
}

/// Sends the batch's learning outcome to the window reporter.
fn report(ctx: &ShardContext<'_>, learner: &mut Learner, before: crate::metrics::Progressive, seq: u64, rows: usize) {
    if let Some(stats) = ctx.stats {
        let after = learner.progress();
        let _ = stats.push(BatchStat {
            seq,
            rows: rows as u64,
            loss: after.loss_sum - before.loss_sum,
            weight: after.weight_sum - before.weight_sum,
            correct: after.correct - before.correct,
            sq_err: after.sq_err - before.sq_err,
        });
    }
}
