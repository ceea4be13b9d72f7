//! Dense rows across workers: each shares its whole replica every merge, and all adopt the
//! replicas' average weighted by the examples each learned since the last merge (the
//! pipeline's rule, [`weighted_average`]).

use super::{after_merge, summary, totals, ClusterConfig, ClusterError, ClusterOutcome, ClusterReport, Exchange, Next, Share, Summary};
use crate::batch::Segment;
use crate::dataset::Dataset;
use crate::latency::Latency;
use crate::learner::{LearnError, Learner};
use crate::merge::weighted_average;
use crate::model::ModelFile;
use crate::pipeline::{self, Input};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// One worker, start to end.
pub(super) fn work(
    worker: &mut timely::worker::Worker,
    cfg: &ClusterConfig,
    heartbeat: &AtomicU64,
    started: Instant,
) -> Result<Option<ClusterOutcome>, ClusterError> {
    let (index, peers) = (worker.index(), worker.peers());
    let ds = Dataset::open(&cfg.data)?;
    let train_rows = cfg.train_rows(ds.rows());
    let segments = pipeline::segments(&ds, train_rows);
    let mut mine = segments.iter().skip(index).step_by(peers).peekable();
    let mut learner = Learner::new(cfg.learner, ds.features());
    let mut exchange = Exchange::<Vec<f32>>::new(worker, heartbeat, started);
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
        let summary =
            done.then(|| summary(rows, learner.rows_learned, learner.rows_rejected, learner.progress(), &latency, error.as_ref()));
        let t = Instant::now();
        let share = Share { epoch: merges + 1, worker: index as u32, examples, payload: learner.model().weights.clone(), done, summary };
        let shares = exchange.round(worker, share)?;
        weighted_average(&mut avg, shares.iter().map(|s| (s.examples, &s.payload[..])));
        learner.set_weights(&avg);
        merges += 1;
        merge_time += t.elapsed();
        match after_merge(index, error.take(), &shares)? {
            Next::Learn => {}
            Next::End => return Ok(None),
            Next::Report(summaries) => {
                let report = finish(cfg, &ds, train_rows, &learner, &summaries, peers, merges, merge_time, started_work)?;
                return Ok(Some(ClusterOutcome { report, sparse: None }));
            }
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
    let (rows, learned, rejected, p, latency) = totals(summaries);
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
        table_bytes_per_worker: None,
        merge_us_mean: merge_time.as_secs_f64() * 1e6 / merges.max(1) as f64,
        progressive_loss: p.mean_loss(),
        progressive_accuracy: cfg.learner.loss.is_classification().then(|| p.correct / p.weight_sum.max(f64::MIN_POSITIVE)),
        holdout,
        latency_ns: latency.percentiles(),
    })
}
