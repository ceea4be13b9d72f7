//! Learning from a program's own rows: [`OnlineModel`] owns a learner with its feature stage
//! (dense rows) or its hashing (sparse rows), learns what the program gives it — dense rows,
//! columnar blocks, sparse rows, named features — and predicts exactly as it learned. Its
//! model file is the one `streamsgd train` writes: `streamsgd predict` and
//! [`Predictor`] read it, and [`OnlineModel::load`] continues it. Serving threads take
//! frozen [`OnlineModel::snapshot`]s. No `unsafe` here.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use streamsgd::loss::Loss;
//! use streamsgd::online::{OnlineConfig, OnlineModel};
//!
//! // Logistic regression on 2 features, standardised online (the CLI's defaults).
//! let mut model = OnlineModel::new(OnlineConfig::dense(Loss::Logistic, 2))?;
//! for i in 0..2000 {
//!     let x = [(i % 7) as f32, (i % 5) as f32 * 10.0];
//!     let y = if x[0] > 3.0 { 1.0 } else { 0.0 };
//!     model.learn(&x, y)?;
//! }
//! assert!(model.predict(&[6.0, 20.0])? > 0.9); // a probability
//! assert!(model.predict(&[0.0, 20.0])? < 0.1);
//! assert!(model.learn(&[1.0], 1.0).is_err()); // a row of the wrong length
//! # Ok(())
//! # }
//! ```

use crate::batch::BATCH_ROWS;
use crate::kernel::sparse::{KernelBuffers, SparseKernel, Table, MAX_BITS};
use crate::kernel::Columns;
use crate::learner::{BadRows, LearnError, Learner, LearnerConfig};
use crate::loss::Loss;
use crate::metrics::Progressive;
use crate::model::{ModelError, ModelFile};
use crate::optim::{Kind, OptimConfig};
use crate::pipeline::{saved_transform, PipelineError};
use crate::predictor::{dense_outputs, Predictor, PredictorError};
use crate::shard::{learn_staged, Scratch};
use crate::source::hash::Seeded;
use crate::sparse::file::{interactions, SparseFileError, SparseMeta};
use crate::sparse::parse::{push_keyed, push_named, KeyedError, NameKey, Named, NamedError, DEFAULT_NS};
use crate::sparse::{RowsRef, SparseModel, SparseRows};
use crate::transform::{Missing, Scaling, Transform, TransformConfig, TransformCounts};
use std::path::Path;

/// How rows reach the weights.
#[derive(Clone, Debug, PartialEq)]
pub enum Features {
    /// Dense rows of `features` values, through the feature stage `stage`.
    Dense {
        /// Values per row.
        features: usize,
        /// Imputation, indicators, scaling and clipping (frozen in predictions as learned).
        stage: TransformConfig,
    },
    /// Sparse rows hashed into a table of 2^bits weights, as `meta` says (its bits, hash seed,
    /// namespace crosses and missing-value policy).
    Sparse(SparseMeta),
}

/// An [`OnlineModel`]'s settings, checked by [`OnlineModel::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct OnlineConfig {
    /// The loss (what the outputs mean).
    pub loss: Loss,
    /// The optimizer.
    pub optim: OptimConfig,
    /// Dense or sparse rows.
    pub features: Features,
    /// Dense rows: the mini-batch size of [`OnlineModel::learn_batch`] (1: one step per row);
    /// with `grow`, the largest. Sparse rows are learned one at a time.
    pub batch: usize,
    /// Dense rows: start online and grow the mini-batch as the model learns.
    pub grow: bool,
    /// What a row that cannot be learned (a NaN value, a label out of range) does.
    pub bad_rows: BadRows,
}

impl OnlineConfig {
    /// `streamsgd train`'s defaults for dense rows of `features` values: AdaGrad at 0.1 on
    /// online-standardised features, mini-batches growing to 256 rows, a bad row an error.
    pub fn dense(loss: Loss, features: usize) -> Self {
        let stage = TransformConfig { scaling: Scaling::Standard, ..TransformConfig::default() };
        let learner = LearnerConfig::new(loss, OptimConfig::new(Kind::Adagrad));
        OnlineConfig {
            loss,
            optim: learner.optim,
            features: Features::Dense { features, stage },
            batch: learner.batch,
            grow: learner.grow,
            bad_rows: learner.bad_rows,
        }
    }

    /// `streamsgd train`'s defaults for sparse rows hashed into 2^`bits` weights: the
    /// normalized update at 0.3, hash seed 0, no crosses, NaN values an error.
    pub fn sparse(loss: Loss, bits: u32) -> Self {
        let meta = SparseMeta {
            bits,
            hash_seed: 0,
            interactions: Vec::new(),
            categorical: Vec::new(),
            label: None,
            missing: Missing::Reject,
            timestamp: None,
        };
        OnlineConfig {
            loss,
            optim: OptimConfig { lr: 0.3, ..OptimConfig::new(Kind::Normalized) },
            features: Features::Sparse(meta),
            batch: 1,
            grow: false,
            bad_rows: BadRows::Error,
        }
    }

