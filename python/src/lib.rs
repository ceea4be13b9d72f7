//! `streamsgd._streamsgd`: the Python module over [`streamsgd::online::OnlineModel`] (numpy
//! arrays and CSR parts without per-row Python work, the GIL released while learning) and the
//! file pipeline. The scikit-learn and River-style classes are Python, in `streamsgd/`.
//! Errors become `streamsgd.StreamsgdError` (a `ValueError`); PyO3 turns a panic into a Python
//! exception, never an abort.

mod dict;

use dict::{Keys, Row};
use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::path::PathBuf;
use streamsgd::learner::BadRows;
use streamsgd::loss::Loss;
use streamsgd::model::ModelFile;
use streamsgd::online::{Csr, Features, OnlineConfig, OnlineError, OnlineModel};
use streamsgd::optim::{Kind, Schedule};
use streamsgd::source::hash::Seeded;
use streamsgd::train_file::{train_file, FileTraining};
use streamsgd::transform::{Missing, Scaling};

pyo3::create_exception!(_streamsgd, StreamsgdError, PyValueError, "A bad setting, row, file or model.");

pub(crate) fn err(e: impl std::fmt::Display) -> PyErr {
    StreamsgdError::new_err(e.to_string())
}

/// A setting's value from its name, or an error listing the names it takes.
fn choose<T: Copy>(what: &str, name: &str, options: &[(&str, T)]) -> PyResult<T> {
    options.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        err(format!("{what}={name:?}: expected one of {}", names.join(", ")))
    })
}

fn loss_of(name: &str, delta: f32, epsilon: f32, quantile: f32) -> PyResult<Loss> {
    choose(
        "loss",
        name,
        &[
            ("log_loss", Loss::Logistic),
            ("logistic", Loss::Logistic),
            ("hinge", Loss::Hinge),
            ("squared_error", Loss::Squared),
            ("squared", Loss::Squared),
            ("huber", Loss::Huber { delta }),
            ("epsilon_insensitive", Loss::EpsilonInsensitive { epsilon }),
            ("quantile", Loss::Quantile { tau: quantile }),
            ("modified_huber", Loss::ModifiedHuber),
            ("squared_hinge", Loss::SquaredHinge),
            ("perceptron", Loss::Perceptron),
        ],
    )
}

/// A 2-D array's values (C order), once its width is checked against the model's.
fn rows<'a>(x: &'a PyReadonlyArray2<'_, f32>, model: &OnlineModel) -> PyResult<&'a [f32]> {
    let width = x.shape()[1];
    match model.features() {
        Some(d) if d != width => return Err(err(format!("x has {width} columns: the model takes {d} features"))),
        None => return Err(err("a sparse model takes CSR rows (learn_csr, predict_csr) or dicts (learn_one, predict_one)")),
        Some(_) => {}
    }
    x.as_slice().map_err(|_| err("x must be a C-contiguous float32 array"))
}

/// A contiguous array's values, or an error naming the argument.
fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| err(format!("{what} must be a contiguous array")))
}

/// What `Model.from_bytes` takes to rebuild a pickled model: its bytes, batch, skip_bad.
type Reduced<'py> = (Bound<'py, PyBytes>, Option<usize>, bool);

/// A linear model learning online: dense rows through a feature stage, or hashed sparse rows
/// (see `streamsgd/__init__.pyi`).
#[pyclass(module = "streamsgd._streamsgd")]
struct Model {
    inner: OnlineModel,
    /// The keys of the names in the last dict learned or predicted.
    keys: Keys,
    /// The last dict's row.
    row: Row,
}

impl From<OnlineModel> for Model {
    fn from(inner: OnlineModel) -> Self {
        Model { inner, keys: Keys::default(), row: Row::default() }
    }
}

impl Model {
    /// Reads dict `x` into `self.row` under the model's hash seed.
    fn read(&mut self, x: &Bound<'_, PyDict>) -> PyResult<()> {
        let Features::Sparse(meta) = &self.inner.config().features else {
            return Err(err("a dense model takes float32 rows (learn, predict), not dicts"));
        };
        self.keys.read(x, Seeded::new(meta.hash_seed), &mut self.row)
    }
}

