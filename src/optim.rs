//! Optimizers: SGD with three learning-rate schedules, AdaGrad, FTRL-Proximal, and a
//! normalized adaptive update in the spirit of Vowpal Wabbit's default.
//!
//! Every optimizer consumes, per step, the gradient `g` summed over the step's rows and `h`,
//! the per-coordinate sum of squared per-row gradients, so that a step over a mini-batch of B
//! rows equals B online steps to first order (and exactly when B = 1). Coordinate `d` (the
//! last) is the bias: it is never regularised. L1 is applied as a proximal (soft-threshold)
//! step, so coordinates reach exactly zero. Element-wise loops here are left to the compiler's
//! auto-vectoriser; no `unsafe`.

/// SGD learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// η_t = η.
    Constant,
    /// η_t = η / (1 + t)^p, t = examples seen (p = 0.5 by default, as Vowpal Wabbit).
    #[value(name = "invscaling")]
    InvScaling,
    /// Bottou's schedule for L2-regularised losses: η_t = 1 / (λ₂ (t₀ + t)), t₀ = 1/(η λ₂).
    Optimal,
}

/// Which optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Plain SGD with a learning-rate schedule (--schedule).
    Sgd,
    /// AdaGrad: per-coordinate η / √(Σ g²).
    Adagrad,
    /// FTRL-Proximal (McMahan et al., KDD 2013) with α, β, λ₁, λ₂.
    Ftrl,
    /// Normalized adaptive: per-feature scale s_j = max|x_j| and AdaGrad on x/s, so the update
    /// is invariant to rescaling any feature (Ross, Mineiro, Langford, UAI 2013; VW's default).
    Normalized,
}

/// Optimizer hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimConfig {
    /// The optimizer.
    pub kind: Kind,
    /// Learning rate η (FTRL: α).
    pub lr: f32,
    /// L1 strength (FTRL: λ₁).
    pub l1: f32,
    /// L2 strength (FTRL: λ₂).
    pub l2: f32,
    /// SGD schedule.
    pub schedule: Schedule,
    /// Inverse-scaling power p.
    pub power: f32,
    /// FTRL β.
    pub beta: f32,
}

impl OptimConfig {
    /// Defaults for `kind`: η = 0.1 (AdaGrad; SGD, with inverse scaling p = 0.5; FTRL's α,
    /// β = 1), 0.5 for the normalized update (Vowpal Wabbit's; its per-feature scale, the
    /// largest |x| seen, makes its steps about 1/max|x| of AdaGrad's on the same features).
    /// On standardised features, AdaGrad at 0.5 leaves a noisier final model on long streams
    /// (holdout RMSE 0.514 against 0.503 at 0.1, 10^6 rows); SGD at 0.5 makes the squared
    /// loss on a few correlated features diverge.
    pub fn new(kind: Kind) -> Self {
        let lr = match kind {
            Kind::Normalized => 0.5,
            _ => 0.1,
        };
        OptimConfig { kind, lr, l1: 0.0, l2: 0.0, schedule: Schedule::InvScaling, power: 0.5, beta: 1.0 }
    }

    /// Checks the values; the message names the bad one.
    pub fn check(&self) -> Result<(), String> {
        let pos = |name: &str, v: f32| if v.is_finite() && v > 0.0 { Ok(()) } else { Err(format!("{name} {v} must be finite and > 0")) };
        let nonneg =
            |name: &str, v: f32| if v.is_finite() && v >= 0.0 { Ok(()) } else { Err(format!("{name} {v} must be finite and ≥ 0")) };
        pos("learning rate", self.lr)?;
        nonneg("l1", self.l1)?;
        nonneg("l2", self.l2)?;
        nonneg("power", self.power)?;
        nonneg("beta", self.beta)?;
        if self.kind == Kind::Sgd && self.schedule == Schedule::Optimal && self.l2 <= 0.0 {
            return Err("the optimal schedule needs --l2 > 0".into());
        }
        Ok(())
    }
}

