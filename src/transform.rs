//! Streaming feature engineering, applied inside the shards to each columnar batch before it is
//! learned, and again — with the statistics frozen — by `predict` (no train/serve skew):
//!
//! - missing values (NaN cells): `drop` the row (counted), impute `zero`, or impute the running
//!   per-feature `mean` (updated online from the non-missing values); optional indicator
//!   columns (one 0/1 column per input feature, appended after the features);
//! - online standardisation (Welford's running mean and variance, as Flink ML's
//!   OnlineStandardScaler) or min-max scaling to [0, 1], and clipping at ±k standard deviations.
//!
//! Statistics are per shard while training (each shard sees its share of the stream) and are
//! combined with Chan et al.'s parallel update when the model is saved. When the stage keeps
//! every row and column ([`Transform::foldable`]) it is folded into the learner's kernels
//! ([`Transform::fold`]: no transformed copy; a batch's moments come from the shard's scan of
//! the batch, or from a moments pass over a column with NaN cells or a compacted batch); otherwise
//! [`Transform::apply`] writes transformed columns with the kernel's column pass. The scalar
//! fold (Chan/Welford) is done once per column per batch. No `unsafe` here.

use crate::kernel::{column_pass, moments, prefetch, ColumnMap, Columns, Fold, Moments};

/// How many columns ahead the moments pass of [`Transform::fold`] prefetches.
const PREFETCH_COLUMNS: usize = 4;

/// What to do with NaN cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// The row is rejected as a bad row (the learner's policy).
    #[default]
    Reject,
    /// The row is dropped and counted.
    Drop,
    /// NaN becomes 0.
    Zero,
    /// NaN becomes the running mean of the feature.
    Mean,
}

/// Scaling of the features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// None.
    #[default]
    None,
    /// (x − mean) / std with running statistics.
    Standard,
    /// (x − min) / (max − min) with running extremes.
    Minmax,
}

/// The feature pipeline's settings (saved in the model).
#[derive(Clone, Copy, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct TransformConfig {
    /// Missing-value policy.
    pub missing: Missing,
    /// Append a 0/1 missing indicator per input feature.
    pub indicator: bool,
    /// Scaling.
    pub scaling: Scaling,
    /// Clip standardised values at ±k (k standard deviations); needs `Standard`.
    pub clip: Option<f32>,
}

impl TransformConfig {
    /// True when the stage changes nothing (the learner then reads the source's columns).
    pub fn is_identity(&self) -> bool {
        self.missing == Missing::Reject && !self.indicator && self.scaling == Scaling::None && self.clip.is_none()
    }

    /// True when running statistics are used (mean imputation or scaling).
    pub fn needs_stats(&self) -> bool {
        self.missing == Missing::Mean || self.scaling != Scaling::None
    }

    /// Output feature count for `d` inputs.
    pub fn output_features(&self, d: usize) -> usize {
        if self.indicator {
            2 * d
        } else {
            d
        }
    }
}

impl std::fmt::Display for TransformConfig {
    /// As the flags say it: `--missing mean --scale standard --clip 5`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let name = |v: Option<clap::builder::PossibleValue>| v.map_or(String::new(), |v| v.get_name().to_string());
        write!(f, "--missing {} --scale {}", name(self.missing.to_possible_value()), name(self.scaling.to_possible_value()))?;
        if self.indicator {
            f.write_str(" --missing-indicator")?;
        }
        if let Some(k) = self.clip {
            write!(f, " --clip {k}")?;
        }
        Ok(())
    }
}

/// Running per-feature statistics: count, mean and M2 (Welford) of the non-missing values, and
/// the extremes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureStats {
    /// Non-missing values seen.
    pub count: Vec<f64>,
    /// Running means.
    pub mean: Vec<f64>,
    /// Running sums of squared deviations.
    pub m2: Vec<f64>,
    /// Smallest values.
    pub min: Vec<f32>,
    /// Largest values.
    pub max: Vec<f32>,
}