    /// Checks every value; the error names the one at fault.
    pub fn check(&self) -> Result<(), OnlineError> {
        let bad = |field: &'static str, what: String| Err(OnlineError::Config { field, what });
        match self.loss {
            Loss::Huber { delta } if !(delta.is_finite() && delta > 0.0) => return bad("loss", format!("huber delta {delta} must be > 0")),
            Loss::EpsilonInsensitive { epsilon } if !(epsilon.is_finite() && epsilon >= 0.0) => {
                return bad("loss", format!("epsilon {epsilon} must be ≥ 0"))
            }
            Loss::Quantile { tau } if !(tau > 0.0 && tau < 1.0) => return bad("loss", format!("quantile {tau} must be in (0, 1)")),
            _ => {}
        }
        if let Err(e) = self.optim.check() {
            return bad("optim", e);
        }
        if self.batch == 0 {
            return bad("batch", "the mini-batch must be at least 1 row".into());
        }
        match &self.features {
            Features::Dense { features, stage } => {
                if *features == 0 {
                    return bad("features", "a dense row needs at least 1 feature".into());
                }
                if let Some(k) = stage.clip {
                    if !(k.is_finite() && k > 0.0) || stage.scaling != Scaling::Standard {
                        return bad("stage", format!("clip {k} must be > 0, with standard scaling"));
                    }
                }
            }
            Features::Sparse(meta) => {
                if !(1..=MAX_BITS).contains(&meta.bits) {
                    return bad("bits", format!("{} is not in 1..={MAX_BITS}", meta.bits));
                }
                if let Err(e) = interactions(&meta.interactions) {
                    return bad("interactions", e);
                }
                if meta.missing == Missing::Mean {
                    return bad("missing", "mean imputation needs dense rows (sparse: zero or drop)".into());
                }
            }
        }
        Ok(())
    }
}