/// Running weighted mean and variance of a regression learner's labels (Welford/Chan, f64).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LabelStats {
    /// Sum of the importance weights of the labels seen.
    pub n: f64,
    /// Their mean.
    pub mean: f64,
    /// Their weighted sum of squared deviations from the mean.
    pub m2: f64,
    /// Whether the model's bias already follows `mean` (false for a model saved before label
    /// statistics existed: its first batch then sets the mean without moving the bias).
    pub anchored: bool,
}

impl Default for LabelStats {
    fn default() -> Self {
        LabelStats { n: 0.0, mean: 0.0, m2: 0.0, anchored: true }
    }
}

impl LabelStats {
    /// Adds labels `y` (importance weights `w`, 1 when `None`; only rows with `keep(i)`) and
    /// returns how far the mean moved — what the bias must move to keep following it.
    pub fn add(&mut self, y: &[f32], w: Option<&[f32]>, keep: impl Fn(usize) -> bool) -> f32 {
        let (mut n, mut s) = (0.0f64, 0.0f64);
        for (i, &v) in y.iter().enumerate() {
            let wi = w.map_or(1.0, |w| w[i]) as f64;
            if keep(i) {
                n += wi;
                s += wi * v as f64;
            }
        }
        if n <= 0.0 {
            return 0.0;
        }
        let mean = s / n;
        let m2: f64 =
            y.iter().enumerate().filter(|&(i, _)| keep(i)).map(|(i, &v)| w.map_or(1.0, |w| w[i]) as f64 * (v as f64 - mean).powi(2)).sum();
        let (old, total) = (self.mean, self.n + n);
        let delta = mean - old;
        self.mean = old + delta * n / total;
        self.m2 += m2 + delta * delta * self.n * n / total;
        self.n = total;
        let moved = if self.anchored { (self.mean - old) as f32 } else { 0.0 };
        self.anchored = true;
        moved
    }

    /// The labels' standard deviation, or 1 before they have any spread (the unit of the
    /// adaptive steps).
    pub fn scale(&self) -> f32 {
        let sd = if self.n > 0.0 { (self.m2 / self.n).sqrt() } else { 0.0 };
        if sd > 0.0 && sd.is_finite() {
            sd as f32
        } else {
            1.0
        }
    }
}

/// Optimizer state for a model of `d` features (+ bias).
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    /// Hyper-parameters.
    pub cfg: OptimConfig,
    /// Examples seen (sum of importance weights).
    pub t: f64,
    /// AdaGrad/normalized: Σ g² per coordinate; FTRL: n.
    pub sum_sq: Vec<f32>,
    /// FTRL: z per coordinate (empty otherwise).
    pub z: Vec<f32>,
    /// Normalized: s_j = max |x_j| seen (empty otherwise; no entry for the bias).
    pub scale: Vec<f32>,
    /// A regression learner's labels (empty for classification).
    pub labels: LabelStats,
}

#[inline]
pub(crate) fn soft_threshold(w: f32, t: f32) -> f32 {
    if w > t {
        w - t
    } else if w < -t {
        w + t
    } else {
        0.0
    }
}

impl Optimizer {
    /// Fresh state for `d` features.
    pub fn new(cfg: OptimConfig, d: usize) -> Self {
        let dim = d + 1;
        let sum_sq = if cfg.kind == Kind::Sgd { Vec::new() } else { vec![0.0; dim] };
        let z = if cfg.kind == Kind::Ftrl { vec![0.0; dim] } else { Vec::new() };
        let scale = if cfg.kind == Kind::Normalized { vec![0.0; d] } else { Vec::new() };
        Optimizer { cfg, t: 0.0, sum_sq, z, scale, labels: LabelStats::default() }
    }

    /// Restarts the adaptive state (drift): fresh sums and step count; the labels' mean is
    /// kept (the bias follows it), their weight and spread start again.
    pub fn reset(&mut self) {
        self.t = 0.0;
        for v in [&mut self.sum_sq, &mut self.z, &mut self.scale] {
            v.fill(0.0);
        }
        self.labels = LabelStats { mean: self.labels.mean, ..LabelStats::default() };
    }

