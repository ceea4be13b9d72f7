//! Loss functions: value and derivative with respect to the prediction (the margin `p`).
//!
//! Classification losses take labels in {0, 1} or {−1, +1} (0 is read as −1); regression
//! losses take any finite label. Adding a loss is one enum variant and one arm in each of
//! [`Loss::eval`], [`Loss::is_classification`], [`Loss::code`] and the SIMD twins `loss_lanes` in `kernel::simd`
//! and `kernel::avx2` — Huber shows how.
//! No `unsafe` here.

/// A loss function.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "name")]
pub enum Loss {
    /// ½(p − y)²: linear regression.
    Squared,
    /// ln(1 + e^(−y·p)): logistic regression.
    Logistic,
    /// max(0, 1 − y·p): linear SVM.
    Hinge,
    /// ½r² for |r| ≤ δ, δ(|r| − δ/2) beyond (r = p − y): robust regression.
    Huber {
        /// The threshold δ > 0.
        delta: f32,
    },
    /// max(0, |p − y| − ε): linear support vector regression (errors within ε are free).
    #[serde(rename = "epsilon_insensitive")]
    EpsilonInsensitive {
        /// The free margin ε ≥ 0.
        epsilon: f32,
    },
    /// τ·(y − p) when p ≤ y, else (1 − τ)·(p − y): the pinball loss, whose minimiser is the
    /// labels' τ-quantile (quantile regression).
    Quantile {
        /// The quantile τ ∈ (0, 1).
        tau: f32,
    },
    /// max(0, 1 − y·p)² for y·p ≥ −1, −4·y·p below: a smooth hinge, linear for far outliers
    /// (scikit-learn's `modified_huber`).
    #[serde(rename = "modified_huber")]
    ModifiedHuber,
    /// max(0, 1 − y·p)²: the L2-SVM loss.
    #[serde(rename = "squared_hinge")]
    SquaredHinge,
    /// max(0, −y·p): the perceptron's loss.
    Perceptron,
}

/// Why a label cannot be used with a loss.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LabelError {
    /// NaN or infinite.
    #[error("label {0} is not finite")]
    NotFinite(f32),
    /// A classification label outside {0, 1, −1, +1}.
    #[error("label {0} is out of range for a classification loss (expected 0/1 or -1/+1)")]
    NotBinary(f32),
}

impl Loss {
    /// Code stored in model files.
    pub fn code(&self) -> u32 {
        match self {
            Loss::Squared => 0,
            Loss::Logistic => 1,
            Loss::Hinge => 2,
            Loss::Huber { .. } => 3,
            Loss::EpsilonInsensitive { .. } => 4,
            Loss::Quantile { .. } => 5,
            Loss::ModifiedHuber => 6,
            Loss::SquaredHinge => 7,
            Loss::Perceptron => 8,
        }
    }

    /// The inverse of [`Loss::code`] (`param` = δ for Huber).
    pub fn from_code(code: u32, param: f32) -> Option<Loss> {
        Some(match code {
            0 => Loss::Squared,
            1 => Loss::Logistic,
            2 => Loss::Hinge,
            3 if param > 0.0 && param.is_finite() => Loss::Huber { delta: param },
            4 if param >= 0.0 && param.is_finite() => Loss::EpsilonInsensitive { epsilon: param },
            5 if param > 0.0 && param < 1.0 => Loss::Quantile { tau: param },
            6 => Loss::ModifiedHuber,
            7 => Loss::SquaredHinge,
            8 => Loss::Perceptron,
            _ => return None,
        })
    }

    /// The loss's parameter (δ for Huber, ε, τ; else 0).
    pub fn param(&self) -> f32 {
        match self {
            Loss::Huber { delta } => *delta,
            Loss::EpsilonInsensitive { epsilon } => *epsilon,
            Loss::Quantile { tau } => *tau,
            _ => 0.0,
        }
    }