/// Why a model could not be made, learn, predict or be saved.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// A setting out of range.
    #[error("{field}: {what}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        what: String,
    },
    /// A row that cannot be learned, or a model that diverged.
    #[error(transparent)]
    Learn(#[from] LearnError),
    /// Rows that do not fit the model (their length, their kind).
    #[error(transparent)]
    Rows(#[from] PredictorError),
    /// Labels or weights that do not pair with the rows.
    #[error("{got} {what} for {rows} rows")]
    Targets {
        /// `labels` or `weights`.
        what: &'static str,
        /// How many were given.
        got: usize,
        /// Rows given.
        rows: usize,
    },
    /// A named feature that cannot be learned.
    #[error(transparent)]
    Named(#[from] NamedError),
    /// A named feature that cannot be learned, by its position in the row.
    #[error(transparent)]
    Keyed(#[from] KeyedError),
    /// The model file could not be read or written.
    #[error(transparent)]
    File(#[from] ModelError),
    /// The file's feature stage could not be read.
    #[error(transparent)]
    Stage(#[from] PipelineError),
    /// The file's sparse section could not be read.
    #[error(transparent)]
    Sparse(#[from] SparseFileError),
}

/// A model that learns rows as a program hands them over (see the [module](self) docs).
pub struct OnlineModel {
    cfg: OnlineConfig,
    state: State,
}

enum State {
    Dense(Box<DenseState>),
    Sparse(Box<SparseState>),
}

/// The dense learner and its feature stage, as one of the pipeline's shards holds them.
struct DenseState {
    learner: Learner,
    transform: Transform,
    scratch: Scratch,
    counts: TransformCounts,
    /// A row-major chunk turned column-major.
    cols: Vec<f32>,
}

/// The sparse table, bias and crosses, with what learning them has counted.
struct SparseState {
    model: SparseModel,
    meta: SparseMeta,
    rows: SparseRows,
    /// The kernel's row buffers, kept between calls.
    bufs: KernelBuffers,
    progress: Progressive,
    learned: u64,
    rejected: u64,
    dropped: u64,
}

/// What an [`OnlineModel`] has learned so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OnlineStats {
    /// Rows learned.
    pub rows_learned: u64,
    /// Rows rejected (with [`BadRows::Skip`]).
    pub rows_rejected: u64,
    /// Rows dropped for a missing value (`Missing::Drop`).
    pub rows_dropped: u64,
    /// Progressive validation: each row's loss before it was learned.
    pub progress: Progressive,
}

impl OnlineModel {
    /// A fresh (zero) model, its settings checked.
    pub fn new(cfg: OnlineConfig) -> Result<Self, OnlineError> {
        cfg.check()?;
        let state = match &cfg.features {
            Features::Dense { features, stage } => {
                let transform = Transform::new(*stage, *features);
                let learner = Learner::new(Self::learner_config(&cfg), transform.output_features());
                State::Dense(Box::new(DenseState::new(learner, transform)))
            }
            Features::Sparse(meta) => {
                let model = SparseModel {
                    loss: cfg.loss,
                    table: Table::new(meta.bits, cfg.optim.kind),
                    bias: 0.0,
                    interactions: interactions(&meta.interactions).map_err(|what| OnlineError::Config { field: "interactions", what })?,
                    bias_state: (0.0, 0.0),
                    examples: 0,
                };
                State::Sparse(Box::new(SparseState::new(model, meta.clone())))
            }
        };
        Ok(OnlineModel { cfg, state })
    }

    /// Continues the model file at `path` (written by `streamsgd train` or
    /// [`OnlineModel::save`]): its weights, optimizer state and feature stage.
    pub fn load(path: &Path) -> Result<Self, OnlineError> {
        Self::from_file(ModelFile::load(path)?)
    }

    /// Continues a model file already read. Its settings are the file's; the dense
    /// mini-batch is the default (growing to 256 rows), a bad row an error.
    pub fn from_file(file: ModelFile) -> Result<Self, OnlineError> {
        let (loss, optim) = (file.model.loss, file.optimizer.cfg);
        if let Some(meta) = SparseMeta::of(&file)? {
            let model = crate::sparse::file::from_file(&file, &meta)?;
            let cfg = OnlineConfig { loss, optim, ..OnlineConfig::sparse(loss, meta.bits) };
            let cfg = OnlineConfig { features: Features::Sparse(meta.clone()), ..cfg };
            return Ok(OnlineModel { cfg, state: State::Sparse(Box::new(SparseState::new(model, meta))) });
        }
        let d_model = file.model.features();
        let mut transform = saved_transform(&file.extra)?.unwrap_or_else(|| Transform::new(TransformConfig::default(), d_model));
        transform.frozen = false;
        if transform.output_features() != d_model {
            return Err(OnlineError::Config {
                field: "features",
                what: format!("the file's feature stage gives {} features to a model of {d_model}", transform.output_features()),
            });
        }
        let features = Features::Dense { features: transform.d, stage: transform.cfg };
        let cfg = OnlineConfig { optim, features, ..OnlineConfig::dense(loss, transform.d) };
        let mut learner = Learner::resume(Self::learner_config(&cfg), file.model, file.optimizer);
        learner.set_scaled(transform.cfg.scaling != Scaling::None);
        Ok(OnlineModel { cfg, state: State::Dense(Box::new(DenseState::new(learner, transform))) })
    }

    fn learner_config(cfg: &OnlineConfig) -> LearnerConfig {
        LearnerConfig { loss: cfg.loss, optim: cfg.optim, batch: cfg.batch, grow: cfg.grow, bad_rows: cfg.bad_rows }
    }

    /// Changes how rows are learned from now on: the dense mini-batch (`grow`: growing to
    /// `batch`) and what a bad row does. The dense progressive sums restart.
    pub fn set_learning(&mut self, batch: usize, grow: bool, bad_rows: BadRows) -> Result<(), OnlineError> {
        let cfg = OnlineConfig { batch, grow, bad_rows, ..self.cfg.clone() };
        cfg.check()?;
        if let State::Dense(s) = &mut self.state {
            let old = &s.learner;
            let mut learner = Learner::resume(Self::learner_config(&cfg), old.model().clone(), old.optimizer().clone());
            learner.set_scaled(s.transform.cfg.scaling != Scaling::None);
            (learner.rows_learned, learner.rows_rejected) = (old.rows_learned, old.rows_rejected);
            s.learner = learner;
        }
        self.cfg = cfg;
        Ok(())
    }

    /// Its settings.
    pub fn config(&self) -> &OnlineConfig {
        &self.cfg
    }

    /// Values per dense row (`None` for a sparse model).
    pub fn features(&self) -> Option<usize> {
        match &self.state {
            State::Dense(s) => Some(s.transform.d),
            State::Sparse(_) => None,
        }
    }

    /// Rows learned, rejected and dropped, and the progressive loss.
    pub fn stats(&mut self) -> OnlineStats {
        match &mut self.state {
            State::Dense(s) => OnlineStats {
                rows_learned: s.learner.rows_learned,
                rows_rejected: s.learner.rows_rejected,
                rows_dropped: s.counts.dropped_missing,
                progress: s.learner.progress(),
            },
            State::Sparse(s) => {
                OnlineStats { rows_learned: s.learned, rows_rejected: s.rejected, rows_dropped: s.dropped, progress: s.progress }
            }
        }
    }

    /// Learns one dense row `x` with label `y` (classification: 0/1 or ±1): an online step.
    pub fn learn(&mut self, x: &[f32], y: f32) -> Result<(), OnlineError> {
        self.learn_batch(x, &[y], None)
    }

    /// Learns dense rows, row-major (`rows.len()` = labels × features), with their labels and
    /// optional importance weights, in mini-batches of the configured size.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use streamsgd::loss::Loss;
    /// use streamsgd::online::{OnlineConfig, OnlineModel};
    ///
    /// // y = 3x − 1 from rows of one feature, learned by the squared loss.
    /// let mut model = OnlineModel::new(OnlineConfig::dense(Loss::Squared, 1))?;
    /// let xs: Vec<f32> = (0..4096).map(|i| (i % 64) as f32 / 32.0 - 1.0).collect();
    /// let ys: Vec<f32> = xs.iter().map(|x| 3.0 * x - 1.0).collect();
    /// for _ in 0..20 {
    ///     model.learn_batch(&xs, &ys, None)?;
    /// }
    /// assert!((model.predict(&[0.5])? - 0.5).abs() < 0.05);
    /// assert!(model.learn_batch(&xs, &ys[..10], None).is_err()); // labels do not pair with rows
    /// # Ok(())
    /// # }
    /// ```
    pub fn learn_batch(&mut self, rows: &[f32], labels: &[f32], weights: Option<&[f32]>) -> Result<(), OnlineError> {
        let s = self.dense_mut()?;
        let (d, n) = (s.transform.d, labels.len());
        if rows.len() % d != 0 {
            return Err(PredictorError::Batch { len: rows.len(), features: d }.into());
        }
        if rows.len() / d != n {
            return Err(OnlineError::Targets { what: "labels", got: n, rows: rows.len() / d });
        }
        check_targets(n, weights)?;
        for c in (0..n).step_by(BATCH_ROWS) {
            let m = (n - c).min(BATCH_ROWS);
            // Columns a cache line apart from a multiple of 4 KiB: at a stride of 1024 rows,
            // every column's row r would share one cache set (a transpose 7× slower).
            let stride = m.next_multiple_of(16) + 16;
            s.cols.resize(d * stride, 0.0);
            crate::kernel::transpose(&rows[c * d..(c + m) * d], d, &mut s.cols, stride);
            let cols = std::mem::take(&mut s.cols);
            let res = s.learn(&Columns::new(&cols, stride, d, 0, m), (&labels[c..c + m], weights.map(|w| &w[c..c + m])));
            s.cols = cols;
            res?;
        }
        Ok(())
    }

    /// [`OnlineModel::learn_batch`] as one transaction: when a row cannot be learned, the
    /// error comes back with the model as it was before the call — what scikit-learn's
    /// `partial_fit` promises by checking the whole batch first, without that extra read of
    /// it. Costs a copy of the model's state (O(features)) per call.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use streamsgd::loss::Loss;
    /// use streamsgd::online::{OnlineConfig, OnlineModel};
    ///
    /// let mut model = OnlineModel::new(OnlineConfig::dense(Loss::Squared, 1))?;
    /// model.learn_batch(&[1.0, 2.0], &[1.0, 2.0], None)?;
    /// let before = model.predict(&[3.0])?;
    /// assert!(model.learn_batch_atomic(&[1.0, f32::NAN], &[1.0, 2.0], None).is_err());
    /// assert_eq!(model.predict(&[3.0])?, before);
    /// # Ok(())
    /// # }
    /// ```
    pub fn learn_batch_atomic(&mut self, rows: &[f32], labels: &[f32], weights: Option<&[f32]>) -> Result<(), OnlineError> {
        let s = self.dense_mut()?;
        let before = (s.learner.clone(), s.transform.clone(), s.counts);
        let res = self.learn_batch(rows, labels, weights);
        if res.is_err() {
            let s = self.dense_mut()?;
            (s.learner, s.transform, s.counts) = before;
        }
        res
    }

    /// Learns a columnar block of dense rows: column `j` at `data[j·stride..]`, one row per
    /// label (a `.ssgd` block, an Arrow batch's columns).
    pub fn learn_columns(&mut self, data: &[f32], stride: usize, labels: &[f32], weights: Option<&[f32]>) -> Result<(), OnlineError> {
        let s = self.dense_mut()?;
        let (d, n) = (s.transform.d, labels.len());
        if stride < n || data.len() < (d - 1) * stride + n {
            return Err(PredictorError::Batch { len: data.len(), features: d }.into());
        }
        check_targets(n, weights)?;
        for c in (0..n).step_by(BATCH_ROWS) {
            let m = (n - c).min(BATCH_ROWS);
            s.learn(&Columns::new(data, stride, d, c, m), (labels, weights))?;
        }
        Ok(())
    }

    /// Learns sparse rows (hashed ids, as a `.ssgd` file or [`crate::sparse::SparseParser`]
    /// holds them), one at a time, each predicted before it is learned.
    pub fn learn_rows(&mut self, rows: &RowsRef<'_>) -> Result<(), OnlineError> {
        let (loss, optim, bad_rows) = (self.cfg.loss, self.cfg.optim, self.cfg.bad_rows);
        let State::Sparse(s) = &mut self.state else {
            return Err(PredictorError::Kind("a dense model learns dense rows (learn, learn_batch, learn_columns)").into());
        };
        s.learn(rows, loss, optim, bad_rows)
    }

    /// Learns one row of named features with label `y`, hashed as a CSV's columns are (see
    /// [`push_named`]): what River's `learn_one(dict, y)` does, for a sparse model.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use streamsgd::loss::Loss;
    /// use streamsgd::online::{OnlineConfig, OnlineModel};
    /// use streamsgd::sparse::parse::Named;
    ///
    /// let mut model = OnlineModel::new(OnlineConfig::sparse(Loss::Logistic, 16))?;
    /// for i in 0..3000 {
    ///     let city = ["paris", "oslo", "rome"][i % 3];
    ///     model.learn_named([("city", Named::Category(city)), ("hour", Named::Number((i % 24) as f32))], (city == "oslo") as u8 as f32)?;
    /// }
    /// assert!(model.predict_named([("city", Named::Category("oslo")), ("hour", Named::Number(3.0))])? > 0.8);
    /// assert!(model.predict_named([("city", Named::Category("rome")), ("hour", Named::Number(3.0))])? < 0.2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn learn_named<'a>(&mut self, features: impl IntoIterator<Item = (&'a str, Named<'a>)>, y: f32) -> Result<(), OnlineError> {
        self.learn_pushed(|rows, seed, missing| Ok(push_named(rows, seed, missing, features, y)?))
    }

    /// The key of feature `name` under this sparse model's hash seed: a program that keeps
    /// the keys of the names it sees learns and predicts rows of named features without
    /// hashing the names again ([`OnlineModel::learn_keyed`], [`OnlineModel::predict_keyed`]).
    pub fn name_key(&self, name: &str) -> Result<NameKey, OnlineError> {
        Ok(NameKey::new(Seeded::new(self.sparse()?.meta.hash_seed), name))
    }

    /// [`OnlineModel::learn_named`] with the names' keys ([`OnlineModel::name_key`]); an error
    /// names a feature by its position.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use streamsgd::loss::Loss;
    /// use streamsgd::online::{OnlineConfig, OnlineModel};
    /// use streamsgd::sparse::parse::Named;
    ///
    /// let mut model = OnlineModel::new(OnlineConfig::sparse(Loss::Logistic, 12))?;
    /// let (city, hour) = (model.name_key("city")?, model.name_key("hour")?);
    /// for i in 0..3000 {
    ///     let c = ["paris", "oslo", "rome"][i % 3];
    ///     model.learn_keyed([(city, Named::Category(c)), (hour, Named::Number((i % 24) as f32))], (c == "oslo") as u8 as f32)?;
    /// }
    /// let oslo = [(city, Named::Category("oslo")), (hour, Named::Number(3.0))];
    /// assert!(model.predict_keyed(oslo)? > 0.8);
    /// // The same as by name.
    /// assert_eq!(model.predict_keyed(oslo)?, model.predict_named([("city", Named::Category("oslo")), ("hour", Named::Number(3.0))])?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn learn_keyed<'a>(&mut self, features: impl IntoIterator<Item = (NameKey, Named<'a>)>, y: f32) -> Result<(), OnlineError> {
        self.learn_pushed(|rows, _, missing| Ok(push_keyed(rows, missing, features, y)?))
    }

    /// Learns the row `push` appends (given the hash seed and missing-value policy); a row it
    /// drops is counted.
    fn learn_pushed(&mut self, push: impl FnOnce(&mut SparseRows, u64, Missing) -> Result<bool, OnlineError>) -> Result<(), OnlineError> {
        let (loss, optim, bad_rows) = (self.cfg.loss, self.cfg.optim, self.cfg.bad_rows);
        let State::Sparse(s) = &mut self.state else {
            return Err(PredictorError::Kind("a dense model learns dense rows (learn, learn_batch, learn_columns)").into());
        };
        let mut rows = std::mem::take(&mut s.rows);
        rows.clear();
        let res = match push(&mut rows, s.meta.hash_seed, s.meta.missing) {
            Ok(true) => s.learn(&rows.as_ref(), loss, optim, bad_rows),
            Ok(false) => {
                s.dropped += 1;
                Ok(())
            }
            Err(e) => Err(e),
        };
        s.rows = rows;
        res
    }

    /// The output for dense row `x` (a probability for the logistic loss, a score or a value
    /// otherwise) through the feature stage as it is now; NaN for a row it drops.
    pub fn predict(&self, x: &[f32]) -> Result<f32, OnlineError> {
        self.dense_output(x, false)
    }

    /// The output (or, `raw`, the margin) of one dense row.
    fn dense_output(&self, x: &[f32], raw: bool) -> Result<f32, OnlineError> {
        let d = self.features().unwrap_or(0);
        if x.len() != d {
            return Err(PredictorError::Features { got: x.len(), want: d }.into());
        }
        let mut out = Vec::with_capacity(1);
        self.dense_outputs(x, &mut out, raw)?;
        Ok(out[0])
    }

    /// The outputs for dense rows, row-major, appended to `out`.
    pub fn predict_batch(&self, rows: &[f32], out: &mut Vec<f32>) -> Result<(), OnlineError> {
        self.dense_outputs(rows, out, false)
    }

    /// The margins (w·x + b, before the loss's link: log-odds for the logistic loss) of dense
    /// rows, row-major, appended to `out`: scikit-learn's `decision_function`.
    pub fn decision_batch(&self, rows: &[f32], out: &mut Vec<f32>) -> Result<(), OnlineError> {
        self.dense_outputs(rows, out, true)
    }

    fn dense_outputs(&self, rows: &[f32], out: &mut Vec<f32>, raw: bool) -> Result<(), OnlineError> {
        let State::Dense(s) = &self.state else {
            return Err(PredictorError::Kind("a sparse model predicts sparse rows (predict_rows, predict_csr, predict_named)").into());
        };
        let stage = (!s.transform.cfg.is_identity()).then_some(&s.transform);
        Ok(dense_outputs(s.learner.model(), stage, rows, out, raw)?)
    }

    /// The outputs for sparse rows, appended to `out`.
    pub fn predict_rows(&self, rows: &RowsRef<'_>, out: &mut Vec<f32>) -> Result<(), OnlineError> {
        let s = self.sparse()?;
        crate::predictor::sparse_outputs(&s.model, self.cfg.optim, rows, out, false);
        Ok(())
    }

    /// Learns CSR rows (see [`Csr`]) with their labels and optional weights.
    pub fn learn_csr(&mut self, x: &Csr<'_>, labels: &[f32], weights: Option<&[f32]>) -> Result<(), OnlineError> {
        let n = x.check()?;
        if labels.len() != n {
            return Err(OnlineError::Targets { what: "labels", got: labels.len(), rows: n });
        }
        check_targets(n, weights)?;
        let (loss, optim, bad_rows) = (self.cfg.loss, self.cfg.optim, self.cfg.bad_rows);
        let State::Sparse(s) = &mut self.state else {
            return Err(PredictorError::Kind("a dense model learns dense rows (learn, learn_batch, learn_columns)").into());
        };
        let mut rows = std::mem::take(&mut s.rows);
        let mut res = Ok(());
        for c in (0..n).step_by(BATCH_ROWS) {
            rows.clear();
            for r in c..(c + BATCH_ROWS).min(n) {
                match x.push_row(r, &mut rows, s.meta.missing, labels[r], weights.map_or(1.0, |w| w[r])) {
                    Ok(true) => {}
                    Ok(false) => s.dropped += 1,
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            // The rows before a bad one are learned, as a stream's would be (an error of theirs
            // came first).
            if let Err(e) = s.learn(&rows.as_ref(), loss, optim, bad_rows) {
                res = Err(e);
            }
            if res.is_err() {
                break;
            }
        }
        s.rows = rows;
        res
    }

    /// The outputs for CSR rows, appended to `out` (NaN for a row the missing-value policy
    /// drops).
    pub fn predict_csr(&self, x: &Csr<'_>, out: &mut Vec<f32>) -> Result<(), OnlineError> {
        self.csr_outputs(x, out, false)
    }

    /// The margins of CSR rows, appended to `out` (see [`OnlineModel::decision_batch`]).
    pub fn decision_csr(&self, x: &Csr<'_>, out: &mut Vec<f32>) -> Result<(), OnlineError> {
        self.csr_outputs(x, out, true)
    }

    fn csr_outputs(&self, x: &Csr<'_>, out: &mut Vec<f32>, raw: bool) -> Result<(), OnlineError> {
        let n = x.check()?;
        let s = self.sparse()?;
        // The rows kept, predicted with one kernel; a dropped row's place holds NaN.
        let mut rows = SparseRows::new();
        let mut kept = Vec::with_capacity(n);
        for r in 0..n {
            kept.push(x.push_row(r, &mut rows, s.meta.missing, f32::NAN, 1.0)?);
        }
        let mut got = Vec::with_capacity(rows.len());
        crate::predictor::sparse_outputs(&s.model, self.cfg.optim, &rows.as_ref(), &mut got, raw);
        let mut got = got.into_iter();
        out.extend(kept.iter().map(|&k| if k { got.next().unwrap_or(f32::NAN) } else { f32::NAN }));
        Ok(())
    }

    fn sparse(&self) -> Result<&SparseState, OnlineError> {
        match &self.state {
            State::Sparse(s) => Ok(s),
            State::Dense(_) => Err(PredictorError::Kind("a dense model predicts dense rows (predict, predict_batch)").into()),
        }
    }

    /// The output for one row of named features (see [`OnlineModel::learn_named`]); NaN for a
    /// row its missing-value policy drops.
    pub fn predict_named<'a>(&self, features: impl IntoIterator<Item = (&'a str, Named<'a>)>) -> Result<f32, OnlineError> {
        let s = self.sparse()?;
        Ok(crate::predictor::pushed_output(&s.model, self.cfg.optim, |rows| {
            push_named(rows, s.meta.hash_seed, s.meta.missing, features, f32::NAN)
        })?)
    }

    /// The output for one row of named features by their keys (see
    /// [`OnlineModel::learn_keyed`]).
    pub fn predict_keyed<'a>(&self, features: impl IntoIterator<Item = (NameKey, Named<'a>)>) -> Result<f32, OnlineError> {
        let s = self.sparse()?;
        Ok(crate::predictor::pushed_output(&s.model, self.cfg.optim, |rows| push_keyed(rows, s.meta.missing, features, f32::NAN))?)
    }

    /// A dense model as weights on raw values, `(w, b)`: a row `x` of finite values inside
    /// the clip bounds has the margin `w·x + b` (the feature stage's centring and scaling
    /// folded in; missing-value indicators, 0 for such a row, left out): scikit-learn's
    /// `coef_` and `intercept_`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use streamsgd::loss::Loss;
    /// use streamsgd::online::{OnlineConfig, OnlineModel};
    ///
    /// // Standardised online, then folded back: y ≈ 3x − 1 in the row's own units.
    /// let mut model = OnlineModel::new(OnlineConfig::dense(Loss::Squared, 1))?;
    /// let xs: Vec<f32> = (0..4096).map(|i| (i % 64) as f32 * 10.0).collect();
    /// let ys: Vec<f32> = xs.iter().map(|x| 3.0 * x - 1.0).collect();
    /// for _ in 0..20 {
    ///     model.learn_batch(&xs, &ys, None)?;
    /// }
    /// let (w, b) = model.coefficients()?;
    /// assert!((w[0] * 200.0 + b - model.decision(&[200.0])?).abs() < 1e-2);
    /// assert!((w[0] - 3.0).abs() < 0.05);
    /// # Ok(())
    /// # }
    /// ```
    pub fn coefficients(&self) -> Result<(Vec<f32>, f32), OnlineError> {
        let State::Dense(s) = &self.state else {
            return Err(PredictorError::Kind("a sparse model's weights are by feature id (feature_weights)").into());
        };
        let (t, w) = (&s.transform, &s.learner.model().weights);
        let bias = w[w.len() - 1];
        let mut intercept = f64::from(bias);
        let coef = (0..t.d)
            .map(|j| {
                let m = t.column_map(j);
                let c = w[j] * m.b;
                intercept -= f64::from(c) * f64::from(m.a);
                c
            })
            .collect();
        Ok((coef, intercept as f32))
    }

    /// A sparse model's weights for feature ids `0..ids` (a CSR column's, a LibSVM index's:
    /// id `i` is slot `i` of the table, so ids past its size share slots), and its bias.
    pub fn feature_weights(&self, ids: u32) -> Result<(Vec<f32>, f32), OnlineError> {
        let s = self.sparse()?;
        let t = &s.model.table;
        Ok(((0..ids).map(|i| t.weight(t.slot(i))).collect(), s.model.bias))
    }

    /// The margin (w·x + b) of dense row `x` through the feature stage.
    pub fn decision(&self, x: &[f32]) -> Result<f32, OnlineError> {
        self.dense_output(x, true)
    }

    /// The model file of what it has learned (weights, optimizer state, feature stage or
    /// hashing): what `streamsgd train` would save.
    pub fn to_file(&self) -> ModelFile {
        match &self.state {
            State::Dense(s) => {
                let extra = serde_json::json!({ "transform": &s.transform }).to_string();
                s.learner.to_file(extra)
            }
            State::Sparse(s) => crate::sparse::file::to_file(&s.model.state(), self.cfg.loss, self.cfg.optim, &s.meta),
        }
    }

    /// Saves it to `path` (atomically: a reader never sees half a file).
    pub fn save(&self, path: &Path) -> Result<(), OnlineError> {
        Ok(self.to_file().save(path)?)
    }

    /// A frozen copy to predict from while this one learns on: share it between serving
    /// threads (in an `Arc`, or an `arc_swap::ArcSwap` that the learner swaps).
    pub fn snapshot(&self) -> Predictor {
        Predictor::from_file(self.to_file()).expect("a model's own file image reads back")
    }

    fn dense_mut(&mut self) -> Result<&mut DenseState, OnlineError> {
        match &mut self.state {
            State::Dense(s) => Ok(s),
            State::Sparse(_) => Err(PredictorError::Kind("a sparse model learns sparse rows (learn_rows, learn_named)").into()),
        }
    }
}

/// Sparse rows in compressed sparse row form (scipy.sparse's CSR layout): row `r`'s features
/// are `indices[indptr[r]..indptr[r+1]]` with `values` alike. An index is a feature id, as a
/// LibSVM line's is (column j of a matrix: slot j of a table of at least j + 1 slots).
#[derive(Clone, Copy, Debug)]
pub struct Csr<'a> {
    /// Row offsets: one more than the rows, non-decreasing, from 0.
    pub indptr: &'a [u64],
    /// Feature ids.
    pub indices: &'a [u32],
    /// Values (NaN: missing, as the model's policy says).
    pub values: &'a [f32],
}

impl Csr<'_> {
    /// The rows, once the offsets are checked.
    fn check(&self) -> Result<usize, OnlineError> {
        let bad = |what: String| Err(OnlineError::Config { field: "csr", what });
        if self.indices.len() != self.values.len() {
            return bad(format!("{} indices for {} values", self.indices.len(), self.values.len()));
        }
        let Some((&last, _)) = self.indptr.split_last() else {
            return bad("indptr is empty (it has one more entry than the rows)".into());
        };
        if self.indptr[0] != 0 || last != self.indices.len() as u64 {
            return bad(format!("indptr runs from {} to {last}, not from 0 to the {} values", self.indptr[0], self.indices.len()));
        }
        if let Some(r) = self.indptr.windows(2).position(|w| w[1] < w[0]) {
            return bad(format!("indptr decreases at row {r}"));
        }
        Ok(self.indptr.len() - 1)
    }

    /// Appends row `r` (checked offsets) to `out` with its label and weight; false when
    /// `missing` drops it.
    fn push_row(&self, r: usize, out: &mut SparseRows, missing: Missing, y: f32, w: f32) -> Result<bool, OnlineError> {
        let span = self.indptr[r] as usize..self.indptr[r + 1] as usize;
        for (&id, &x) in self.indices[span.clone()].iter().zip(&self.values[span]) {
            if x.is_nan() {
                match missing {
                    Missing::Zero => continue,
                    Missing::Drop => {
                        out.abandon_row();
                        return Ok(false);
                    }
                    Missing::Reject | Missing::Mean => {
                        out.abandon_row();
                        let what = format!("row {r}, index {id}: the value is NaN (missing = zero leaves it out, drop drops the row)");
                        return Err(OnlineError::Config { field: "csr", what });
                    }
                }
            }
            if x.is_infinite() {
                out.abandon_row();
                return Err(OnlineError::Config { field: "csr", what: format!("row {r}, index {id}: the value is infinite") });
            }
            if x != 0.0 {
                out.push_feature(id, x, DEFAULT_NS);
            }
        }
        out.end_row(y, w);
        Ok(true)
    }
}

