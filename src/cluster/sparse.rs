//! Sparse rows across workers: each learns into a table of its own and, every merge, shares
//! only the slots it changed since the last one (their values, and its bias's). Every worker
//! then merges the shares into the state all started the round from, in worker order
//! ([`Table::merge`]): a slot one replica changed takes its change whole, as when the shards
//! of one process share a table (Hogwild, the single-process design); a slot several changed
//! takes their changes averaged, weighted by the squared gradients each put into it. A worker
//! keeps that common state beside its table (twice the table's memory) to know its changes
//! from.

use super::{after_merge, summary, totals, ClusterConfig, ClusterError, ClusterOutcome, ClusterReport, Exchange, Next, Share};
use crate::dataset::SparseDataset;
use crate::kernel::sparse::Table;
use crate::latency::Latency;
use crate::learner::LearnError;
use crate::optim::{ftrl_z, Kind};
use crate::sparse::train::SparseError;
use crate::sparse::train::{evaluate_mapped, Replica};
use crate::sparse::{SparseConfig, SparseModel};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// What a worker shares at a merge: the slots it changed (ascending) with their values as raw
/// bits (the table's stride per slot), and its bias with the bias's optimizer state.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Changes {
    slots: Vec<u32>,
    values: Vec<u32>,
    /// Bias, Σg² (FTRL's n), FTRL's z.
    bias: [f32; 3],
}

/// Bytes of a share on the wire (its fields; the encoding adds a few).
fn share_bytes(c: &Changes) -> u64 {
    4 * (c.slots.len() + c.values.len()) as u64 + 12 + 24
}

/// The bias the shares make of `base` (bias, Σg² or FTRL's n, FTRL's z): every row steps the
/// bias, so the changes are averaged, weighted by the examples behind them; the squared
/// gradients add up, and FTRL's z is anchored to the merged bias.
fn merge_bias(base: &[f32; 3], shares: &[Share<Changes>], sc: &SparseConfig) -> [f32; 3] {
    if let [one] = shares {
        return one.payload.bias;
    }
    let examples: f64 = shares.iter().map(|s| s.examples).sum();
    let mut bias = *base;
    if examples > 0.0 {
        let change: f64 = shares.iter().map(|s| s.examples * f64::from(s.payload.bias[0] - base[0])).sum();
        bias[0] = base[0] + (change / examples) as f32;
    }
    bias[1] = base[1] + shares.iter().map(|s| s.payload.bias[1] - base[1]).sum::<f32>();
    if sc.optim.kind == Kind::Ftrl {
        bias[2] = ftrl_z(bias[0], bias[1], sc.optim.lr, sc.optim.beta, 0.0, 0.0);
    }
    bias
}

/// One worker, start to end.
pub(super) fn work(
    worker: &mut timely::worker::Worker,
    cfg: &ClusterConfig,
    sc: &SparseConfig,
    heartbeat: &AtomicU64,
    started: Instant,
) -> Result<Option<ClusterOutcome>, ClusterError> {
    let (index, peers) = (worker.index(), worker.peers());
    let ds = SparseDataset::open(&cfg.data)?;
    let train_rows = cfg.train_rows(ds.rows());
    let block_rows = ds.block_rows();
    let mut mine = (index as u64..train_rows.div_ceil(block_rows)).step_by(peers).peekable();
    let table_bytes = Table::bytes(sc.bits, sc.optim.kind);
    crate::batch::check_memory(2 * table_bytes, || format!("--bits {}: a table of 2^{} slots and its merged copy", sc.bits, sc.bits))
        .map_err(SparseError::Memory)?;
    let table = Table::new(sc.bits, sc.optim.kind);
    let mut base = table.raw();
    let mut base_bias = [0.0f32; 3];
    let mut replica = Replica::new(sc, &table, index, peers);
    let mut exchange = Exchange::<Changes>::new(worker, heartbeat, started);
    let started_work = Instant::now();
    let mut latency = Latency::default();
    let (mut rows, mut all_examples, mut error) = (0u64, 0u64, None::<LearnError>);
    let (mut merges, mut merge_time, mut sent) = (0u64, Duration::ZERO, 0u64);
    loop {
        let mut examples = 0u64;
        for _ in 0..cfg.merge_every.max(1) {
            let Some(b) = mine.next() else { break };
            let first = b * block_rows;
            let block = ds.block(b)?.head((train_rows - first) as usize);
            let t = Instant::now();
            if error.is_none() {
                error = replica.learn(&block, first).err();
            }
            latency.record(t.elapsed().as_nanos() as u64);
            rows += block.len() as u64;
            examples += block.len() as u64;
        }
        let done = mine.peek().is_none();
        let (progress, learned, rejected) = replica.tallies();
        let summary = done.then(|| summary(rows, learned, rejected, progress, &latency, error.as_ref()));
        let t = Instant::now();
        let mut changes = Changes::default();
        replica.kernel.changes(&mut changes.slots, &mut changes.values);
        let state = replica.kernel.bias_state();
        changes.bias = [replica.kernel.bias(), state.0, state.1];
        let share = Share { epoch: merges + 1, worker: index as u32, examples: examples as f64, payload: changes, done, summary };
        let shares = exchange.round(worker, share)?;
        let replicas: Vec<(&[u32], &[u32])> = shares.iter().map(|s| (&s.payload.slots[..], &s.payload.values[..])).collect();
        table.merge(&mut base, &replicas, &sc.optim);
        let bias = merge_bias(&base_bias, &shares, sc);
        base_bias = bias;
        all_examples += shares.iter().map(|s| s.examples as u64).sum::<u64>();
        replica.kernel.resume(bias[0], (bias[1], bias[2]), all_examples);
        sent += shares.iter().map(|s| share_bytes(&s.payload)).sum::<u64>();
        merges += 1;
        merge_time += t.elapsed();
        let summaries = match after_merge(index, error.take(), &shares)? {
            Next::Learn => continue,
            Next::End => return Ok(None),
            Next::Report(summaries) => summaries,
        };
        drop(replica);
        let (rows, learned, rejected, p, latency) = totals(&summaries);
        let seconds = started_work.elapsed().as_secs_f64();
        let model = SparseModel {
            loss: sc.loss,
            table,
            bias: bias[0],
            interactions: sc.interactions.clone(),
            bias_state: (bias[1], bias[2]),
            examples: all_examples,
        };
        let holdout = (train_rows < ds.rows()).then(|| evaluate_mapped(&model, sc.optim, &ds, train_rows)).transpose()?;
        let report = ClusterReport {
            workers: peers,
            rows,
            rows_learned: learned,
            rows_rejected: rejected,
            seconds,
            rows_per_sec: rows as f64 / seconds.max(1e-9),
            merges,
            // Every share went to every worker: the mean a worker sent per merge.
            merge_bytes_per_worker: sent / merges.max(1),
            table_bytes_per_worker: Some(peers as u64 * (table_bytes + 12 + 24)),
            merge_us_mean: merge_time.as_secs_f64() * 1e6 / merges.max(1) as f64,
            progressive_loss: p.mean_loss(),
            progressive_accuracy: sc.loss.is_classification().then(|| p.correct / p.weight_sum.max(f64::MIN_POSITIVE)),
            holdout,
            latency_ns: latency.percentiles(),
        };
        return Ok(Some(ClusterOutcome { report, sparse: Some(model) }));
    }
}
