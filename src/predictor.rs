//! Predictions from a saved model, exactly as `streamsgd predict` makes them: a dense model's
//! feature stage (imputation, scaling, indicators, clipping: frozen as training left it) is
//! applied to each raw row before the weights; a sparse model's rows are hashed with its seed
//! and crossed as in training, and its `--missing` policy applies to NaN values. No `unsafe`
//! here.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use streamsgd::predictor::Predictor;
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("m.model");
//! # let model = streamsgd::model::LinearModel { loss: streamsgd::loss::Loss::Logistic, weights: vec![0.5, -0.25, 0.1] };
//! # let optimizer = streamsgd::optim::Optimizer::new(streamsgd::optim::OptimConfig::new(streamsgd::optim::Kind::Sgd), 2);
//! # streamsgd::model::ModelFile { model, optimizer, extra: "{}".into() }.save(&path)?;
//! let p = Predictor::load(&path)?;
//! // A dense model of 2 features: the probability of the positive class.
//! let prob = p.predict(&[1.0, 2.0])?;
//! assert!((prob - 1.0 / (1.0 + (-0.1f32).exp())).abs() < 1e-6);
//! assert!(p.predict(&[1.0]).is_err()); // the wrong number of features is an error
//! # Ok(())
//! # }
//! ```

use crate::loss::Loss;
use crate::model::{LinearModel, ModelError, ModelFile};
use crate::optim::OptimConfig;
use crate::pipeline::{saved_transform, PipelineError};
use crate::source::{ParseError, TextFormat};
use crate::sparse::file::{from_file, SparseFileError, SparseMeta};
use crate::sparse::parse::{push_named, Named, NamedError};
use crate::sparse::{SparseModel, SparseParser, SparseRows};
use crate::transform::Transform;
use std::path::Path;