/// `e`, a feature named by its position in dict `x`, with the feature's name.
fn dict_err(x: &Bound<'_, PyDict>, e: OnlineError) -> PyErr {
    match e {
        OnlineError::Keyed(k) => match x.keys().get_item(k.position).and_then(|n| n.str()) {
            Ok(name) => err(k.named(&name.to_string_lossy())),
            Err(_) => err(k),
        },
        e => err(e),
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (
        loss = "log_loss", *, features = None, bits = None, optimizer = None, lr = None, l1 = 0.0, l2 = 0.0,
        schedule = "invscaling", power = 0.5, beta = 1.0, batch = None, scale = None, missing = "reject",
        clip = None, interactions = Vec::new(), hash_seed = 0, skip_bad = false, delta = 1.0, epsilon = 0.1,
        quantile = 0.5
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        loss: &str,
        features: Option<usize>,
        bits: Option<u32>,
        optimizer: Option<&str>,
        lr: Option<f32>,
        l1: f32,
        l2: f32,
        schedule: &str,
        power: f32,
        beta: f32,
        batch: Option<usize>,
        scale: Option<&str>,
        missing: &str,
        clip: Option<f32>,
        interactions: Vec<String>,
        hash_seed: u64,
        skip_bad: bool,
        delta: f32,
        epsilon: f32,
        quantile: f32,
    ) -> PyResult<Self> {
        let loss = loss_of(loss, delta, epsilon, quantile)?;
        let missing = choose(
            "missing",
            missing,
            &[("reject", Missing::Reject), ("drop", Missing::Drop), ("zero", Missing::Zero), ("mean", Missing::Mean)],
        )?;
        let mut cfg = match (features, bits) {
            (Some(d), None) => {
                let mut c = OnlineConfig::dense(loss, d);
                if let Features::Dense { stage, .. } = &mut c.features {
                    stage.missing = missing;
                    stage.clip = clip;
                    if let Some(s) = scale {
                        stage.scaling =
                            choose("scale", s, &[("standard", Scaling::Standard), ("minmax", Scaling::Minmax), ("none", Scaling::None)])?;
                    }
                }
                c
            }
            (None, Some(b)) => {
                if scale.is_some_and(|s| s != "none") || clip.is_some() {
                    return Err(err("scale and clip are for dense rows: the normalized optimizer scales hashed features"));
                }
                let mut c = OnlineConfig::sparse(loss, b);
                if let Features::Sparse(meta) = &mut c.features {
                    meta.interactions = interactions;
                    meta.hash_seed = hash_seed;
                    meta.missing = missing;
                }
                c
            }
            _ => return Err(err("give features=D (dense rows of D values) or bits=B (sparse rows hashed into 2^B weights)")),
        };
        if let Some(name) = optimizer {
            let kind = choose(
                "optimizer",
                name,
                &[("sgd", Kind::Sgd), ("adagrad", Kind::Adagrad), ("ftrl", Kind::Ftrl), ("normalized", Kind::Normalized)],
            )?;
            cfg.optim = streamsgd::optim::OptimConfig::new(kind);
        }
        cfg.optim.lr = lr.unwrap_or(cfg.optim.lr);
        (cfg.optim.l1, cfg.optim.l2, cfg.optim.power, cfg.optim.beta) = (l1, l2, power, beta);
        cfg.optim.schedule = choose(
            "schedule",
            schedule,
            &[("invscaling", Schedule::InvScaling), ("constant", Schedule::Constant), ("optimal", Schedule::Optimal)],
        )?;
        if let Some(b) = batch {
            (cfg.batch, cfg.grow) = (b, false);
        }
        cfg.bad_rows = if skip_bad { BadRows::Skip } else { BadRows::Error };
        Ok(OnlineModel::new(cfg).map_err(err)?.into())
    }

    /// Continues a model file (`streamsgd train --save`, `Model.save`).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        Ok(OnlineModel::load(&path).map_err(err)?.into())
    }

    /// Saves the model file (atomically).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.inner.save(&path).map_err(err)
    }

    /// The model file's bytes (what `save` writes).
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_file().encode())
    }

    /// A model from a model file's bytes; `batch`/`skip_bad` as the constructor takes them.
    #[staticmethod]
    #[pyo3(signature = (data, batch = None, skip_bad = false))]
    fn from_bytes(data: &[u8], batch: Option<usize>, skip_bad: bool) -> PyResult<Self> {
        let file = ModelFile::decode(data).map_err(err)?;
        let mut inner = OnlineModel::from_file(file).map_err(err)?;
        let bad_rows = if skip_bad { BadRows::Skip } else { BadRows::Error };
        let (b, grow) = batch.map_or((inner.config().batch, inner.config().grow), |b| (b, false));
        inner.set_learning(b, grow, bad_rows).map_err(err)?;
        Ok(inner.into())
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Reduced<'py>)> {
        let m = slf.borrow();
        let c = m.inner.config();
        let batch = (!c.grow).then_some(c.batch);
        let state = (m.to_bytes(slf.py()), batch, c.bad_rows == BadRows::Skip);
        Ok((slf.getattr("from_bytes")?, state))
    }

    /// Values per dense row (None for a sparse model).
    #[getter]
    fn features(&self) -> Option<usize> {
        self.inner.features()
    }

    /// Learns dense rows `x` (float32, C order, n × features) with labels `y` and optional
    /// weights, the GIL released. With `atomic`, a row that cannot be learned leaves the model
    /// as it was before the call; without, the rows before it are learned.
    #[pyo3(signature = (x, y, sample_weight = None, atomic = false))]
    fn learn(
        &mut self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        y: PyReadonlyArray1<'_, f32>,
        sample_weight: Option<PyReadonlyArray1<'_, f32>>,
        atomic: bool,
    ) -> PyResult<()> {
        let x = rows(&x, &self.inner)?;
        let y = slice(&y, "y")?;
        let w = sample_weight.as_ref().map(|w| slice(w, "sample_weight")).transpose()?;
        let inner = &mut self.inner;
        py.detach(|| if atomic { inner.learn_batch_atomic(x, y, w) } else { inner.learn_batch(x, y, w) }).map_err(err)
    }

    /// Outputs for dense rows (probabilities for the logistic loss).
    fn predict<'py>(&self, py: Python<'py>, x: PyReadonlyArray2<'py, f32>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let x = rows(&x, &self.inner)?;
        let mut out = Vec::new();
        py.detach(|| self.inner.predict_batch(x, &mut out)).map_err(err)?;
        Ok(PyArray1::from_vec(py, out))
    }

    /// Margins (w·x + b) for dense rows.
    fn decision_function<'py>(&self, py: Python<'py>, x: PyReadonlyArray2<'py, f32>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let x = rows(&x, &self.inner)?;
        let mut out = Vec::new();
        py.detach(|| self.inner.decision_batch(x, &mut out)).map_err(err)?;
        Ok(PyArray1::from_vec(py, out))
    }

    /// The model as weights on raw values and a bias: `w·x + b` is a row's margin (dense: the
    /// feature stage folded in; sparse: the weights of feature ids `0..ids`, which it needs).
    #[pyo3(signature = (ids = None))]
    fn coefficients<'py>(&self, py: Python<'py>, ids: Option<u32>) -> PyResult<(Bound<'py, PyArray1<f32>>, f32)> {
        let (w, b) = match (self.inner.features(), ids) {
            (Some(_), _) => self.inner.coefficients(),
            (None, Some(n)) => self.inner.feature_weights(n),
            (None, None) => return Err(err("a sparse model's coefficients need ids: how many feature ids to read")),
        }
        .map_err(err)?;
        Ok((PyArray1::from_vec(py, w), b))
    }

    /// Learns CSR rows (scipy.sparse's `indptr`, `indices`, `data`: uint64, uint32, float32).
    #[pyo3(signature = (indptr, indices, data, y, sample_weight = None))]
    fn learn_csr(
        &mut self,
        py: Python<'_>,
        indptr: PyReadonlyArray1<'_, u64>,
        indices: PyReadonlyArray1<'_, u32>,
        data: PyReadonlyArray1<'_, f32>,
        y: PyReadonlyArray1<'_, f32>,
        sample_weight: Option<PyReadonlyArray1<'_, f32>>,
    ) -> PyResult<()> {
        let csr = Csr { indptr: slice(&indptr, "indptr")?, indices: slice(&indices, "indices")?, values: slice(&data, "data")? };
        let y = slice(&y, "y")?;
        let w = sample_weight.as_ref().map(|w| slice(w, "sample_weight")).transpose()?;
        let inner = &mut self.inner;
        py.detach(|| inner.learn_csr(&csr, y, w)).map_err(err)
    }

    /// Outputs (or, with `margins`, w·x + b) for CSR rows.
    #[pyo3(signature = (indptr, indices, data, margins = false))]
    fn predict_csr<'py>(
        &self,
        py: Python<'py>,
        indptr: PyReadonlyArray1<'py, u64>,
        indices: PyReadonlyArray1<'py, u32>,
        data: PyReadonlyArray1<'py, f32>,
        margins: bool,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let csr = Csr { indptr: slice(&indptr, "indptr")?, indices: slice(&indices, "indices")?, values: slice(&data, "data")? };
        let mut out = Vec::new();
        py.detach(|| if margins { self.inner.decision_csr(&csr, &mut out) } else { self.inner.predict_csr(&csr, &mut out) })
            .map_err(err)?;
        Ok(PyArray1::from_vec(py, out))
    }

    /// Learns one row of named features (River's `learn_one`): str values are categories.
    fn learn_one(&mut self, x: &Bound<'_, PyDict>, y: f32) -> PyResult<()> {
        self.read(x)?;
        self.inner.learn_keyed(self.row.named(), y).map_err(|e| dict_err(x, e))
    }

    /// The output for one row of named features.
    fn predict_one(&mut self, x: &Bound<'_, PyDict>) -> PyResult<f32> {
        self.read(x)?;
        self.inner.predict_keyed(self.row.named()).map_err(|e| dict_err(x, e))
    }

    /// Rows learned, rejected and dropped, and the progressive (predict-then-learn) loss.
    fn stats<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("rows_learned", s.rows_learned)?;
        d.set_item("rows_rejected", s.rows_rejected)?;
        d.set_item("rows_dropped", s.rows_dropped)?;
        d.set_item("progressive_loss", s.progress.mean_loss())?;
        Ok(d)
    }
}