    /// True when steps need the per-feature max |x| of their rows ([`Optimizer::observe_scale`]).
    pub fn needs_scale(&self) -> bool {
        self.cfg.kind == Kind::Normalized
    }

    /// Normalized: raises s_j to `max_abs[j]` where larger, and shrinks w_j by the same
    /// ratio (as Vowpal Wabbit does): a weight learned while the feature looked smaller than it
    /// is took steps too large for it.
    pub fn observe_scale(&mut self, max_abs: &[f32], w: &mut [f32]) {
        for ((s, &m), w) in self.scale.iter_mut().zip(max_abs).zip(w) {
            if m > *s {
                if *s > 0.0 {
                    *w *= *s / m;
                }
                *s = m;
            }
        }
    }

    /// SGD's learning rate now.
    pub fn sgd_rate(&self) -> f32 {
        let c = &self.cfg;
        match c.schedule {
            Schedule::Constant => c.lr,
            // f32 is plenty for a rate (relative error 6e-8) and shortens the online critical path.
            Schedule::InvScaling if c.power == 0.5 => c.lr / (1.0 + self.t as f32).sqrt(),
            Schedule::InvScaling => (c.lr as f64 / (1.0 + self.t).powf(c.power as f64)) as f32,
            Schedule::Optimal => (1.0 / (c.l2 as f64 * (1.0 / (c.lr as f64 * c.l2 as f64) + self.t))) as f32,
        }
    }

    /// Moves the bias `w[d]` by `delta` and keeps the optimizer's state consistent with it
    /// (FTRL's bias is a function of its z: z is set to give the moved bias).
    pub fn move_bias(&mut self, w: &mut [f32], delta: f32) {
        let d = w.len() - 1;
        w[d] += delta;
        if self.cfg.kind == Kind::Ftrl {
            let alpha = self.cfg.lr * self.labels.scale();
            self.z[d] = -w[d] * (self.cfg.beta + self.sum_sq[d].sqrt()) / alpha;
        }
    }

    /// SGD's mean rate over the next `n` examples (Σ of the schedule's rates over them, / n),
    /// so that a step of `n` summed gradients moves as far as `n` online steps would; the rate
    /// now when `n` ≤ 1.
    pub fn sgd_rate_over(&self, n: f32) -> f32 {
        if n <= 1.0 {
            return self.sgd_rate();
        }
        let c = &self.cfg;
        let (t, n, eta) = (self.t, n as f64, c.lr as f64);
        // The sums as integrals of the rate over [t − ½, t + n − ½] (midpoint rule: the
        // schedules are smooth and decreasing).
        let (a, b) = (t + 0.5, t + n + 0.5);
        let mean = match c.schedule {
            Schedule::Constant => eta,
            Schedule::InvScaling if (c.power - 1.0).abs() < 1e-6 => eta * (b / a).ln() / n,
            Schedule::InvScaling => {
                let q = 1.0 - c.power as f64;
                eta * (b.powf(q) - a.powf(q)) / (q * n)
            }
            Schedule::Optimal => {
                let (l2, t0) = (c.l2 as f64, 1.0 / (eta * c.l2 as f64) - 1.0);
                ((t0 + b) / (t0 + a)).ln() / (l2 * n)
            }
        };
        mean as f32
    }