impl FeatureStats {
    /// Empty statistics for `d` features.
    pub fn new(d: usize) -> Self {
        // Finite sentinels (JSON has no infinity): f32::MAX / f32::MIN until a value is seen.
        FeatureStats { count: vec![0.0; d], mean: vec![0.0; d], m2: vec![0.0; d], min: vec![f32::MAX; d], max: vec![f32::MIN; d] }
    }

    /// Adds a batch of values of feature `j` (NaNs skipped): see [`column_pass`].
    pub fn update(&mut self, j: usize, xs: &[f32]) {
        let m = column_pass(xs, self.shift(j, xs), None);
        self.add(j, &m);
    }

    /// The shift for a batch of feature `j`: the running mean, or the batch's first value.
    fn shift(&self, j: usize, xs: &[f32]) -> f32 {
        if self.count[j] > 0.0 {
            self.mean[j] as f32
        } else {
            xs.iter().copied().find(|x| !x.is_nan()).unwrap_or(0.0)
        }
    }

    /// Adds a batch's moments to feature `j`'s statistics (Chan et al.).
    fn add(&mut self, j: usize, m: &Moments) {
        if m.n == 0.0 {
            return;
        }
        let mean = m.shift as f64 + m.s / m.n;
        let m2 = (m.q - m.s * m.s / m.n).max(0.0);
        self.combine(j, m.n, mean, m2);
        self.min[j] = self.min[j].min(m.lo);
        self.max[j] = self.max[j].max(m.hi);
    }

    fn combine(&mut self, j: usize, n: f64, mean: f64, m2: f64) {
        let (na, ma) = (self.count[j], self.mean[j]);
        let total = na + n;
        let delta = mean - ma;
        self.mean[j] = ma + delta * n / total;
        self.m2[j] += m2 + delta * delta * na * n / total;
        self.count[j] = total;
    }

    /// Merges another shard's statistics into these.
    pub fn merge(&mut self, o: &FeatureStats) {
        for j in 0..self.count.len() {
            if o.count[j] > 0.0 {
                self.combine(j, o.count[j], o.mean[j], o.m2[j]);
                self.min[j] = self.min[j].min(o.min[j]);
                self.max[j] = self.max[j].max(o.max[j]);
            }
        }
    }

    /// The statistics of what was added to `base` to get `self` (inverse of Chan's update;
    /// extremes are kept as they are): how each shard's share is separated from statistics
    /// every shard started from (a resumed model's).
    pub fn minus(&self, base: &FeatureStats) -> FeatureStats {
        let mut out = self.clone();
        for j in 0..self.count.len() {
            let (n, na) = (self.count[j], base.count[j]);
            let nb = n - na;
            if na == 0.0 || nb <= 0.0 {
                if nb <= 0.0 {
                    (out.count[j], out.mean[j], out.m2[j]) = (0.0, 0.0, 0.0);
                }
                continue;
            }
            let mb = (n * self.mean[j] - na * base.mean[j]) / nb;
            let delta = mb - base.mean[j];
            out.count[j] = nb;
            out.mean[j] = mb;
            out.m2[j] = (self.m2[j] - base.m2[j] - delta * delta * na * nb / n).max(0.0);
        }
        out
    }

    /// Population standard deviation of feature `j` (0 before two values).
    pub fn std(&self, j: usize) -> f64 {
        if self.count[j] > 1.0 {
            (self.m2[j] / self.count[j]).sqrt()
        } else {
            0.0
        }
    }
}

/// The feature pipeline with its state.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transform {
    /// Settings.
    pub cfg: TransformConfig,
    /// Input features.
    pub d: usize,
    /// Running statistics.
    pub stats: FeatureStats,
    /// When true, statistics are no longer updated (serving).
    #[serde(skip)]
    pub frozen: bool,
    /// Scratch: the rows a batch keeps (reused, so the steady state allocates nothing).
    #[serde(skip)]
    keep: Vec<u32>,
    /// Scratch: one column's kept rows, when some rows are dropped.
    #[serde(skip)]
    gathered: Vec<f32>,
    /// The stage as the learner's kernels see it (see [`Transform::fold`]).
    #[serde(skip)]
    folded: Fold,
    /// Scratch: the shifts of [`Transform::scan_shifts`] and [`Transform::begin_fold`].
    #[serde(skip)]
    shifts: Vec<f32>,
    /// Whether the last part through [`Transform::begin_fold`] had NaN cells (the next one
    /// then starts imputing).
    #[serde(skip)]
    nan_seen: bool,
}