/// The features of a dense `.ssgd` file's rows; None for a sparse file.
#[pyfunction]
fn file_features(path: PathBuf) -> PyResult<Option<usize>> {
    if streamsgd::dataset::sparse::is_sparse_file(&path) {
        return Ok(None);
    }
    Ok(Some(streamsgd::dataset::Dataset::open(&path).map_err(err)?.features()))
}

/// Runs the sharded pipeline on a `.ssgd` file with `template`'s settings: returns the model
/// learned and the run's report (JSON text). `progress(done, total)` is called about ten times
/// a second from another thread; an exception it raises is raised once the run ends.
#[pyfunction]
#[pyo3(signature = (path, template, threads = None, holdout = 0.0, progress = None))]
fn run_file(
    py: Python<'_>,
    path: PathBuf,
    template: PyRef<'_, Model>,
    threads: Option<usize>,
    holdout: f64,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Model, String)> {
    let mut job = FileTraining::new(template.inner.config().clone());
    job.threads = threads.unwrap_or(job.threads);
    job.holdout = holdout;
    let failed: std::sync::Mutex<Option<PyErr>> = std::sync::Mutex::new(None);
    let report = |done: u64, total: u64| {
        let Some(cb) = &progress else { return };
        Python::attach(|py| {
            if let Err(e) = cb.call1(py, (done, total)) {
                failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
            }
        });
    };
    let out = py.detach(|| train_file(&path, &job, &report)).map_err(err)?;
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let model = Model::from(OnlineModel::from_file(out.model).map_err(err)?);
    Ok((model, out.report.to_string()))
}

/// The extension module.
#[pymodule]
fn _streamsgd(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(file_features, m)?)?;
    m.add_function(wrap_pyfunction!(run_file, m)?)?;
    m.add("StreamsgdError", m.py().get_type::<StreamsgdError>())?;
    Ok(())
}
