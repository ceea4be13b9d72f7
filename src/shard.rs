//! A shard: one worker thread with its own model replica. It pops batches from its ring,
//! learns them, returns pooled buffers, takes part in merges, and records its latency
//! distributions. A shard whose learning fails keeps draining its ring and attending merges
//! (so no other shard waits forever at a barrier) and reports the error. No `unsafe` here.

use crate::batch::{Batch, OwnedBatch, Payload};
use crate::dataset::Dataset;
use crate::latency::StageLatency;
use crate::learner::{LearnError, Learner};
use crate::merge::Merger;
use crate::ring::Ring;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What a shard did.
#[derive(Debug)]
pub struct ShardReport {
    /// The shard's learner at the end (its stats and optimizer state).
    pub learner: Learner,
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
    /// JSON saved beside the model in checkpoints.
    pub extra: &'a str,
    /// Pin this thread to a core.
    pub pin: Option<core_affinity::CoreId>,
}

/// Runs a shard to the end of its ring.
pub fn run(ctx: ShardContext<'_>, mut learner: Learner) -> ShardReport {
    if let Some(core) = ctx.pin {
        core_affinity::set_for_current(core);
    }
    let mut latency = StageLatency::default();
    let mut merge_state = ctx.merger.shard_state(&learner.model().weights);
    let (mut batches, mut error, mut checkpoint_error) = (0u64, None, None);
    while let Some(batch) = ctx.input.pop() {
        let dequeued = Instant::now();
        let rows = match batch.payload {
            Payload::Merge { checkpoint } => {
                let published = ctx.merger.merge(ctx.id, &mut learner, &mut merge_state);
                if let (true, true, Some(path)) = (checkpoint, published, ctx.checkpoint) {
                    if let Err(e) = learner.to_file(ctx.extra.to_string()).save(path) {
                        checkpoint_error = Some(e.to_string());
                    }
                }
                continue;
            }
            Payload::Mapped { block, r0, n } => {
                if error.is_none() {
                    let b = ctx.dataset.expect("mapped batches come with their dataset").block(block);
                    if let Err(e) = learner.learn_rows(b.data, b.stride, b.features, r0, n, b.labels, b.weights) {
                        error = Some(e);
                    }
                }
                n
            }
            Payload::Owned(buf) => {
                let n = buf.rows;
                if error.is_none() {
                    let w = buf.has_weights.then_some(&buf.weights[..]);
                    if let Err(e) = learner.learn_rows(&buf.data, buf.stride, buf.d, 0, n, &buf.labels, w) {
                        error = Some(e);
                    }
                }
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
    ShardReport { learner, latency, batches, error, checkpoint_error }
}
