//! Sparse models in model files: the table's weights and optimizer state in the dense file's
//! arrays (d = 2^bits, the bias and its state last, the rows learned as the optimizer's `t`),
//! and how features reach them ([`SparseMeta`]) in the file's extra JSON, under `"sparse"`.
//! No `unsafe` here.

use super::train::{SparseModel, SparseState};
use crate::kernel::sparse::{Table, MAX_BITS};
use crate::loss::Loss;
use crate::model::{LinearModel, ModelFile};
use crate::optim::{OptimConfig, Optimizer};
use crate::transform::Missing;

/// How features reach a sparse model's weights, as its file keeps it.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct SparseMeta {
    /// The table has 2^bits slots.
    pub bits: u32,
    /// Seed of the feature hash.
    pub hash_seed: u64,
    /// Namespace crosses, as given (`cd`, `abc`).
    pub interactions: Vec<String>,
    /// CSV: the categorical columns.
    #[serde(default)]
    pub categorical: Vec<String>,
    /// CSV: the label column's name.
    #[serde(default)]
    pub label: Option<String>,
    /// What a NaN value was in training (`--missing`); `predict` does the same.
    #[serde(default)]
    pub missing: Missing,
    /// CSV: the event-time column (not a feature).
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// A sparse model file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SparseFileError {
    /// The extra section or its `"sparse"` entry is not what a sparse model writes.
    #[error("the model's sparse section: {0}")]
    Meta(String),
    /// The weights do not fit the table the section describes.
    #[error("the model has {weights} weights for --bits {bits}")]
    Size {
        /// Weights in the file.
        weights: usize,
        /// The section's bits.
        bits: u32,
    },
}

/// Namespace crosses from their specs (`cd`, `abc`): 2 or 3 ASCII letters each.
pub fn interactions(spec: &[String]) -> Result<Vec<Vec<u8>>, String> {
    spec.iter()
        .map(|s| match (2..=3).contains(&s.len()) && s.is_ascii() {
            true => Ok(s.as_bytes().to_vec()),
            false => Err(format!("--interactions {s}: a cross is 2 or 3 namespace letters (ab, abc)")),
        })
        .collect()
}

impl SparseMeta {
    /// The sparse section of `file`, `None` for a dense model.
    pub fn of(file: &ModelFile) -> Result<Option<SparseMeta>, SparseFileError> {
        let v: serde_json::Value =
            serde_json::from_str(&file.extra).map_err(|e| SparseFileError::Meta(format!("the extra section is not JSON: {e}")))?;
        v.get("sparse").map(|s| serde_json::from_value(s.clone()).map_err(|e| SparseFileError::Meta(e.to_string()))).transpose()
    }
}

/// The model file of `m`, learned with `loss` and `optim`, its features reaching it as `meta`
/// says (SGD's lazy L2 decay settled).
pub fn to_file(m: &SparseState<'_>, loss: Loss, optim: OptimConfig, meta: &SparseMeta) -> ModelFile {
    let d = m.table.len();
    let mut weights = m.table.settled_weights(&optim, m.examples);
    weights.push(m.bias);
    let mut optimizer = Optimizer::new(optim, d);
    m.table.export_state(&mut optimizer);
    optimizer.t = m.examples as f64;
    if let Some(b) = optimizer.sum_sq.get_mut(d) {
        *b = m.bias_state.0;
    }
    if let Some(b) = optimizer.z.get_mut(d) {
        *b = m.bias_state.1;
    }
    let extra = serde_json::json!({ "sparse": meta }).to_string();
    ModelFile { model: LinearModel { loss, weights }, optimizer, extra }
}

/// The sparse model `file` holds, laid out as `meta` (its sparse section) says.
pub fn from_file(file: &ModelFile, meta: &SparseMeta) -> Result<SparseModel, SparseFileError> {
    let opt = &file.optimizer;
    if !(1..=MAX_BITS).contains(&meta.bits) || file.model.weights.len() != (1usize << meta.bits) + 1 {
        return Err(SparseFileError::Size { weights: file.model.weights.len(), bits: meta.bits });
    }
    let table = Table::new(meta.bits, opt.cfg.kind);
    let d = table.len();
    table.set_weights(&file.model.weights[..d]);
    let examples = opt.t as u64;
    table.import_state(opt, examples);
    Ok(SparseModel {
        loss: file.model.loss,
        table,
        bias: file.model.weights[d],
        interactions: interactions(&meta.interactions).map_err(SparseFileError::Meta)?,
        bias_state: (opt.sum_sq.get(d).copied().unwrap_or(0.0), opt.z.get(d).copied().unwrap_or(0.0)),
        examples,
    })
}