/// Why a prediction, or loading the model, failed.
#[derive(Debug, thiserror::Error)]
pub enum PredictorError {
    /// The model file could not be read.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Its feature stage could not be read.
    #[error(transparent)]
    Stage(#[from] PipelineError),
    /// Its sparse section could not be read.
    #[error(transparent)]
    Sparse(#[from] SparseFileError),
    /// A row with the wrong number of features for a dense model.
    #[error("a row of {got} features: the model takes {want}")]
    Features {
        /// Features given.
        got: usize,
        /// Features the model takes.
        want: usize,
    },
    /// A batch that is not whole rows.
    #[error("a batch of {len} values is not whole rows of {features} features")]
    Batch {
        /// Values given.
        len: usize,
        /// Features per row.
        features: usize,
    },
    /// A dense row given to a sparse model, or a text line to a dense one.
    #[error("{0}")]
    Kind(&'static str),
    /// A text line that cannot be parsed.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A named feature that cannot be read.
    #[error(transparent)]
    Named(#[from] NamedError),
}

/// A loaded model ready to predict (immutable: share it between threads).
pub enum Predictor {
    /// A weight per column, with the feature stage training used.
    Dense {
        /// The weights.
        model: LinearModel,
        /// The frozen feature stage (`None`: rows reach the weights as they are).
        transform: Option<Box<Transform>>,
    },
    /// A hashed table.
    Sparse {
        /// The table, bias and crosses.
        model: Box<SparseModel>,
        /// The optimizer it was learned with (the kernel's layout).
        optim: OptimConfig,
        /// How features reach it.
        meta: SparseMeta,
    },
}

impl Predictor {
    /// Loads the model file at `path` (dense or sparse).
    pub fn load(path: &Path) -> Result<Self, PredictorError> {
        Self::from_file(ModelFile::load(path)?)
    }

    /// The predictor of a model file already read.
    pub fn from_file(file: ModelFile) -> Result<Self, PredictorError> {
        if let Some(meta) = SparseMeta::of(&file)? {
            let model = Box::new(from_file(&file, &meta)?);
            return Ok(Predictor::Sparse { model, optim: file.optimizer.cfg, meta });
        }
        let transform = saved_transform(&file.extra)?.filter(|t| !t.cfg.is_identity()).map(Box::new);
        Ok(Predictor::Dense { model: file.model, transform })
    }

    /// The loss it was trained with (what its outputs mean).
    pub fn loss(&self) -> Loss {
        match self {
            Predictor::Dense { model, .. } => model.loss,
            Predictor::Sparse { model, .. } => model.loss,
        }
    }

    /// The raw features a dense model's rows have (`None` for a sparse model).
    pub fn features(&self) -> Option<usize> {
        match self {
            Predictor::Dense { model, transform } => Some(transform.as_ref().map_or(model.features(), |t| t.d)),
            Predictor::Sparse { .. } => None,
        }
    }

    /// The output for a raw dense row `x` (a probability for the logistic loss, a score or a
    /// value otherwise), its feature stage applied; `NaN` for a row its `--missing drop`
    /// policy drops.
    pub fn predict(&self, x: &[f32]) -> Result<f32, PredictorError> {
        if let Predictor::Sparse { .. } = self {
            return Err(PredictorError::Kind("a sparse model takes text lines or sparse rows (predict_line, predict_rows)"));
        }
        let want = self.features().unwrap_or(0);
        if x.len() != want {
            return Err(PredictorError::Features { got: x.len(), want });
        }
        let mut out = Vec::with_capacity(1);
        self.predict_batch(x, &mut out)?;
        Ok(out[0])
    }

    /// The outputs for a batch of raw dense rows, row-major (`rows.len()` a multiple of
    /// [`Predictor::features`]), appended to `out`: what [`Predictor::predict`] gives for each,
    /// with one buffer for the feature stage.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use streamsgd::predictor::Predictor;
    /// # let model = streamsgd::model::LinearModel { loss: streamsgd::loss::Loss::Squared, weights: vec![2.0, 1.0] };
    /// # let optimizer = streamsgd::optim::Optimizer::new(streamsgd::optim::OptimConfig::new(streamsgd::optim::Kind::Sgd), 1);
    /// # let p = Predictor::from_file(streamsgd::model::ModelFile { model, optimizer, extra: "{}".into() })?;
    /// // y = 2x + 1, three rows of one feature.
    /// let mut out = Vec::new();
    /// p.predict_batch(&[0.0, 1.0, 2.5], &mut out)?;
    /// assert_eq!(out, [1.0, 3.0, 6.0]);
    /// assert!(p.predict_batch(&[1.0; 4], &mut out).is_ok()); // d = 1: any length is whole rows
    /// # Ok(())
    /// # }
    /// ```
    pub fn predict_batch(&self, rows: &[f32], out: &mut Vec<f32>) -> Result<(), PredictorError> {
        let Predictor::Dense { model, transform } = self else {
            return Err(PredictorError::Kind("a sparse model takes text lines or sparse rows (predict_line, predict_rows)"));
        };
        dense_outputs(model, transform.as_deref(), rows, out, false)
    }

    /// The output for each of a sparse model's `rows` (already hashed, as a `.ssgd` file or
    /// [`SparseParser`] holds them), appended to `out`.
    pub fn predict_rows(&self, rows: &crate::sparse::RowsRef<'_>, out: &mut Vec<f32>) -> Result<(), PredictorError> {
        let Predictor::Sparse { model, optim, .. } = self else {
            return Err(PredictorError::Kind("a dense model takes rows of its features (predict)"));
        };
        sparse_outputs(model, *optim, rows, out, false);
        Ok(())
    }

    /// The output for one row of named features under a sparse model, hashed with its seed as
    /// a CSV's columns are (see [`push_named`]); NaN for a row its `--missing drop` policy
    /// drops.
    pub fn predict_named<'a>(&self, features: impl IntoIterator<Item = (&'a str, Named<'a>)>) -> Result<f32, PredictorError> {
        let Predictor::Sparse { model, optim, meta } = self else {
            return Err(PredictorError::Kind("a dense model takes rows of its features (predict)"));
        };
        Ok(pushed_output(model, *optim, |rows| push_named(rows, meta.hash_seed, meta.missing, features, f32::NAN))?)
    }

    /// The output for one line of VW or LibSVM text (`format`) under a sparse model, hashed
    /// with its seed; `NaN` for a line its `--missing drop` policy drops. The label, if the
    /// line has one, is read and ignored.
    pub fn predict_line(&self, format: TextFormat, line: &str) -> Result<f32, PredictorError> {
        let Predictor::Sparse { meta, .. } = self else {
            return Err(PredictorError::Kind("a dense model takes rows of its features (predict)"));
        };
        let mut parser = SparseParser::new(std::io::empty(), "line", format, meta.hash_seed)?;
        parser.set_missing(meta.missing);
        let mut rows = SparseRows::new();
        if !parser.parse_record(line.as_bytes(), &mut rows)? {
            return match parser.missing_rows {
                0 => Err(PredictorError::Kind("an empty or comment line has no prediction")),
                _ => Ok(f32::NAN),
            };
        }
        let mut out = Vec::with_capacity(1);
        self.predict_rows(&rows.as_ref(), &mut out)?;
        Ok(out[0])
    }
}

/// The outputs of dense `model` for raw rows (row-major), through `transform` (its statistics
/// as they are) when given, appended to `out` (the margins when `raw`); NaN for a row the stage
/// drops.
pub(crate) fn dense_outputs(
    model: &LinearModel,
    transform: Option<&Transform>,
    rows: &[f32],
    out: &mut Vec<f32>,
    raw: bool,
) -> Result<(), PredictorError> {
    let d = transform.map_or(model.features(), |t| t.d);
    if d == 0 || rows.len() % d != 0 {
        return Err(PredictorError::Batch { len: rows.len(), features: d });
    }
    let mut buf = vec![0.0f32; model.features()];
    out.extend(rows.chunks_exact(d).map(|x| {
        let margin = match transform {
            Some(t) if t.apply_row(x, &mut buf) => model.predict_row(&buf),
            Some(_) => f32::NAN,
            None => model.predict_row(x),
        };
        if raw {
            margin
        } else {
            model.loss.output(margin)
        }
    }));
    Ok(())
}

/// The outputs of sparse `model` (learned with `optim`) for `rows`, appended to `out` (the
/// margins when `raw`).
pub(crate) fn sparse_outputs(model: &SparseModel, optim: OptimConfig, rows: &crate::sparse::RowsRef<'_>, out: &mut Vec<f32>, raw: bool) {
    let at = out.len();
    crate::sparse::train::predict_rows(model, optim, rows, out);
    if raw {
        return;
    }
    for m in &mut out[at..] {
        *m = model.loss.output(*m);
    }
}

/// The output of sparse `model` for the row `push` appends (NaN when it appends none).
pub(crate) fn pushed_output<E>(
    model: &SparseModel,
    optim: OptimConfig,
    push: impl FnOnce(&mut SparseRows) -> Result<bool, E>,
) -> Result<f32, E> {
    let mut rows = SparseRows::new();
    if !push(&mut rows)? {
        return Ok(f32::NAN);
    }
    let mut out = Vec::with_capacity(1);
    sparse_outputs(model, optim, &rows.as_ref(), &mut out, false);
    Ok(out[0])
}