/// Checks that `weights`, when given, pair with `n` rows.
fn check_targets(n: usize, weights: Option<&[f32]>) -> Result<(), OnlineError> {
    match weights {
        Some(w) if w.len() != n => Err(OnlineError::Targets { what: "weights", got: w.len(), rows: n }),
        _ => Ok(()),
    }
}

impl DenseState {
    fn new(learner: Learner, transform: Transform) -> Self {
        DenseState { learner, transform, scratch: Scratch::default(), counts: TransformCounts::default(), cols: Vec::new() }
    }

    /// At most [`BATCH_ROWS`] rows, as a shard learns them.
    fn learn(&mut self, cols: &Columns<'_>, targets: (&[f32], Option<&[f32]>)) -> Result<(), OnlineError> {
        Ok(learn_staged(&mut self.learner, &mut self.transform, cols, targets, &mut self.scratch, &mut self.counts)?)
    }
}

impl SparseState {
    fn new(model: SparseModel, meta: SparseMeta) -> Self {
        SparseState {
            model,
            meta,
            rows: SparseRows::new(),
            bufs: KernelBuffers::default(),
            progress: Progressive::default(),
            learned: 0,
            rejected: 0,
            dropped: 0,
        }
    }

    /// Predicts then learns each row, as a sparse shard does (the next row's slots fetched
    /// while one is learned); the bias and clock are kept whatever happens.
    fn learn(&mut self, rows: &RowsRef<'_>, loss: Loss, optim: OptimConfig, bad_rows: BadRows) -> Result<(), OnlineError> {
        let m = &mut self.model;
        let mut k = SparseKernel::new(&m.table, loss, optim, &m.interactions, 1);
        k.reuse(std::mem::take(&mut self.bufs));
        k.resume(m.bias, m.bias_state, m.examples);
        let mut res = Ok(());
        for r in 0..rows.len() {
            let row = self.learned + self.rejected;
            let (y, w) = match loss.label(rows.labels[r]) {
                Ok(y) => (y, rows.weight(r)),
                Err(_) if bad_rows == BadRows::Skip => {
                    self.rejected += 1;
                    k.skip_ahead();
                    continue;
                }
                Err(e) => {
                    res = Err(LearnError::BadRow { row, what: e.to_string() });
                    break;
                }
            };
            let next = (r + 1 < rows.len()).then(|| rows.row(r + 1));
            let (p, l) = k.learn_ahead(&rows.row(r), next.as_ref(), y, w);
            m.examples += 1;
            self.learned += 1;
            if !p.is_finite() {
                res = Err(LearnError::Diverged { row, pred: p, lr: optim.lr });
                break;
            }
            self.progress.add(p, y, w, l);
            self.progress.y_sum += f64::from(w * y);
            self.progress.y_sq += f64::from(w * y * y);
        }
        (m.bias, m.bias_state) = (k.bias(), k.bias_state());
        self.bufs = k.into_buffers();
        Ok(res?)
    }
}
