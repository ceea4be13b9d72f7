//! The sharded pipeline on a `.ssgd` file, for a program (the Python package's `train_file`):
//! a dense file through [`crate::pipeline::train`] with the feature stage, a sparse one
//! through [`crate::sparse::train()`], the last `holdout` share of the rows held out, progress
//! reported while it runs. No `unsafe` here.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use streamsgd::loss::Loss;
//! use streamsgd::online::OnlineConfig;
//! use streamsgd::train_file::{train_file, FileTraining};
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("c.ssgd");
//! # let mut w = streamsgd::dataset::DatasetWriter::create(&path, 2, 1024, false)?;
//! # for i in 0..5000 { let x = [(i % 10) as f32, (i % 3) as f32]; w.push(&x, f32::from(x[0] > 4.0), 1.0)?; }
//! # w.finish()?;
//! // Logistic regression on a dense file of 2 features, 2 shards, the last 10 % held out.
//! let job = FileTraining { threads: 2, holdout: 0.1, ..FileTraining::new(OnlineConfig::dense(Loss::Logistic, 2)) };
//! let out = train_file(&path, &job, &|done, total| assert!(done <= total))?;
//! assert_eq!(out.report["rows_learned"], 4500);
//! assert!(out.report["holdout"]["accuracy"].as_f64().unwrap() > 0.95);
//! # Ok(())
//! # }
//! ```

use crate::dataset::sparse::{is_sparse_file, SparseDataset};
use crate::dataset::{Dataset, FormatError};
use crate::learner::LearnerConfig;
use crate::model::{LinearModel, ModelFile, SharedModel};
use crate::online::{Features, OnlineConfig, OnlineError};
use crate::pipeline::{self, Input, PipelineConfig, PipelineError};
use crate::sparse::file::{interactions, to_file};
use crate::sparse::{SparseConfig, SparseInput};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What to learn from a file, and how.
#[derive(Clone, Debug)]
pub struct FileTraining {
    /// The model: dense (its features must be the file's) or sparse, as the file is.
    pub model: OnlineConfig,
    /// Shards (worker threads).
    pub threads: usize,
    /// The share of the rows, at the end of the file, held out and evaluated (0 ≤ h < 1).
    pub holdout: f64,
}

impl FileTraining {
    /// One shard per core, nothing held out.
    pub fn new(model: OnlineConfig) -> Self {
        FileTraining { model, threads: std::thread::available_parallelism().map_or(1, |n| n.get()), holdout: 0.0 }
    }
}

/// Why a file could not be learned.
#[derive(Debug, thiserror::Error)]
pub enum FileTrainingError {
    /// A bad setting.
    #[error(transparent)]
    Config(#[from] OnlineError),
    /// The file is not a readable `.ssgd` file.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The dense pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The sparse run failed.
    #[error(transparent)]
    Sparse(#[from] crate::sparse::train::SparseError),
    /// The file's rows are not what the model takes.
    #[error("{path}: {what}")]
    Mismatch {
        /// The file.
        path: String,
        /// What differs.
        what: String,
    },
}

/// What a run learned and measured.
#[derive(Debug)]
pub struct FileOutcome {
    /// The run's report (what `streamsgd train --json` prints): rows, throughput, latency,
    /// progressive and holdout metrics.
    pub report: serde_json::Value,
    /// The model file (`streamsgd predict` and [`crate::predictor::Predictor`] read it).
    pub model: ModelFile,
}

/// Learns the `.ssgd` file at `path` as `job` says; `progress(rows done, rows to learn)` is
/// called from another thread about ten times a second while it runs, and once at the end.
pub fn train_file(path: &Path, job: &FileTraining, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<FileOutcome, FileTrainingError> {
    job.model.check()?;
    if !(0.0..1.0).contains(&job.holdout) || job.threads == 0 {
        let what = format!("holdout {} must be in [0, 1) and threads {} at least 1", job.holdout, job.threads);
        return Err(OnlineError::Config { field: "job", what }.into());
    }
    let name = path.display().to_string();
    let mismatch = |what: String| FileTrainingError::Mismatch { path: name.clone(), what };
    let m = &job.model;
    let train_rows = |rows: u64| rows - ((rows as f64 * job.holdout).round() as u64).min(rows);
    match (&m.features, is_sparse_file(path)) {
        (Features::Dense { features, stage }, false) => {
            let dataset = Dataset::open(path)?;
            if dataset.features() != *features {
                return Err(mismatch(format!("rows of {} features, the model takes {features}", dataset.features())));
            }
            let learner = LearnerConfig { loss: m.loss, optim: m.optim, batch: m.batch, grow: m.grow, bad_rows: m.bad_rows };
            let cfg = PipelineConfig { transform: *stage, ..PipelineConfig::new(learner, job.threads) };
            let total = train_rows(dataset.rows());
            let mut input = Input::Mapped { dataset: &dataset, train_rows: total };
            let shared = Arc::new(SharedModel::new(LinearModel::zeros(m.loss, 1)));
            let bar = indicatif::ProgressBar::hidden();
            let out = watched(total, progress, || bar.position(), || pipeline::train(&cfg, &mut input, &name, None, shared, &bar))?;
            if let Some(e) = out.source_error {
                return Err(e.into());
            }
            let report = serde_json::to_value(&out.report).expect("a report is JSON");
            Ok(FileOutcome { report, model: out.model })
        }
        (Features::Sparse(meta), true) => {
            let dataset = SparseDataset::open(path)?;
            let crosses = interactions(&meta.interactions).map_err(|what| OnlineError::Config { field: "interactions", what })?;
            let cfg = SparseConfig { bad_rows: m.bad_rows, ..SparseConfig::new(m.loss, m.optim, meta.bits, crosses, job.threads) };
            let total = train_rows(dataset.rows());
            let input: SparseInput<'_, std::io::Empty> = SparseInput::Mapped { dataset: &dataset, train_rows: total };
            let out = watched(total, progress, || 0, || crate::sparse::train(&cfg, input, None, None))?;
            let report = serde_json::to_value(&out.report).expect("a report is JSON");
            Ok(FileOutcome { report, model: to_file(&out.model.state(), m.loss, m.optim, meta) })
        }
        (Features::Dense { .. }, true) => Err(mismatch("a sparse file: the model is dense (OnlineConfig::sparse)".into())),
        (Features::Sparse(_), false) => Err(mismatch("a dense file: the model is sparse (OnlineConfig::dense)".into())),
    }
}

/// Runs `work` while another thread reports `position()` of `total` to `progress` every 100 ms;
/// reports `total` at the end when it succeeds.
fn watched<T, E>(
    total: u64,
    progress: &(dyn Fn(u64, u64) + Sync),
    position: impl Fn() -> u64 + Sync,
    work: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let done = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                progress(position().min(total), total);
                std::thread::park_timeout(Duration::from_millis(100));
            }
        });
        let out = work();
        done.store(true, Ordering::Release);
        out
    });
    if out.is_ok() {
        progress(total, total);
    }
    out
}