    /// True for losses whose labels are two classes.
    pub fn is_classification(&self) -> bool {
        matches!(self, Loss::Logistic | Loss::Hinge | Loss::ModifiedHuber | Loss::SquaredHinge | Loss::Perceptron)
    }

    /// The label in the loss's own convention (±1 for classification), or why it is invalid.
    #[inline]
    pub fn label(&self, y: f32) -> Result<f32, LabelError> {
        if !y.is_finite() {
            return Err(LabelError::NotFinite(y));
        }
        if self.is_classification() {
            return match y {
                1.0 => Ok(1.0),
                0.0 | -1.0 => Ok(-1.0),
                _ => Err(LabelError::NotBinary(y)),
            };
        }
        Ok(y)
    }

    /// Loss and ∂loss/∂p of prediction `p` for (converted) label `y`, sharing the work
    /// (one `exp` for the logistic loss). The one definition of each loss.
    #[inline]
    pub fn eval(&self, p: f32, y: f32) -> (f32, f32) {
        match *self {
            Loss::Squared => (0.5 * (p - y) * (p - y), p - y),
            Loss::Logistic => {
                // z = −y·p; ln(1 + e^z) = max(z, 0) + ln(1 + e^−|z|) without overflow.
                let z = -y * p;
                let e = (-z.abs()).exp();
                let sigma = if z > 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
                // e ∈ (0, 1]: ln(1 + e) needs no log1p (glibc's log1pf measured 43% of the
                // online update; the absolute error here is below 1e-7).
                (z.max(0.0) + (1.0 + e).ln(), -y * sigma)
            }
            Loss::Hinge => {
                let m = 1.0 - y * p;
                (m.max(0.0), if m > 0.0 { -y } else { 0.0 })
            }
            Loss::Huber { delta } => {
                let r = p - y;
                let a = r.abs();
                (if a <= delta { 0.5 * r * r } else { delta * (a - 0.5 * delta) }, r.clamp(-delta, delta))
            }
            Loss::EpsilonInsensitive { epsilon } => {
                let r = p - y;
                let out = r.abs() - epsilon;
                (out.max(0.0), if out > 0.0 { r.signum() } else { 0.0 })
            }
            Loss::Quantile { tau } => {
                let r = y - p;
                if r >= 0.0 {
                    (tau * r, if r > 0.0 { -tau } else { 0.0 })
                } else {
                    ((tau - 1.0) * r, 1.0 - tau)
                }
            }
            Loss::ModifiedHuber => {
                let z = y * p;
                if z >= -1.0 {
                    let m = (1.0 - z).max(0.0);
                    (m * m, -2.0 * y * m)
                } else {
                    (-4.0 * z, -4.0 * y)
                }
            }
            Loss::SquaredHinge => {
                let m = (1.0 - y * p).max(0.0);
                (m * m, -2.0 * y * m)
            }
            Loss::Perceptron => {
                let z = y * p;
                ((-z).max(0.0), if z <= 0.0 { -y } else { 0.0 })
            }
        }
    }

    /// Loss of prediction `p` for (converted) label `y`.
    #[inline]
    pub fn value(&self, p: f32, y: f32) -> f32 {
        self.eval(p, y).0
    }

    /// ∂loss/∂p at prediction `p` for (converted) label `y` (without the loss value: the
    /// online path needs only this on its critical path).
    #[inline]
    pub fn derivative(&self, p: f32, y: f32) -> f32 {
        match *self {
            Loss::Logistic => -y / (1.0 + (y * p).exp()),
            _ => self.eval(p, y).1,
        }
    }

    /// What `predict` prints for a margin: the probability for logistic, else the margin.
    #[inline]
    pub fn output(&self, p: f32) -> f32 {
        match self {
            Loss::Logistic => 1.0 / (1.0 + (-p).exp()),
            _ => p,
        }
    }
}

