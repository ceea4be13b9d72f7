//! The learner: a linear model, a loss and an optimizer, updated either one example at a time
//! (pure online, [`Learner::learn_row`]) or by mini-batches over the columns of a block
//! ([`Learner::learn_block`]): predictions for B rows by column-wise AXPY, one loss derivative
//! per row, the gradient by column-wise dot products, then one optimizer step.
//!
//! Every prediction is scored before its example is learned (progressive validation). Rows with
//! a non-finite feature, label or weight, or a label the loss cannot take, are rejected: an
//! error by default, or counted and skipped ([`BadRows::Skip`]); they never reach the weights.
//! A non-finite prediction from finite features means the weights diverged: an error that says
//! so. No `unsafe` here.

use crate::dataset::Block;
use crate::kernel::{self, Columns, Fold, Moments, Predictor};
use crate::loss::Loss;
use crate::metrics::Progressive;
use crate::model::{LinearModel, ModelFile};
use crate::optim::{Kind, OptimConfig, Optimizer};

/// Online rows scored together for progressive validation.
const PENDING: usize = 64;

/// What to do with a row that cannot be learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRows {
    /// Stop with an error naming the row.
    #[default]
    Error,
    /// Count it as rejected and go on.
    Skip,
}

/// Learning settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearnerConfig {
    /// The loss.
    pub loss: Loss,
    /// The optimizer.
    pub optim: OptimConfig,
    /// Mini-batch size (1 = pure online).
    pub batch: usize,
    /// Policy for rows that cannot be learned.
    pub bad_rows: BadRows,
}

/// Why learning stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LearnError {
    /// A row that cannot be learned (with [`BadRows::Error`]).
    #[error("row {row}: {what}")]
    BadRow {
        /// 0-based row number in the learner's stream.
        row: u64,
        /// What is wrong.
        what: String,
    },
    /// The weights stopped being finite.
    #[error("training diverged at row {row}: the prediction is {pred} for finite features; lower the learning rate (--lr {lr} is too large for this data)")]
    Diverged {
        /// Row at which it was noticed.
        row: u64,
        /// The prediction.
        pred: f32,
        /// The learning rate in use.
        lr: f32,
    },
}

/// A model being trained.
#[derive(Clone, Debug)]
pub struct Learner {
    cfg: LearnerConfig,
    model: LinearModel,
    opt: Optimizer,
    progress: Progressive,
    /// Online rows whose loss is not yet summed: (prediction, converted label, weight), scored
    /// [`PENDING`] at a time by the vectorised loss kernel (the loss value is not on the
    /// row-to-row dependency chain, only the derivative is).
    pending: Vec<[f32; 3]>,
    /// Rows that reached an update.
    pub rows_learned: u64,
    /// Rows rejected (with [`BadRows::Skip`]).
    pub rows_rejected: u64,
    /// The first rejected row and why.
    pub first_rejected: Option<(u64, String)>,
    rows_seen: u64,
    preds: Vec<f32>,
    coefs: Vec<f32>,
    ylab: Vec<f32>,
    g: Vec<f32>,
    h: Vec<f32>,
    max_abs: Vec<f32>,
    clean: Vec<f32>,
    row: Vec<f32>,
    /// Folded weights `w·b` of a batch learned through a [`Fold`].
    w_fold: Vec<f32>,
}

impl Learner {
    /// A zero model of `d` features.
    pub fn new(cfg: LearnerConfig, d: usize) -> Self {
        Self::resume(cfg, LinearModel::zeros(cfg.loss, d), Optimizer::new(cfg.optim, d))
    }

    /// Continues from a saved model and optimizer state.
    pub fn resume(cfg: LearnerConfig, model: LinearModel, opt: Optimizer) -> Self {
        let d = model.features();
        let b = cfg.batch.max(1);
        Learner {
            cfg,
            model,
            opt,
            progress: Progressive::default(),
            pending: Vec::with_capacity(PENDING),
            rows_learned: 0,
            rows_rejected: 0,
            first_rejected: None,
            rows_seen: 0,
            preds: vec![0.0; b],
            coefs: vec![0.0; b],
            ylab: vec![0.0; b],
            g: vec![0.0; d + 1],
            h: vec![0.0; d + 1],
            max_abs: vec![0.0; d],
            clean: Vec::new(),
            row: vec![0.0; d],
            w_fold: vec![0.0; d],
        }
    }

