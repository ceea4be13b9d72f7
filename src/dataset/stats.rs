//! A full scan of a dataset: what `streamsgd info` reports, and the data checks beyond the
//! header (non-finite labels, infinite feature values). No `unsafe` here.

use super::{Dataset, FormatError};
use std::collections::BTreeMap;

/// Most distinct label values listed individually.
const MAX_LABEL_VALUES: usize = 20;

/// What a dataset holds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DatasetStats {
    /// The file.
    pub path: String,
    /// File size in bytes.
    pub bytes: u64,
    /// Rows.
    pub rows: u64,
    /// Feature columns.
    pub features: usize,
    /// Rows per block.
    pub block_rows: u32,
    /// Number of blocks.
    pub blocks: u64,
    /// `dense` (the only layout this version writes).
    pub layout: &'static str,
    /// Whether rows carry importance weights.
    pub weights: bool,
    /// Smallest label.
    pub label_min: f32,
    /// Largest label.
    pub label_max: f32,
    /// Count per label value, when there are at most 20 distinct values.
    pub label_counts: Option<BTreeMap<String, u64>>,
    /// Missing (NaN) feature cells.
    pub nan_cells: u64,
}

/// Scans every block. Non-finite labels, infinite features or weights that are negative or
/// not finite are errors naming the first offending row.
pub fn scan(ds: &Dataset) -> Result<DatasetStats, FormatError> {
    let h = *ds.header();
    let bad = |what: String| FormatError::Invalid { path: ds.path().to_path_buf(), what };
    let (mut lo, mut hi, mut nan) = (f32::INFINITY, f32::NEG_INFINITY, 0u64);
    let mut counts: Option<BTreeMap<u32, u64>> = Some(BTreeMap::new());
    let mut first_row = 0u64;
    for b in ds.iter() {
        for j in 0..b.features {
            for (r, &x) in b.column(j).iter().enumerate() {
                if x.is_nan() {
                    nan += 1;
                } else if x.is_infinite() {
                    return Err(bad(format!("row {}: feature {j} is infinite", first_row + r as u64 + 1)));
                }
            }
        }
        for (r, &y) in b.labels.iter().enumerate() {
            if !y.is_finite() {
                return Err(bad(format!("row {}: label {y} is not finite", first_row + r as u64 + 1)));
            }
            lo = lo.min(y);
            hi = hi.max(y);
            if let Some(c) = counts.as_mut() {
                *c.entry(y.to_bits()).or_default() += 1;
                if c.len() > MAX_LABEL_VALUES {
                    counts = None;
                }
            }
        }
        if let Some(w) = b.weights {
            if let Some(r) = w.iter().position(|w| !(w.is_finite() && *w >= 0.0)) {
                return Err(bad(format!("row {}: weight {} is not a finite non-negative number", first_row + r as u64 + 1, w[r])));
            }
        }
        first_row += b.rows as u64;
    }
    Ok(DatasetStats {
        path: ds.path().display().to_string(),
        bytes: ds.bytes().len() as u64,
        rows: h.rows,
        features: h.features as usize,
        block_rows: h.block_rows,
        blocks: h.blocks(),
        layout: "dense",
        weights: h.has_weights(),
        label_min: if h.rows == 0 { 0.0 } else { lo },
        label_max: if h.rows == 0 { 0.0 } else { hi },
        label_counts: counts.map(|c| c.into_iter().map(|(k, v)| (f32::from_bits(k).to_string(), v)).collect()),
        nan_cells: nan,
    })
}
