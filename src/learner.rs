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
    /// Mini-batch size (1 = pure online); with `grow`, the largest.
    pub batch: usize,
    /// Start online and grow the mini-batch with the examples learned (see
    /// [`Learner::batch_now`]).
    pub grow: bool,
    /// Policy for rows that cannot be learned.
    pub bad_rows: BadRows,
}

impl LearnerConfig {
    /// `loss` and `optim` with the defaults: mini-batches growing to 256 rows, bad rows an
    /// error.
    pub fn new(loss: Loss, optim: OptimConfig) -> Self {
        LearnerConfig { loss, optim, batch: 256, grow: true, bad_rows: BadRows::Error }
    }
}

/// Examples learned per row of a growing mini-batch: after `t` examples a step takes
/// t / GROWTH rows (a power of two, at least 1, at most the configured batch).
const GROWTH: f64 = 256.0;

/// Why learning stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LearnError {
    /// A row that cannot be learned (with [`BadRows::Error`]).
    #[error("row {}: {what}", row + 1)]
    BadRow {
        /// 0-based row number in the learner's stream (shown from 1).
        row: u64,
        /// What is wrong.
        what: String,
    },
    /// The weights stopped being finite.
    #[error("training diverged at row {}: the prediction is {pred} for finite features; lower the learning rate (--lr {lr} is too large for this data)", row + 1)]
    Diverged {
        /// Row at which it was noticed.
        row: u64,
        /// The prediction.
        pred: f32,
        /// The learning rate in use.
        lr: f32,
    },
    /// The loss grew by orders of magnitude: the weights are running away, though still finite.
    #[error("training diverged at row {}: the mean loss of the last {BLOWUP_BATCHES} batches is at least {loss:.4e}, over {BLOWUP}× that of a constant prediction ({baseline:.4e}); lower the learning rate (--lr {lr}), or scale the features (--scale standard; sparse input: --optimizer normalized)", row + 1)]
    LossExploded {
        /// Row at which it was noticed.
        row: u64,
        /// The smallest mean loss of the last batches.
        loss: f64,
        /// The loss of the best constant prediction.
        baseline: f64,
        /// The learning rate in use.
        lr: f32,
    },
}

impl LearnError {
    /// The row it names (a shard parsing its own ranges first names it by position, then
    /// renumbers it in the stream).
    pub fn row_mut(&mut self) -> &mut u64 {
        match self {
            LearnError::BadRow { row, .. } | LearnError::Diverged { row, .. } | LearnError::LossExploded { row, .. } => row,
        }
    }

    /// The row it names.
    pub fn row(&self) -> u64 {
        match self {
            LearnError::BadRow { row, .. } | LearnError::Diverged { row, .. } | LearnError::LossExploded { row, .. } => *row,
        }
    }
}