    /// The settings.
    pub fn config(&self) -> &LearnerConfig {
        &self.cfg
    }

    /// The current model.
    pub fn model(&self) -> &LinearModel {
        &self.model
    }

    /// Replaces the weights (after a merge); optimizer state is kept.
    pub fn set_weights(&mut self, w: &[f32]) {
        self.model.weights.copy_from_slice(w);
    }

    /// The optimizer state.
    pub fn optimizer(&self) -> &Optimizer {
        &self.opt
    }

    /// Mutable optimizer state (merging, resets).
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.opt
    }

    /// Progressive validation sums so far (every prediction scored before its update).
    pub fn progress(&mut self) -> Progressive {
        self.flush_pending();
        self.progress
    }

    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = self.pending.len();
        let (mut p, mut y, mut w, mut c) = ([0.0f32; PENDING], [0.0f32; PENDING], [0.0f32; PENDING], [0.0f32; PENDING]);
        for (i, [pi, yi, wi]) in self.pending.iter().enumerate() {
            (p[i], y[i], w[i]) = (*pi, *yi, *wi);
        }
        let s = kernel::score_batch(&self.cfg.loss, &p[..n], &y[..n], Some(&w[..n]), &mut c[..n]);
        self.progress.add_batch(&s);
        self.pending.clear();
    }

    /// Rows seen (learned + rejected), or the stream position set by
    /// [`Learner::set_position`] plus the rows seen since.
    pub fn rows_seen(&self) -> u64 {
        self.rows_seen
    }

    /// Sets the stream position of the next row, so that errors name rows as the source
    /// numbers them (a shard learns every N-th batch of the stream).
    pub fn set_position(&mut self, row: u64) {
        self.rows_seen = row;
    }

    /// A file image of the model and optimizer, to save or checkpoint.
    pub fn to_file(&self, extra: String) -> ModelFile {
        ModelFile { model: self.model.clone(), optimizer: self.opt.clone(), extra }
    }

    fn reject(&mut self, row: u64, what: String) -> Result<(), LearnError> {
        match self.cfg.bad_rows {
            BadRows::Error => Err(LearnError::BadRow { row, what }),
            BadRows::Skip => {
                self.rows_rejected += 1;
                if self.first_rejected.is_none() {
                    self.first_rejected = Some((row, what));
                }
                Ok(())
            }
        }
    }

    /// Checks label and weight; the converted label, or the reason the row is bad.
    #[inline]
    fn check_row(&self, y: f32, w: f32) -> Result<f32, String> {
        if !(w.is_finite() && w >= 0.0) {
            return Err(format!("importance weight {w} is not a finite non-negative number"));
        }
        self.cfg.loss.label(y).map_err(|e| e.to_string())
    }

    fn bad_feature(x: impl Iterator<Item = f32>) -> Option<String> {
        x.enumerate()
            .find(|(_, v)| !v.is_finite())
            .map(|(j, v)| format!("feature {j} is {v} (missing or infinite values need a --missing policy)"))
    }

    /// Pure online: predicts `x`, scores the prediction, then learns from it.
    pub fn learn_row(&mut self, x: &[f32], y: f32, w: f32) -> Result<(), LearnError> {
        let row = self.rows_seen;
        self.rows_seen += 1;
        let yl = match self.check_row(y, w) {
            Ok(v) => v,
            Err(what) => return self.reject(row, what),
        };
        let p = self.model.predict_row(x);
        if !p.is_finite() {
            return match Self::bad_feature(x.iter().copied()) {
                Some(what) => self.reject(row, what),
                None => Err(LearnError::Diverged { row, pred: p, lr: self.cfg.optim.lr }),
            };
        }
        let c = w * self.cfg.loss.derivative(p, yl);
        if self.pending.len() == PENDING {
            self.flush_pending();
        }
        self.pending.push([p, yl, w]);
        self.rows_learned += 1;
        let o = &self.opt.cfg;
        let d = x.len();
        if o.kind == Kind::Sgd && o.l1 == 0.0 && o.l2 == 0.0 {
            // Fast path: w ← w − η·c·x is a single AXPY.
            let eta = self.opt.sgd_rate();
            kernel::axpy(-eta * c, x, &mut self.model.weights[..d]);
            self.model.weights[d] -= eta * c;
            self.opt.t += w as f64;
        } else {
            for ((g, h), &v) in self.g[..d].iter_mut().zip(&mut self.h[..d]).zip(x) {
                *g = c * v;
                *h = *g * *g;
            }
            self.g[d] = c;
            self.h[d] = c * c;
            if self.opt.needs_scale() {
                for (m, v) in self.max_abs.iter_mut().zip(x) {
                    *m = v.abs();
                }
                self.opt.observe_scale(&self.max_abs);
            }
            self.opt.step(&mut self.model.weights, &self.g, &self.h, w);
        }
        Ok(())
    }

    /// Learns every row of a block, in mini-batches of the configured size (batch 1: online).
    pub fn learn_block(&mut self, b: &Block<'_>) -> Result<(), LearnError> {
        self.learn_rows(b.data, b.stride, b.features, 0, b.rows, b.labels, b.weights)
    }

    /// Learns rows `r0 .. r0+n` of column-major data (column `j` at `j*stride`).
    #[allow(clippy::too_many_arguments)]
    pub fn learn_rows(
        &mut self,
        data: &[f32],
        stride: usize,
        d: usize,
        r0: usize,
        n: usize,
        labels: &[f32],
        weights: Option<&[f32]>,
    ) -> Result<(), LearnError> {
        self.learn_columns(&Columns::new(data, stride, d, r0, n), None, labels, weights)
    }

    /// Learns the rows of `cols` (labels and weights indexed like the block's rows, from row 0),
    /// seen through `fold` when given: the learner then learns `fold.mapped(j, x)` without a
    /// transformed copy of the data (the feature stage folded into the kernels).
    pub fn learn_columns(
        &mut self,
        cols: &Columns<'_>,
        fold: Option<&Fold>,
        labels: &[f32],
        weights: Option<&[f32]>,
    ) -> Result<(), LearnError> {
        let batch = self.cfg.batch.max(1);
        let (r0, n) = (cols.r0, cols.n);
        let mut r = r0;
        while r < r0 + n {
            let m = batch.min(r0 + n - r);
            if batch == 1 {
                let mut x = std::mem::take(&mut self.row);
                for (j, v) in x.iter_mut().enumerate() {
                    let raw = cols.data[j * cols.stride + r];
                    *v = fold.map_or(raw, |f| f.mapped(j, raw));
                }
                let res = self.learn_row(&x, labels[r], weights.map_or(1.0, |w| w[r]));
                self.row = x;
                res?;
            } else {
                let part = Columns::new(cols.data, cols.stride, cols.d, r, m);
                self.step(&part, fold, &labels[r..r + m], weights.map(|w| &w[r..r + m]))?;
            }
            r += m;
        }
        Ok(())
    }

    /// One mini-batch step over `cols` (rows `cols.r0..`), labels and weights aligned with them.
    pub fn learn_batch(&mut self, cols: &Columns<'_>, labels: &[f32], weights: Option<&[f32]>) -> Result<(), LearnError> {
        self.step(cols, None, labels, weights)
    }

    /// [`Learner::learn_batch`], through `fold` when given.
    fn step(&mut self, cols: &Columns<'_>, fold: Option<&Fold>, labels: &[f32], weights: Option<&[f32]>) -> Result<(), LearnError> {
        let predict = |p: &Predictor<'_>, out: &mut [f32]| {
            match p.fold {
                Some(f) => kernel::predict_block_folded(cols, f, p.w, p.bias, out),
                None => kernel::predict_block(cols, p.w, p.bias, out),
            }
            true
        };
        self.step_with(cols, fold, labels, weights, None, predict).map(|_| ())
    }

    /// One mini-batch step over `cols` (through `fold` when given) whose margins `predict`
    /// writes — with the weights the rows' values meet ([`Predictor`]: folded by `fold`) — for
    /// a caller that reads the rows in the same pass for its own ends (the shard's fingerprints
    /// and column sums, [`kernel::predict_scan`]). When `predict` returns false the step is
    /// abandoned: nothing is learned or counted. Returns whether the rows were learned.
    ///
    /// With `sums`, the gradient pass also takes the columns' moments where it can
    /// ([`kernel::gradient_block_folded`]: a fold that neither clamps nor imputes, on the fast
    /// path — every row usable, a positive total weight); `sums` is left empty otherwise.
    pub fn step_with(
        &mut self,
        cols: &Columns<'_>,
        fold: Option<&Fold>,
        labels: &[f32],
        weights: Option<&[f32]>,
        mut sums: Option<&mut Vec<Moments>>,
        predict: impl FnOnce(&Predictor<'_>, &mut [f32]) -> bool,
    ) -> Result<bool, LearnError> {
        if let Some(s) = sums.as_deref_mut() {
            s.clear();
        }
        let n = cols.n;
        if self.preds.len() < n {
            self.preds.resize(n, 0.0);
            self.coefs.resize(n, 0.0);
            self.ylab.resize(n, 0.0);
        }
        let mut preds = std::mem::take(&mut self.preds);
        let d = cols.d;
        let bias = self.model.weights[d];
        let w = match fold {
            Some(f) => {
                for ((o, &w), &b) in self.w_fold.iter_mut().zip(&self.model.weights[..d]).zip(&f.b) {
                    *o = w * b;
                }
                &self.w_fold[..d]
            }
            None => &self.model.weights[..d],
        };
        // The labels (and weights) are read after the margins, in their own pages: loaded
        // now, they arrive while the pass over the columns runs (the label check had waited
        // on them, 1 ns a row).
        kernel::prefetch(labels);
        kernel::prefetch(weights.unwrap_or_default());
        let predicted = predict(&Predictor { fold, w, bias }, &mut preds[..n]);
        if !predicted {
            self.preds = preds;
            return Ok(false);
        }
        let first_row = self.rows_seen;
        self.rows_seen += n as u64;
        let mut coefs = std::mem::take(&mut self.coefs);
        let mut ylab = std::mem::take(&mut self.ylab);
        let loss = self.cfg.loss;
        // Fast path when every label, weight and prediction is usable (branch-free checks).
        let mut valid = preds[..n].iter().fold(true, |a, p| a & p.is_finite());
        if loss.is_classification() {
            for (o, &y) in ylab.iter_mut().zip(labels) {
                valid &= (y == 1.0) | (y == 0.0) | (y == -1.0);
                *o = if y == 1.0 { 1.0 } else { -1.0 };
            }
        } else {
            for (o, &y) in ylab.iter_mut().zip(labels) {
                valid &= y.is_finite();
                *o = y;
            }
        }
        if let Some(w) = weights {
            valid &= w.iter().fold(true, |a, &w| a & w.is_finite() & (w >= 0.0));
        }
        let result = if valid {
            let s = kernel::score_batch(&loss, &preds[..n], &ylab[..n], weights, &mut coefs[..n]);
            self.progress.add_batch(&s);
            self.rows_learned += n as u64;
            if s.n_w > 0.0 {
                self.apply_batch(cols, fold, &coefs[..n], false, s.n_w, s.c_sum, s.c_sq, sums);
            }
            Ok(())
        } else {
            self.learn_batch_checked(cols, fold, labels, weights, first_row, &preds[..n], &mut coefs[..n])
        };
        self.preds = preds;
        self.coefs = coefs;
        self.ylab = ylab;
        result.map(|()| true)
    }

    /// The row-by-row path for batches with rows to reject, or a diverged model.
    #[allow(clippy::too_many_arguments)]
    fn learn_batch_checked(
        &mut self,
        cols: &Columns<'_>,
        fold: Option<&Fold>,
        labels: &[f32],
        weights: Option<&[f32]>,
        first_row: u64,
        preds: &[f32],
        coefs: &mut [f32],
    ) -> Result<(), LearnError> {
        let loss = self.cfg.loss;
        let d = self.model.features();
        let (mut n_w, mut c_sum, mut c_sq) = (0.0f32, 0.0f32, 0.0f32);
        let mut bad_features = false;
        for r in 0..cols.n {
            let (w, p, row) = (weights.map_or(1.0, |w| w[r]), preds[r], first_row + r as u64);
            coefs[r] = 0.0;
            let yl = match self.check_row(labels[r], w) {
                Ok(v) => v,
                Err(what) => {
                    self.reject(row, what)?;
                    continue;
                }
            };
            if !p.is_finite() {
                match Self::bad_feature((0..d).map(|j| seen(fold, j, cols.col(j)[r]))) {
                    Some(what) => {
                        bad_features = true;
                        self.reject(row, what)?;
                        continue;
                    }
                    None => return Err(LearnError::Diverged { row, pred: p, lr: self.cfg.optim.lr }),
                }
            }
            let (l, dl) = loss.eval(p, yl);
            self.progress.add(p, yl, w, l);
            let c = w * dl;
            coefs[r] = c;
            c_sum += c;
            c_sq += c * c;
            n_w += w;
            self.rows_learned += 1;
        }
        if n_w > 0.0 {
            self.apply_batch(cols, fold, coefs, bad_features, n_w, c_sum, c_sq, None);
        }
        Ok(())
    }

    /// Learns the batch from its rows' coefficients (`sums`: see [`Learner::step_with`]).
    #[allow(clippy::too_many_arguments)]
    fn apply_batch(
        &mut self,
        cols: &Columns<'_>,
        fold: Option<&Fold>,
        coefs: &[f32],
        bad_features: bool,
        n_w: f32,
        c_sum: f32,
        c_sq: f32,
        sums: Option<&mut Vec<Moments>>,
    ) {
        let d = self.model.features();
        let n = cols.n;
        // Rejected rows have coefficient 0, but 0·NaN is NaN: gradient over a copy of the
        // values the learner sees in which theirs are zeroed (rare path).
        let mut clean = std::mem::take(&mut self.clean);
        let (cols, fold) = if bad_features {
            clean.clear();
            for j in 0..d {
                clean.extend(cols.col(j).iter().map(|&x| seen(fold, j, x)).map(|v| if v.is_finite() { v } else { 0.0 }));
            }
            (Columns::new(&clean, n, d, 0, n), None)
        } else {
            (*cols, fold)
        };
        let max_abs = self.opt.needs_scale().then_some(&mut self.max_abs[..]);
        match fold {
            Some(f) => {
                kernel::gradient_block_folded(&cols, f, coefs, &mut self.g[..d], &mut self.h[..d], max_abs, sums);
                // The kernel worked on v − a; the learner's feature is (v − a)·b.
                for (j, &b) in f.b.iter().enumerate() {
                    self.g[j] *= b;
                    self.h[j] *= b * b;
                    self.max_abs[j] *= b.abs();
                }
            }
            None => kernel::gradient_block(&cols, coefs, &mut self.g[..d], &mut self.h[..d], max_abs),
        }
        self.g[d] = c_sum;
        self.h[d] = c_sq;
        if self.opt.needs_scale() {
            self.opt.observe_scale(&self.max_abs);
        }
        self.opt.step(&mut self.model.weights, &self.g, &self.h, n_w);
        self.clean = clean;
    }
}

/// The value the learner sees for raw `x` in column `j`.
#[inline]
fn seen(fold: Option<&Fold>, j: usize, x: f32) -> f32 {
    fold.map_or(x, |f| f.mapped(j, x))
}