    /// One step on weights `w` (d + 1, bias last) with summed gradient `g`, summed squared
    /// per-row gradients `h` (both d + 1), over `n` examples (sum of importance weights).
    /// A single online row is the same step with g = c·x, h = g².
    pub fn step(&mut self, w: &mut [f32], g: &[f32], h: &[f32], n: f32) {
        let d = w.len() - 1;
        let (wd, gd, hd) = (&mut w[..d], &g[..d], &h[..d]);
        // Adaptive steps in units of the labels' spread (1 for classification).
        let (eta, l1, l2) = (self.cfg.lr * self.labels.scale(), self.cfg.l1, self.cfg.l2);
        match (self.cfg.kind, l1 > 0.0) {
            (Kind::Sgd, _) => {
                let eta = self.sgd_rate_over(n);
                let (shrink, cut) = (1.0 - eta * n * l2, eta * n * l1);
                for (wj, &gj) in wd.iter_mut().zip(gd) {
                    let v = *wj * shrink - eta * gj;
                    *wj = if l1 > 0.0 { soft_threshold(v, cut) } else { v };
                }
            }
            (Kind::Adagrad, false) => adaptive::<false, false>(wd, &mut self.sum_sq[..d], gd, gd, hd, eta, n, l1, l2),
            (Kind::Adagrad, true) => adaptive::<false, true>(wd, &mut self.sum_sq[..d], gd, gd, hd, eta, n, l1, l2),
            (Kind::Normalized, false) => adaptive::<true, false>(wd, &mut self.sum_sq[..d], &self.scale[..d], gd, hd, eta, n, l1, l2),
            (Kind::Normalized, true) => adaptive::<true, true>(wd, &mut self.sum_sq[..d], &self.scale[..d], gd, hd, eta, n, l1, l2),
            (Kind::Ftrl, _) => {
                for (j, wj) in wd.iter_mut().enumerate() {
                    *wj = ftrl_coord(eta, self.cfg.beta, &mut self.z[j], &mut self.sum_sq[j], *wj, gd[j], hd[j], l1, l2);
                }
            }
        }
        self.update_bias(&mut w[d], g[d], h[d], n, eta);
        self.t += n as f64;
    }

    /// The bias: the same optimizer (rate `eta`), never regularised.
    fn update_bias(&mut self, b: &mut f32, g: f32, h: f32, n: f32, eta: f32) {
        let d = self.sum_sq.len().saturating_sub(1);
        match self.cfg.kind {
            Kind::Sgd => *b -= self.sgd_rate_over(n) * g,
            Kind::Adagrad | Kind::Normalized => {
                self.sum_sq[d] += h;
                if self.sum_sq[d] > 0.0 {
                    *b -= eta / self.sum_sq[d].sqrt() * g;
                }
            }
            Kind::Ftrl => *b = ftrl_coord(eta, self.cfg.beta, &mut self.z[d], &mut self.sum_sq[d], *b, g, h, 0.0, 0.0),
        }
    }
}

/// AdaGrad (`NORM = false`; `s` unused) or the normalized update (`NORM = true`, scales `s`),
/// with or without L1 (`L1`): branch-free per coordinate over equal-length slices, so the
/// compiler vectorises it (sqrt and division lanes).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn adaptive<const NORM: bool, const L1: bool>(
    w: &mut [f32],
    sum_sq: &mut [f32],
    s: &[f32],
    g: &[f32],
    h: &[f32],
    eta: f32,
    n: f32,
    l1: f32,
    l2: f32,
) {
    let d = w.len();
    let (sum_sq, s, g, h) = (&mut sum_sq[..d], &s[..d], &g[..d], &h[..d]);
    let (nl1, nl2) = (n * l1, n * l2);
    for j in 0..d {
        w[j] = adaptive_coord::<NORM, L1>(w[j], &mut sum_sq[j], s[j], g[j], h[j], eta, nl1, nl2);
    }
}

/// One coordinate of AdaGrad (`NORM = false`, `s` unused) or of the normalized update (scale
/// `s`): Σg² += h/s², w −= η/(s²√Σg²)·(g + λ₂w), then soft-thresholded by the same rate × λ₁
/// when `L1`. The new weight. Shared by the dense loop and the sparse kernel.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn adaptive_coord<const NORM: bool, const L1: bool>(
    w: f32,
    sum_sq: &mut f32,
    s: f32,
    g: f32,
    h: f32,
    eta: f32,
    l1: f32,
    l2: f32,
) -> f32 {
    // s² for normalized features (1 for AdaGrad, and while a feature was only ever 0, when h
    // is 0 too).
    let s2 = if NORM && s > 0.0 { s * s } else { 1.0 };
    let sum = *sum_sq + h / s2;
    *sum_sq = sum;
    let rate = if sum > 0.0 { eta / (s2 * sum.sqrt()) } else { 0.0 };
    let v = w - rate * (g + l2 * w);
    if L1 {
        soft_threshold(v, rate * l1)
    } else {
        v
    }
}