impl std::fmt::Display for Loss {
    /// As the command line names it (`huber (δ = 1.5)`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loss::Squared => f.write_str("squared"),
            Loss::Logistic => f.write_str("logistic"),
            Loss::Hinge => f.write_str("hinge"),
            Loss::Huber { delta } => write!(f, "huber (δ = {delta})"),
            Loss::EpsilonInsensitive { epsilon } => write!(f, "epsilon-insensitive (ε = {epsilon})"),
            Loss::Quantile { tau } => write!(f, "quantile (τ = {tau})"),
            Loss::ModifiedHuber => f.write_str("modified-huber"),
            Loss::SquaredHinge => f.write_str("squared-hinge"),
            Loss::Perceptron => f.write_str("perceptron"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Loss; 9] = [
        Loss::Squared,
        Loss::Logistic,
        Loss::Hinge,
        Loss::Huber { delta: 1.5 },
        // ε away from the test points' |p − y| (the derivative jumps there).
        Loss::EpsilonInsensitive { epsilon: 0.25 },
        Loss::Quantile { tau: 0.8 },
        Loss::ModifiedHuber,
        Loss::SquaredHinge,
        Loss::Perceptron,
    ];

    #[test]
    fn derivative_matches_finite_differences() {
        for loss in ALL {
            for y in [-1.0f32, 1.0, 0.3] {
                let y = if loss.is_classification() && y == 0.3 { 1.0 } else { y };
                for p in [-3.0f32, -0.7, 0.2, 0.95, 2.5] {
                    let e = 1e-3f64;
                    let f = |p: f64| loss.value(p as f32, y) as f64;
                    let num = (f(p as f64 + e) - f(p as f64 - e)) / (2.0 * e);
                    let got = loss.derivative(p, y) as f64;
                    assert!((num - got).abs() < 2e-2, "{loss:?} p={p} y={y}: {got} vs {num}");
                }
            }
        }
    }

    #[test]
    fn labels_and_values() {
        assert_eq!(Loss::Logistic.label(0.0), Ok(-1.0));
        assert_eq!(Loss::Hinge.label(-1.0), Ok(-1.0));
        assert_eq!(Loss::Logistic.label(2.0), Err(LabelError::NotBinary(2.0)));
        assert!(Loss::Squared.label(f32::NAN).is_err());
        assert!((Loss::Logistic.value(0.0, 1.0) - std::f32::consts::LN_2).abs() < 1e-6);
        assert!(Loss::Logistic.value(-200.0, 1.0).is_finite());
        assert_eq!(Loss::Hinge.value(2.0, 1.0), 0.0);
        assert_eq!(Loss::Huber { delta: 1.0 }.value(3.0, 0.0), 2.5);
        assert_eq!(Loss::EpsilonInsensitive { epsilon: 0.5 }.eval(3.0, 1.0), (1.5, 1.0));
        assert_eq!(Loss::EpsilonInsensitive { epsilon: 0.5 }.eval(1.2, 1.0), (0.0, 0.0));
        assert_eq!(Loss::Quantile { tau: 0.8 }.eval(1.0, 3.0), (1.6, -0.8));
        assert!((Loss::Quantile { tau: 0.8 }.value(3.0, 1.0) - 0.4).abs() < 1e-6);
        assert_eq!(Loss::ModifiedHuber.eval(0.5, 1.0), (0.25, -1.0));
        assert_eq!(Loss::ModifiedHuber.eval(-3.0, 1.0), (12.0, -4.0));
        assert_eq!(Loss::SquaredHinge.eval(-1.0, 1.0), (4.0, -4.0));
        assert_eq!(Loss::SquaredHinge.eval(2.0, 1.0), (0.0, -0.0));
        assert_eq!(Loss::Perceptron.eval(-2.0, 1.0), (2.0, -1.0));
        assert_eq!(Loss::Perceptron.eval(2.0, 1.0), (0.0, 0.0));
        for l in ALL {
            assert_eq!(Loss::from_code(l.code(), l.param()), Some(l));
        }
    }
}