/// What a batch went through.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct TransformCounts {
    /// Rows dropped for a missing value (`--missing drop`).
    pub dropped_missing: u64,
    /// NaN cells replaced (zero or mean).
    pub imputed_cells: u64,
}

impl TransformCounts {
    /// Adds another shard's counts.
    pub fn merge(&mut self, o: &TransformCounts) {
        self.dropped_missing += o.dropped_missing;
        self.imputed_cells += o.imputed_cells;
    }
}

impl Transform {
    /// A fresh pipeline for `d` input features.
    pub fn new(cfg: TransformConfig, d: usize) -> Self {
        Transform {
            cfg,
            d,
            stats: FeatureStats::new(d),
            frozen: false,
            keep: Vec::new(),
            gathered: Vec::new(),
            folded: Fold::identity(d),
            shifts: Vec::new(),
            nan_seen: false,
        }
    }

    /// Output features.
    pub fn output_features(&self) -> usize {
        self.cfg.output_features(self.d)
    }

    /// Transforms rows of `cols` (and their labels/weights) into `out` (column-major, stride =
    /// the rows kept), skipping rows marked in `skip` and rows dropped for missing values.
    /// Returns the number of rows written; `labels`/`weights` outputs are compacted alike.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        cols: &Columns<'_>,
        labels: &[f32],
        weights: Option<&[f32]>,
        skip: impl Fn(usize) -> bool,
        out: &mut Vec<f32>,
        out_labels: &mut Vec<f32>,
        out_weights: &mut Vec<f32>,
        counts: &mut TransformCounts,
    ) -> usize {
        let (n, d) = (cols.n, self.d);
        // Which rows stay: not skipped, and (with `drop`) no NaN.
        let mut keep = std::mem::take(&mut self.keep);
        keep.clear();
        for r in 0..n {
            if skip(r) {
                continue;
            }
            if self.cfg.missing == Missing::Drop && (0..d).any(|j| cols.col(j)[r].is_nan()) {
                counts.dropped_missing += 1;
                continue;
            }
            keep.push(r as u32);
        }
        let m = keep.len();
        let dout = self.output_features();
        // Every value is overwritten below: only a longer buffer is (zero-)filled.
        out.truncate(dout * m);
        out.resize(dout * m, 0.0);
        out_labels.clear();
        out_labels.extend(keep.iter().map(|&r| labels[r as usize]));
        out_weights.clear();
        out_weights.extend(keep.iter().map(|&r| weights.map_or(1.0, |w| w[r as usize])));
        let all = m == n;
        let mut gathered = std::mem::take(&mut self.gathered);
        for j in 0..d {
            let src = if all {
                &cols.col(j)[..n]
            } else {
                gathered.clear();
                gathered.extend(keep.iter().map(|&r| cols.col(j)[r as usize]));
                &gathered[..]
            };
            let (head, tail) = out.split_at_mut(d * m);
            if self.cfg.indicator {
                for (ind, &x) in tail[j * m..(j + 1) * m].iter_mut().zip(src) {
                    *ind = if x.is_nan() { 1.0 } else { 0.0 };
                }
            }
            let dst = &mut head[j * m..(j + 1) * m];
            let learning = self.learning();
            let moments = if learning && self.stats.count[j] == 0.0 {
                // The first values of a feature are scaled by their own statistics.
                self.stats.update(j, src);
                column_pass(src, 0.0, Some((&self.column_map(j), dst)))
            } else {
                // One pass: mapped with the statistics up to the previous batch, and measured.
                let shift = self.stats.shift(j, src);
                let m = column_pass(src, shift, Some((&self.column_map(j), dst)));
                if learning {
                    self.stats.add(j, &m);
                }
                m
            };
            if self.imputing() {
                counts.imputed_cells += src.len() as u64 - moments.n as u64;
            }
        }
        self.keep = keep;
        self.gathered = gathered;
        m
    }

    /// True while the statistics are updated from the data (training a stage that has any).
    fn learning(&self) -> bool {
        !self.frozen && self.cfg.needs_stats()
    }

    /// True when NaN cells are replaced (zero or mean).
    pub fn imputing(&self) -> bool {
        matches!(self.cfg.missing, Missing::Zero | Missing::Mean)
    }

    /// True when the stage can be folded into the learner's kernels: it keeps every row and adds
    /// no column (no `drop`, no indicators).
    pub fn foldable(&self) -> bool {
        self.cfg.missing != Missing::Drop && !self.cfg.indicator
    }

    /// The stage for the rows of `cols` as a [`Fold`] the learner applies inside its kernels
    /// (no transformed copy): the same maps as [`Transform::apply`] — the statistics up to the
    /// previous call, a feature's first values by their own — with this chunk's moments added
    /// to the statistics in one read of each column. Needs [`Transform::foldable`].
    ///
    /// `sums`, when given, are this chunk's column sums by [`crate::kernel::scan`] with the
    /// shifts of [`Transform::scan_shifts`]: a column whose sums are not NaN (no NaN cell) takes
    /// them instead of a second read.
    pub fn fold(&mut self, cols: &Columns<'_>, counts: &mut TransformCounts, sums: Option<&[Moments]>) -> &Fold {
        debug_assert!(self.foldable());
        let (learning, imputing) = (self.learning(), self.imputing());
        // Only min-max scaling reads the extremes (the saved statistics keep them as seen).
        let extremes = self.cfg.scaling == Scaling::Minmax;
        let mut f = self.take_fold();
        f.impute = false;
        // Without scanned sums, each column is read here first.
        let ahead = if sums.is_some() { 0 } else { PREFETCH_COLUMNS };
        for j in 0..self.d.min(ahead) {
            prefetch(cols.col(j));
        }
        for j in 0..self.d {
            let src = cols.col(j);
            if j + ahead < self.d && ahead > 0 {
                prefetch(cols.col(j + ahead));
            }
            let non_nan = if learning && self.stats.count[j] == 0.0 {
                // A feature's first values are mapped by their own statistics.
                self.stats.update(j, src);
                self.set_fold(&mut f, j);
                self.stats.count[j]
            } else {
                // The statistics up to the previous chunk, then this chunk's moments.
                self.set_fold(&mut f, j);
                let scanned = sums.map(|s| s[j]).filter(|m| !m.s.is_nan() && !m.q.is_nan());
                match (learning || imputing).then(|| scanned.unwrap_or_else(|| moments(src, self.stats.shift(j, src), extremes))) {
                    Some(m) => {
                        if learning {
                            self.stats.add(j, &m);
                        }
                        m.n
                    }
                    None => src.len() as f64,
                }
            };
            if imputing {
                let nan_cells = src.len() as u64 - non_nan as u64;
                counts.imputed_cells += nan_cells;
                // The kernels replace NaN cells only in a chunk that has some.
                f.impute |= nan_cells > 0;
            }
        }
        f.clamp = f.lo.iter().chain(&f.hi).any(|v| v.is_finite());
        self.folded = f;
        &self.folded
    }

    /// The fold's buffers, to be set and put back (sized for `d` columns: a stage read from a
    /// model file has none yet).
    fn take_fold(&mut self) -> Fold {
        let f = std::mem::take(&mut self.folded);
        if f.a.len() == self.d {
            f
        } else {
            Fold::identity(self.d)
        }
    }

    /// Starts a batch part on the shard's one-read path, where the learner's predict pass also
    /// sums the part's columns ([`crate::kernel::predict_scan`]): sets [`Transform::folded`]
    /// from the statistics so far (the same maps as [`Transform::fold`]), replacing NaN cells
    /// when the last such part had some, and returns whether the part's moments are needed
    /// (statistics to learn, NaN cells to count), its columns then summed shifted by
    /// [`Transform::fold_shifts`]. None, changing nothing, where the path does not apply — a
    /// stage that is not foldable, min-max extremes to learn, a feature not seen yet — and the
    /// part then goes through [`Transform::fold`]. [`Transform::end_fold`] ends the part.
    pub fn begin_fold(&mut self) -> Option<bool> {
        let (learning, imputing) = (self.learning(), self.imputing());
        let unseen = learning && self.stats.count.contains(&0.0);
        if !self.foldable() || unseen || (learning && self.cfg.scaling == Scaling::Minmax) {
            return None;
        }
        let mut f = self.take_fold();
        for j in 0..self.d {
            self.set_fold(&mut f, j);
        }
        f.clamp = f.lo.iter().chain(&f.hi).any(|v| v.is_finite());
        f.impute = imputing && self.nan_seen;
        self.folded = f;
        self.set_shifts();
        Some(learning || imputing)
    }

    /// The shifts of the part begun by [`Transform::begin_fold`]: the running means.
    pub fn fold_shifts(&self) -> &[f32] {
        &self.shifts
    }

    /// The stage as the learner's kernels see it, set by [`Transform::begin_fold`] or
    /// [`Transform::fold`].
    pub fn folded(&self) -> &Fold {
        &self.folded
    }

    /// Makes [`Transform::folded`] replace NaN cells for the rest of the part (one of its
    /// chunks had some); the learner must then predict that chunk again.
    pub fn impute_from_now(&mut self) {
        self.folded.impute = self.imputing();
    }

    /// Ends a part begun by [`Transform::begin_fold`] when it asked for sums: adds `sums`, the
    /// moments of the `rows` rows the part kept (one per column, shifted as asked, NaN cells
    /// left out), to the statistics, and counts the NaN cells replaced.
    pub fn end_fold(&mut self, sums: &[Moments], rows: u64, counts: &mut TransformCounts) {
        debug_assert_eq!(sums.len(), self.d);
        let nan_cells: u64 = sums.iter().map(|m| rows - m.n as u64).sum();
        if self.learning() {
            for (j, m) in sums.iter().enumerate() {
                self.stats.add(j, m);
            }
        }
        if self.imputing() {
            counts.imputed_cells += nan_cells;
        }
        self.nan_seen = nan_cells > 0;
    }

    /// The shifts for [`crate::kernel::scan`] to sum a chunk's columns by, so that
    /// [`Transform::fold`] can take its moments from the scan: the running means. None when
    /// the fold would not use scanned sums (no statistics to learn or cells to impute,
    /// min-max extremes, or a feature not seen yet).
    pub fn scan_shifts(&mut self) -> Option<&[f32]> {
        let (learning, imputing) = (self.learning(), self.imputing());
        let useful = self.foldable()
            && (learning || imputing)
            && self.cfg.scaling != Scaling::Minmax
            && (!learning || self.stats.count.iter().all(|&c| c > 0.0));
        if !useful {
            return None;
        }
        self.set_shifts();
        Some(&self.shifts)
    }

    /// The shifts to sum a part's columns by: the running means.
    fn set_shifts(&mut self) {
        self.shifts.clear();
        self.shifts.extend(self.stats.mean.iter().map(|&m| m as f32));
    }

    /// Column `j`'s map into `f`, the clip bounds moved to raw units: for b > 0,
    /// clamp((v − a)·b, −k, k) = (clamp(v, a − k/b, a + k/b) − a)·b.
    fn set_fold(&self, f: &mut Fold, j: usize) {
        let m = self.column_map(j);
        let bounded = m.k < f32::MAX;
        f.fill[j] = m.fill;
        f.a[j] = m.a;
        f.b[j] = m.b;
        f.lo[j] = if bounded { m.a - m.k / m.b } else { f32::NEG_INFINITY };
        f.hi[j] = if bounded { m.a + m.k / m.b } else { f32::INFINITY };
    }

    /// Column `j`'s map as one branch-free formula: v = fill if x is NaN (NaN stays NaN when
    /// nothing imputes), y = clamp((v − a)·b, lo, hi) — standardisation (a = mean, b = 1/std,
    /// ±k), min-max (a = min, b = 1/(max − min)) or identity (a = 0, b = 1), with the
    /// statistics as they are (what [`Transform::apply_row`] applies).
    pub fn column_map(&self, j: usize) -> ColumnMap {
        let fill = match self.cfg.missing {
            Missing::Zero => 0.0,
            Missing::Mean => self.stats.mean[j] as f32,
            _ => f32::NAN,
        };
        let (a, b, k) = match self.cfg.scaling {
            Scaling::None => (0.0, 1.0, f32::MAX),
            Scaling::Standard => {
                let sd = self.stats.std(j) as f32;
                (self.stats.mean[j] as f32, if sd > 0.0 { 1.0 / sd } else { 1.0 }, self.cfg.clip.unwrap_or(f32::MAX))
            }
            Scaling::Minmax => {
                let seen = self.stats.count[j] > 0.0;
                let (lo, hi) = if seen { (self.stats.min[j], self.stats.max[j]) } else { (0.0, 0.0) };
                (lo, if hi > lo { 1.0 / (hi - lo) } else { 1.0 }, f32::MAX)
            }
        };
        ColumnMap { fill, a, b, k }
    }

    /// The running means of the features the learner sees, in its units, into `out` (one per
    /// output feature) when they are off zero: for min-max scaling, (mean − min)/(max − min)
    /// (indicator columns: 0). The learner centres its steps on them (see
    /// [`crate::learner::Learner::centre_mut`]). Empty otherwise: standardised features are
    /// centred already, and raw ones have no statistics.
    pub fn centre(&self, out: &mut Vec<f32>) {
        out.clear();
        if self.cfg.scaling != Scaling::Minmax || self.stats.count.contains(&0.0) {
            return;
        }
        out.extend((0..self.d).map(|j| {
            let m = self.column_map(j);
            (self.stats.mean[j] as f32 - m.a) * m.b
        }));
        out.resize(self.output_features(), 0.0);
    }

    /// Transforms one row for serving (frozen statistics): `x` (d values) into `out`
    /// (output_features values). Returns false when the row would be dropped (`drop` policy).
    pub fn apply_row(&self, x: &[f32], out: &mut [f32]) -> bool {
        let d = self.d;
        if self.cfg.missing == Missing::Drop && x.iter().any(|v| v.is_nan()) {
            return false;
        }
        for j in 0..d {
            out[j] = self.column_map(j).apply(x[j]);
            if self.cfg.indicator {
                out[d + j] = if x[j].is_nan() { 1.0 } else { 0.0 };
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cols(data: &[f32], n: usize, d: usize) -> Columns<'_> {
        Columns::new(data, n, d, 0, n)
    }

    #[test]
    fn hand_computed_cases() {
        // Two features, 4 rows; feature 0 has a NaN in row 1.
        let data = [1.0, f32::NAN, 3.0, 5.0, 10.0, 20.0, 30.0, 40.0];
        let labels = [0.0, 1.0, 0.0, 1.0];
        let (mut out, mut ly, mut lw, mut c) = (Vec::new(), Vec::new(), Vec::new(), TransformCounts::default());
        let mut t = Transform::new(TransformConfig { missing: Missing::Mean, indicator: true, ..Default::default() }, 2);
        assert_eq!(t.apply(&cols(&data, 4, 2), &labels, None, |_| false, &mut out, &mut ly, &mut lw, &mut c), 4);
        // Mean of {1, 3, 5} = 3 fills the NaN; indicator column marks it.
        assert_eq!(&out[..4], &[1.0, 3.0, 3.0, 5.0]);
        assert_eq!(&out[8..12], &[0.0, 1.0, 0.0, 0.0]);
        assert_eq!(c.imputed_cells, 1);
        let mut t = Transform::new(TransformConfig { missing: Missing::Drop, ..Default::default() }, 2);
        assert_eq!(t.apply(&cols(&data, 4, 2), &labels, None, |r| r == 3, &mut out, &mut ly, &mut lw, &mut c), 2);
        assert_eq!((&out[..], &ly[..]), (&[1.0, 3.0, 10.0, 30.0][..], &[0.0, 0.0][..]));
        assert_eq!(c.dropped_missing, 1);
        // Standardise 10, 20, 30, 40: mean 25, population std √125.
        let mut t = Transform::new(
            TransformConfig { missing: Missing::Zero, scaling: Scaling::Standard, clip: Some(1.0), ..Default::default() },
            2,
        );
        t.apply(&cols(&data, 4, 2), &labels, None, |_| false, &mut out, &mut ly, &mut lw, &mut c);
        let s = 125f32.sqrt();
        let want: Vec<f32> = [10.0f32, 20.0, 30.0, 40.0].iter().map(|x| ((x - 25.0) / s).clamp(-1.0, 1.0)).collect();
        for (g, w) in out[4..8].iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        // Min-max of 10..40 → 0, 1/3, 2/3, 1; frozen serving applies the same to one row.
        let mut t = Transform::new(TransformConfig { scaling: Scaling::Minmax, ..Default::default() }, 1);
        t.apply(&cols(&data[4..], 4, 1), &labels, None, |_| false, &mut out, &mut ly, &mut lw, &mut c);
        assert_eq!(out, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
        t.frozen = true;
        let mut row = [0.0];
        assert!(t.apply_row(&[25.0], &mut row));
        assert_eq!(row[0], 0.5);
    }

    #[test]
    fn fresh_statistics_survive_json() {
        // Statistics of features never seen must serialise to JSON numbers (no ±∞ → null).
        let t = Transform::new(TransformConfig { scaling: Scaling::Minmax, ..Default::default() }, 3);
        let back: Transform = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.stats, t.stats);
        let mut out = [0.0];
        let t1 = Transform::new(TransformConfig { scaling: Scaling::Minmax, ..Default::default() }, 1);
        assert!(t1.apply_row(&[5.0], &mut out));
        assert_eq!(out[0], 5.0, "unseen feature: no scaling yet");
    }

    proptest! {
        #[test]
        /// Batches are summed in f32 lanes (shifted by the running mean), so the stated
        /// tolerance is 1e-6 relative on the mean and the variance.
        fn welford_in_batches_equals_two_pass(xs in proptest::collection::vec(-1e3f32..1e3, 1..400), cut in 1usize..50) {
            let mut s = FeatureStats::new(1);
            for chunk in xs.chunks(cut) {
                s.update(0, chunk);
            }
            let n = xs.len() as f64;
            let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
            let scale = xs.iter().map(|x| x.abs() as f64).fold(1.0, f64::max);
            prop_assert!((s.mean[0] - mean).abs() <= 1e-6 * scale, "mean {} vs {}", s.mean[0], mean);
            prop_assert!((s.std(0).powi(2) - var).abs() <= 1e-6 * scale * scale, "var {} vs {}", s.std(0).powi(2), var);
            // Merging two halves' statistics gives the same, and `minus` undoes the merge.
            let (a, b) = xs.split_at(xs.len() / 2);
            let (mut sa, mut sb) = (FeatureStats::new(1), FeatureStats::new(1));
            sa.update(0, a);
            sb.update(0, b);
            let a_only = sa.clone();
            sa.merge(&sb);
            let back = sa.minus(&a_only);
            prop_assert!((back.count[0] - sb.count[0]).abs() < 1e-9);
            if sb.count[0] > 0.0 {
                prop_assert!((back.mean[0] - sb.mean[0]).abs() <= 1e-6 * scale);
                prop_assert!((back.m2[0] - sb.m2[0]).abs() <= 1e-6 * scale * scale * sb.count[0]);
            }
            prop_assert!((sa.mean[0] - mean).abs() <= 1e-6 * scale);
            prop_assert!((sa.std(0).powi(2) - var).abs() <= 1e-6 * scale * scale);
        }
    }
}