/// FTRL-Proximal for one coordinate: σ = (√(n+h) − √n)/α, z += g − σw, n += h,
/// w = 0 if |z| ≤ λ₁ else −(z − sign(z)λ₁) / ((β + √n)/α + λ₂).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn ftrl_coord(alpha: f32, beta: f32, z: &mut f32, n: &mut f32, w: f32, g: f32, h: f32, l1: f32, l2: f32) -> f32 {
    let n_new = *n + h;
    let sigma = (n_new.sqrt() - n.sqrt()) / alpha;
    *z += g - sigma * w;
    *n = n_new;
    ftrl_weight(*z, n_new, alpha, beta, l1, l2)
}

/// FTRL-Proximal's z for which a coordinate with state n has weight `w` (the inverse of
/// [`ftrl_weight`] in z): a reset or a merge that keeps the weight.
pub(crate) fn ftrl_z(w: f32, n: f32, alpha: f32, beta: f32, l1: f32, l2: f32) -> f32 {
    if w == 0.0 {
        0.0
    } else {
        -w * ((beta + n.sqrt()) / alpha + l2) - w.signum() * l1
    }
}

/// FTRL-Proximal's weight of a coordinate with state (z, n).
#[inline]
pub(crate) fn ftrl_weight(z: f32, n: f32, alpha: f32, beta: f32, l1: f32, l2: f32) -> f32 {
    if z.abs() <= l1 {
        0.0
    } else {
        -(z - z.signum() * l1) / ((beta + n.sqrt()) / alpha + l2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let mut o = Optimizer::new(OptimConfig { schedule: Schedule::Constant, lr: 0.5, ..OptimConfig::new(Kind::Sgd) }, 1);
        o.t = 99.0;
        assert_eq!(o.sgd_rate(), 0.5);
        o.cfg.schedule = Schedule::InvScaling;
        assert!((o.sgd_rate() - 0.05).abs() < 1e-7);
        o.cfg = OptimConfig { schedule: Schedule::Optimal, l2: 0.01, lr: 0.1, ..o.cfg };
        o.t = 0.0;
        assert!((o.sgd_rate() - 0.1).abs() < 1e-6);
        assert!(OptimConfig { l2: 0.0, ..o.cfg }.check().is_err());
    }

    #[test]
    fn a_batch_rate_is_the_mean_of_its_rows_rates() {
        // Σ of the online rates over rows t..t+n, / n, against the integral the step uses:
        // within 1 % once t ≥ 10, and exactly the online rate for n = 1.
        for schedule in [Schedule::Constant, Schedule::InvScaling, Schedule::Optimal] {
            for power in [0.25f32, 0.5, 1.0] {
                let cfg = OptimConfig { schedule, power, l2: 0.01, ..OptimConfig::new(Kind::Sgd) };
                let mut o = Optimizer::new(cfg, 1);
                for (t, n) in [(10.0, 256.0), (1000.0, 64.0), (1e6, 256.0)] {
                    o.t = t;
                    let mut online = o.clone();
                    let mut sum = 0.0f64;
                    for _ in 0..n as usize {
                        sum += online.sgd_rate() as f64;
                        online.t += 1.0;
                    }
                    let (want, got) = (sum / n, o.sgd_rate_over(n as f32) as f64);
                    assert!((got - want).abs() <= 0.01 * want, "{schedule:?} p={power} t={t} n={n}: {got} vs {want}");
                    assert_eq!(o.sgd_rate_over(1.0), o.sgd_rate());
                }
            }
        }
    }

    #[test]
    fn label_statistics_move_by_the_mean_and_scale_by_the_spread() {
        let mut l = LabelStats::default();
        assert_eq!(l.scale(), 1.0);
        // Weighted: 10 (weight 1) and 20 (weight 3) → mean 17.5, variance 18.75.
        assert_eq!(l.add(&[10.0, 20.0, 99.0], Some(&[1.0, 3.0, 5.0]), |i| i < 2), 17.5);
        assert!((l.scale() - 18.75f32.sqrt()).abs() < 1e-6);
        // In two batches, Chan's update gives the same statistics.
        let mut k = LabelStats::default();
        let moved = k.add(&[10.0], Some(&[1.0]), |_| true) + k.add(&[20.0], Some(&[3.0]), |_| true);
        assert!((moved - 17.5).abs() < 1e-6 && (k.m2 - l.m2).abs() < 1e-9, "{k:?} vs {l:?}");
        // Not anchored (a version-1 model): the first batch sets the mean without moving.
        let mut v1 = LabelStats { anchored: false, ..LabelStats::default() };
        assert_eq!(v1.add(&[5.0], None, |_| true), 0.0);
        assert_eq!(v1.add(&[7.0], None, |_| true), 1.0);
        // A reset keeps the mean the bias follows.
        let mut o = Optimizer::new(OptimConfig::new(Kind::Adagrad), 1);
        o.labels = l;
        o.t = 5.0;
        o.reset();
        assert_eq!((o.t, o.labels.mean, o.labels.n), (0.0, 17.5, 0.0));
    }

    #[test]
    fn ftrl_bias_moves_with_its_state() {
        let mut o = Optimizer::new(OptimConfig::new(Kind::Ftrl), 1);
        let mut w = vec![0.0, 0.0];
        o.step(&mut w, &[0.5, -1.0], &[0.25, 1.0], 1.0);
        o.move_bias(&mut w, 3.0);
        let moved = w[1];
        // A zero-gradient step recomputes the bias from z: it stays where it was moved.
        o.step(&mut w, &[0.0, 0.0], &[0.0, 0.0], 1.0);
        assert!((w[1] - moved).abs() < 1e-5, "{} vs {moved}", w[1]);
    }

    #[test]
    fn l1_reaches_exact_zero() {
        for kind in [Kind::Sgd, Kind::Adagrad, Kind::Normalized, Kind::Ftrl] {
            let mut o = Optimizer::new(OptimConfig { l1: 10.0, ..OptimConfig::new(kind) }, 2);
            o.observe_scale(&[1.0, 1.0], &mut [0.0, 0.0]);
            let mut w = vec![0.0, 0.0, 0.0];
            for _ in 0..20 {
                o.step(&mut w, &[0.01, -0.02, 0.0], &[1e-4, 4e-4, 0.0], 1.0);
            }
            assert_eq!(&w[..2], &[0.0, 0.0], "{kind:?}");
        }
    }

    #[test]
    fn normalized_is_scale_invariant() {
        // Feature scaled by c: gradients scale by c, h by c², s by c → the step on w scales by 1/c.
        let c = 1000.0f32;
        let (mut a, mut b) = (Optimizer::new(OptimConfig::new(Kind::Normalized), 1), Optimizer::new(OptimConfig::new(Kind::Normalized), 1));
        a.observe_scale(&[2.0], &mut [0.0]);
        b.observe_scale(&[2.0 * c], &mut [0.0]);
        let (mut wa, mut wb) = (vec![0.0, 0.0], vec![0.0, 0.0]);
        a.step(&mut wa, &[0.3, 0.1], &[0.09, 0.01], 1.0);
        b.step(&mut wb, &[0.3 * c, 0.1], &[0.09 * c * c, 0.01], 1.0);
        assert!((wa[0] - wb[0] * c).abs() < 1e-6 * wa[0].abs().max(1.0), "{wa:?} {wb:?}");
        assert_eq!(wa[1], wb[1]);
    }
}
