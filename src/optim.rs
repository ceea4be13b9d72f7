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
    /// Plain SGD with a [`Schedule`].
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
    /// Defaults for `kind`: η = 0.5 (normalized, AdaGrad), 0.1 (FTRL α, β = 1), SGD η = 0.5
    /// with inverse scaling p = 0.5.
    pub fn new(kind: Kind) -> Self {
        let lr = match kind {
            Kind::Ftrl => 0.1,
            _ => 0.5,
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
}

#[inline]
fn soft_threshold(w: f32, t: f32) -> f32 {
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
        Optimizer { cfg, t: 0.0, sum_sq, z, scale }
    }

    /// True when steps need the per-feature max |x| of their rows ([`Optimizer::observe_scale`]).
    pub fn needs_scale(&self) -> bool {
        self.cfg.kind == Kind::Normalized
    }

    /// Normalized: raises s_j to `max_abs[j]` where larger.
    pub fn observe_scale(&mut self, max_abs: &[f32]) {
        for (s, &m) in self.scale.iter_mut().zip(max_abs) {
            *s = s.max(m);
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

    /// One step on weights `w` (d + 1, bias last) with summed gradient `g`, summed squared
    /// per-row gradients `h` (both d + 1), over `n` examples (sum of importance weights).
    /// A single online row is the same step with g = c·x, h = g².
    pub fn step(&mut self, w: &mut [f32], g: &[f32], h: &[f32], n: f32) {
        let d = w.len() - 1;
        let (wd, gd, hd) = (&mut w[..d], &g[..d], &h[..d]);
        let (eta, l1, l2) = (self.cfg.lr, self.cfg.l1, self.cfg.l2);
        match (self.cfg.kind, l1 > 0.0) {
            (Kind::Sgd, _) => {
                let eta = self.sgd_rate();
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
                    *wj = ftrl_coord(&self.cfg, &mut self.z[j], &mut self.sum_sq[j], *wj, gd[j], hd[j], l1, l2);
                }
            }
        }
        self.update_bias(&mut w[d], g[d], h[d]);
        self.t += n as f64;
    }

    /// The bias: the same optimizer, never regularised.
    fn update_bias(&mut self, b: &mut f32, g: f32, h: f32) {
        let d = self.sum_sq.len().saturating_sub(1);
        match self.cfg.kind {
            Kind::Sgd => *b -= self.sgd_rate() * g,
            Kind::Adagrad | Kind::Normalized => {
                self.sum_sq[d] += h;
                if self.sum_sq[d] > 0.0 {
                    *b -= self.cfg.lr / self.sum_sq[d].sqrt() * g;
                }
            }
            Kind::Ftrl => *b = ftrl_coord(&self.cfg, &mut self.z[d], &mut self.sum_sq[d], *b, g, h, 0.0, 0.0),
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
        // s² for normalized features (1 for AdaGrad, and while a feature was only ever 0,
        // when h is 0 too).
        let s2 = if NORM && s[j] > 0.0 { s[j] * s[j] } else { 1.0 };
        let sum = sum_sq[j] + h[j] / s2;
        sum_sq[j] = sum;
        let rate = if sum > 0.0 { eta / (s2 * sum.sqrt()) } else { 0.0 };
        let v = w[j] - rate * (g[j] + nl2 * w[j]);
        w[j] = if L1 { soft_threshold(v, rate * nl1) } else { v };
    }
}

/// FTRL-Proximal for one coordinate: σ = (√(n+h) − √n)/α, z += g − σw, n += h,
/// w = 0 if |z| ≤ λ₁ else −(z − sign(z)λ₁) / ((β + √n)/α + λ₂).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn ftrl_coord(cfg: &OptimConfig, z: &mut f32, n: &mut f32, w: f32, g: f32, h: f32, l1: f32, l2: f32) -> f32 {
    let (alpha, beta) = (cfg.lr, cfg.beta);
    let n_new = *n + h;
    let sigma = (n_new.sqrt() - n.sqrt()) / alpha;
    *z += g - sigma * w;
    *n = n_new;
    if z.abs() <= l1 {
        0.0
    } else {
        -(*z - z.signum() * l1) / ((beta + n_new.sqrt()) / alpha + l2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let mut o = Optimizer::new(OptimConfig { schedule: Schedule::Constant, ..OptimConfig::new(Kind::Sgd) }, 1);
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
    fn l1_reaches_exact_zero() {
        for kind in [Kind::Sgd, Kind::Adagrad, Kind::Normalized, Kind::Ftrl] {
            let mut o = Optimizer::new(OptimConfig { l1: 10.0, ..OptimConfig::new(kind) }, 2);
            o.observe_scale(&[1.0, 1.0]);
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
        a.observe_scale(&[2.0]);
        b.observe_scale(&[2.0 * c]);
        let (mut wa, mut wb) = (vec![0.0, 0.0], vec![0.0, 0.0]);
        a.step(&mut wa, &[0.3, 0.1], &[0.09, 0.01], 1.0);
        b.step(&mut wb, &[0.3 * c, 0.1], &[0.09 * c * c, 0.01], 1.0);
        assert!((wa[0] - wb[0] * c).abs() < 1e-6 * wa[0].abs().max(1.0), "{wa:?} {wb:?}");
        assert_eq!(wa[1], wb[1]);
    }
}