/// Batches whose mean losses must all exceed [`BLOWUP`] × the constant prediction's for a
/// run to be stopped as diverged (one batch with an outlier label does not stop it).
pub const BLOWUP_BATCHES: usize = 4;
/// How many times the loss of the best constant prediction a diverged run's loss reaches.
pub const BLOWUP: f64 = 1000.0;

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
    /// The features' running means the steps are centred on (empty: none).
    centre: Vec<f32>,
    /// Weights before a centred step.
    w_before: Vec<f32>,
    /// The features reach the learner scaled by the feature stage (see [`Learner::set_scaled`]).
    scaled: bool,
    /// The mean losses of the last [`BLOWUP_BATCHES`] batches (a ring), to see a run diverge.
    recent: [f64; BLOWUP_BATCHES],
    /// Batches scored so far.
    scored: u64,
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
            centre: Vec::new(),
            w_before: Vec::new(),
            scaled: false,
            recent: [0.0; BLOWUP_BATCHES],
            scored: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &LearnerConfig {
        &self.cfg
    }

    /// The mini-batch of the next step. Fixed, or with [`LearnerConfig::grow`] the largest
    /// power of two at most t / 256 after t examples (1 below 512, 256 rows from 65 536 on;
    /// back to 1 when a drift reset restarts t). A B-row step equals B online steps only to
    /// first order: while the adaptive rates are still large, one such step overshoots where
    /// the online steps would have corrected each other (on diabetes' 354 training rows, a
    /// pass of two 256-row steps ends 3× worse than predicting the mean; growing, within 4 %
    /// of least squares). Growing from online costs the throughput of the first ~65 000 rows
    /// of each shard: no difference measured at 10^6 rows.
    pub fn batch_now(&self) -> usize {
        let most = self.cfg.batch.max(1);
        if !self.cfg.grow {
            return most;
        }
        let k = (self.opt.t / GROWTH).max(1.0) as u64;
        most.min(1 << k.ilog2().min(30))
    }

    /// The current model.
    pub fn model(&self) -> &LinearModel {
        &self.model
    }

    /// Replaces the weights (after a merge); optimizer state is kept.
    pub fn set_weights(&mut self, w: &[f32]) {
        self.model.weights.copy_from_slice(w);
    }

    /// The running means of the features as the learner sees them, to centre its steps on
    /// (empty: none; otherwise one per feature), for the caller to fill (the feature stage's
    /// [`crate::transform::Transform::centre`]).
    ///
    /// A centred step is the step of the same model written as `Σ w_j (x_j − μ_j) + b′`: the
    /// gradient of `w_j` becomes `g_j − μ_j·g_b`, and the bias then moves by `−Σ Δw_j μ_j`
    /// besides its own step, so the model's predictions are those of a learner on centred
    /// features. Uncentred features (min-max scaled ones live in [0, 1]) otherwise make the
    /// weights and the bias fight over the features' mean and slow learning down by the
    /// square of mean ÷ spread.
    pub fn centre_mut(&mut self) -> &mut Vec<f32> {
        &mut self.centre
    }

    /// Tells the learner that its features come scaled by the feature stage (`--scale`): the
    /// normalized optimizer then takes them as they are, its per-feature scales all 1 — it is
    /// AdaGrad — for the stage has done what it does (and a standardised feature's largest
    /// value, which would be its scale, says more about its tail than its spread).
    pub fn set_scaled(&mut self, scaled: bool) {
        self.scaled = scaled;
    }

    fn needs_scale(&self) -> bool {
        self.opt.needs_scale() && !self.scaled
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

    /// Scores the pending online rows; returns their sums of weighted loss and weights.
    fn flush_pending(&mut self) -> (f64, f64) {
        if self.pending.is_empty() {
            return (0.0, 0.0);
        }
        let n = self.pending.len();
        let (mut p, mut y, mut w, mut c) = ([0.0f32; PENDING], [0.0f32; PENDING], [0.0f32; PENDING], [0.0f32; PENDING]);
        for (i, [pi, yi, wi]) in self.pending.iter().enumerate() {
            (p[i], y[i], w[i]) = (*pi, *yi, *wi);
        }
        let s = kernel::score_batch(&self.cfg.loss, &p[..n], &y[..n], Some(&w[..n]), &mut c[..n]);
        self.progress.add_batch(&s);
        self.progress.add_labels(&y[..n], Some(&w[..n]), |_| true);
        self.pending.clear();
        (s.loss as f64, s.n_w as f64)
    }

    /// Watches the loss of each scored batch (`loss` summed over weight `n`, ending at `row`):
    /// an error once the last [`BLOWUP_BATCHES`] batches all lost more than [`BLOWUP`] × what
    /// the best constant prediction of the labels would (a regression learner's labels' spread;
    /// the loss at margin 0 for classification).
    fn watch(&mut self, loss: f64, n: f64, row: u64) -> Result<(), LearnError> {
        if n <= 0.0 {
            return Ok(());
        }
        self.recent[self.scored as usize % BLOWUP_BATCHES] = loss / n;
        self.scored += 1;
        let baseline = if self.cfg.loss.is_classification() {
            self.cfg.loss.value(0.0, 1.0) as f64
        } else {
            let l = &self.opt.labels;
            let var = if l.n > 0.0 { l.m2 / l.n } else { 0.0 };
            self.cfg.loss.value(var.sqrt() as f32, 0.0) as f64
        };
        let least = self.recent.iter().copied().fold(f64::INFINITY, f64::min);
        if self.scored >= BLOWUP_BATCHES as u64 && baseline > 0.0 && least > BLOWUP * baseline {
            return Err(LearnError::LossExploded { row, loss: least, baseline, lr: self.cfg.optim.lr });
        }
        Ok(())
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
        // A regression learner's bias follows its labels' mean: the row is learned from the
        // prediction the moved bias gives.
        let moved = if self.cfg.loss.is_classification() { 0.0 } else { self.opt.labels.add(&[yl], Some(&[w]), |_| true) };
        if moved != 0.0 {
            self.opt.move_bias(&mut self.model.weights, moved);
        }
        let c = w * self.cfg.loss.derivative(p + moved, yl);
        if self.pending.len() == PENDING {
            let (loss, n) = self.flush_pending();
            self.watch(loss, n, row)?;
        }
        self.pending.push([p, yl, w]);
        self.rows_learned += 1;
        let o = &self.opt.cfg;
        let d = x.len();
        if o.kind == Kind::Sgd && o.l1 == 0.0 && o.l2 == 0.0 && self.centre.is_empty() {
            // Fast path: w ← w − η·c·x is a single AXPY.
            let eta = self.opt.sgd_rate();
            kernel::axpy(-eta * c, x, &mut self.model.weights[..d]);
            self.model.weights[d] -= eta * c;
            self.opt.t += w as f64;
        } else {
            let centre = if self.centre.len() == d { &self.centre[..] } else { &[] };
            for (j, ((g, h), &v)) in self.g[..d].iter_mut().zip(&mut self.h[..d]).zip(x).enumerate() {
                *g = c * (v - centre.get(j).copied().unwrap_or(0.0));
                *h = *g * *g;
            }
            self.g[d] = c;
            self.h[d] = c * c;
            if self.needs_scale() {
                for (m, v) in self.max_abs.iter_mut().zip(x) {
                    *m = v.abs();
                }
                self.opt.observe_scale(&self.max_abs, &mut self.model.weights);
            }
            self.centred_step(w);
        }
        Ok(())
    }

    /// The optimizer's step with `self.g` (already centred where [`Learner::centre_mut`] is
    /// set) and `self.h` over `n` examples, then the bias's share of a centred step.
    fn centred_step(&mut self, n: f32) {
        let d = self.model.features();
        if self.centre.len() != d {
            self.opt.step(&mut self.model.weights, &self.g, &self.h, n);
            return;
        }
        self.w_before.clear();
        self.w_before.extend_from_slice(&self.model.weights[..d]);
        self.opt.step(&mut self.model.weights, &self.g, &self.h, n);
        let moved: f32 = self.model.weights[..d].iter().zip(&self.w_before).zip(&self.centre).map(|((w, b), m)| (w - b) * m).sum();
        if moved != 0.0 {
            self.opt.move_bias(&mut self.model.weights, -moved);
        }
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
        let (r0, n) = (cols.r0, cols.n);
        let mut r = r0;
        while r < r0 + n {
            let batch = self.batch_now();
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
            self.progress.add_labels(&ylab[..n], weights, |_| true);
            self.rows_learned += n as u64;
            let watched = self.watch(s.loss as f64, s.n_w as f64, first_row + n as u64 - 1);
            if watched.is_err() {
                (self.preds, self.coefs, self.ylab) = (preds, coefs, ylab);
                return watched.map(|()| true);
            }
            if s.n_w > 0.0 {
                let (c_sum, c_sq) = self.follow_labels(&preds[..n], &ylab[..n], weights, &mut coefs[..n]).unwrap_or((s.c_sum, s.c_sq));
                self.apply_batch(cols, fold, &coefs[..n], false, s.n_w, c_sum, c_sq, sums);
            }
            Ok(())
        } else {
            self.learn_batch_checked(cols, fold, labels, weights, first_row, &preds[..n], &mut coefs[..n], &mut ylab[..n])
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
        ylab: &mut [f32],
    ) -> Result<(), LearnError> {
        let loss = self.cfg.loss;
        let d = self.model.features();
        let (mut n_w, mut c_sum, mut c_sq) = (0.0f32, 0.0f32, 0.0f32);
        let mut bad_features = false;
        // The converted labels of the rows learned; NaN marks a rejected row.
        ylab.fill(f32::NAN);
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
            ylab[r] = yl;
            c_sum += c;
            c_sq += c * c;
            n_w += w;
            self.rows_learned += 1;
        }
        let lab = &*ylab;
        self.progress.add_labels(lab, weights, |i| !lab[i].is_nan());
        let loss_sum: f64 =
            (0..cols.n).filter(|&r| !lab[r].is_nan()).map(|r| (weights.map_or(1.0, |w| w[r]) * loss.value(preds[r], lab[r])) as f64).sum();
        self.watch(loss_sum, n_w as f64, first_row + cols.n as u64 - 1)?;
        if n_w > 0.0 {
            if let Some(sums) = self.follow_labels(preds, lab, weights, coefs) {
                (c_sum, c_sq) = sums;
            }
            self.apply_batch(cols, fold, coefs, bad_features, n_w, c_sum, c_sq, None);
        }
        Ok(())
    }

    /// A regression learner's bias follows the mean of the labels it learns: adds the batch's
    /// labels `y` (converted; NaN: a rejected row, left out) to the statistics, moves the bias
    /// as far as their mean moved, and recomputes the rows' coefficients `c` at the predictions
    /// the moved bias gives. Returns their new sum and sum of squares, or None when nothing
    /// moved (classification, or the same mean).
    fn follow_labels(&mut self, p: &[f32], y: &[f32], w: Option<&[f32]>, c: &mut [f32]) -> Option<(f32, f32)> {
        let loss = self.cfg.loss;
        if loss.is_classification() {
            return None;
        }
        let moved = self.opt.labels.add(y, w, |i| !y[i].is_nan());
        if moved == 0.0 {
            return None;
        }
        self.opt.move_bias(&mut self.model.weights, moved);
        let (mut c_sum, mut c_sq) = (0.0f32, 0.0f32);
        for (i, ci) in c.iter_mut().enumerate() {
            if !y[i].is_nan() {
                *ci = w.map_or(1.0, |w| w[i]) * loss.derivative(p[i] + moved, y[i]);
                c_sum += *ci;
                c_sq += *ci * *ci;
            }
        }
        Some((c_sum, c_sq))
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
        let max_abs = self.needs_scale().then_some(&mut self.max_abs[..]);
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
        if self.centre.len() == d {
            // Centred: Σ c·(x − μ) = g − μ·Σ c. The squared gradients stay uncentred (the
            // centred ones would need one more sum per column in the kernel; on the bundled
            // sets both reach the same holdout loss).
            for (g, &m) in self.g[..d].iter_mut().zip(&self.centre) {
                *g -= m * c_sum;
            }
        }
        if self.needs_scale() {
            self.opt.observe_scale(&self.max_abs, &mut self.model.weights);
        }
        self.centred_step(n_w);
        self.clean = clean;
    }
}

/// The value the learner sees for raw `x` in column `j`.
#[inline]
fn seen(fold: Option<&Fold>, j: usize, x: f32) -> f32 {
    fold.map_or(x, |f| f.mapped(j, x))
}
