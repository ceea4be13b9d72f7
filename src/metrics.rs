//! Quality metrics: progressive (predict-then-learn) loss, and holdout evaluation — mean loss,
//! accuracy and AUC for classification, RMSE for regression. No `unsafe` here.

use crate::kernel::BatchScore;
use crate::loss::Loss;

/// Running sums of the loss of each prediction made *before* its example was learned.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progressive {
    /// Σ weight·loss.
    pub loss_sum: f64,
    /// Σ weight.
    pub weight_sum: f64,
    /// Σ weight over correctly classified rows ((p > 0) == (y > 0); meaningful for classification).
    pub correct: f64,
    /// Σ weight·(p − y)² (meaningful for regression).
    pub sq_err: f64,
    /// Σ weight·y over the labels (converted: ±1 for classification).
    pub y_sum: f64,
    /// Σ weight·y².
    pub y_sq: f64,
}

impl Progressive {
    /// Adds one prediction `p` for converted label `y` whose loss is `l`.
    #[inline]
    pub fn add(&mut self, p: f32, y: f32, w: f32, l: f32) {
        self.loss_sum += (w * l) as f64;
        self.weight_sum += w as f64;
        self.correct += if (p > 0.0) == (y > 0.0) { w as f64 } else { 0.0 };
        self.sq_err += (w * (p - y) * (p - y)) as f64;
    }

    /// Adds a scored mini-batch.
    #[inline]
    pub fn add_batch(&mut self, s: &BatchScore) {
        self.loss_sum += s.loss as f64;
        self.weight_sum += s.n_w as f64;
        self.correct += s.correct as f64;
        self.sq_err += s.sq_err as f64;
    }

    /// Adds the (converted) labels `y` of rows whose predictions were added, with their
    /// weights, where `keep(i)`: what [`Progressive::baseline`] is computed from.
    #[inline]
    pub fn add_labels(&mut self, y: &[f32], w: Option<&[f32]>, keep: impl Fn(usize) -> bool) {
        for (i, &v) in y.iter().enumerate() {
            if keep(i) {
                let wv = w.map_or(1.0, |w| w[i]) as f64;
                self.y_sum += wv * v as f64;
                self.y_sq += wv * (v as f64) * (v as f64);
            }
        }
    }

    /// Merges another shard's sums.
    pub fn merge(&mut self, o: &Progressive) {
        self.loss_sum += o.loss_sum;
        self.weight_sum += o.weight_sum;
        self.correct += o.correct;
        self.sq_err += o.sq_err;
        self.y_sum += o.y_sum;
        self.y_sq += o.y_sq;
    }

    /// The mean loss of the best constant prediction of the labels added (a model should do
    /// better): see [`baseline`].
    pub fn baseline(&self, loss: &Loss) -> f64 {
        baseline(loss, self.y_sum, self.y_sq, self.weight_sum)
    }

    /// Mean loss (NaN before any example).
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.weight_sum
    }
}

/// Holdout metrics.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Rows evaluated.
    pub rows: u64,
    /// Mean loss (log loss for logistic, hinge loss for hinge, ½ squared error for squared).
    pub loss: f64,
    /// Mean loss of the best constant prediction of these rows' labels
    /// ([`baseline`]): what a model must beat to have learned anything.
    pub baseline: f64,
    /// Fraction classified correctly (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Area under the ROC curve (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
    /// Root mean squared error (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
}

/// The mean loss of the best constant prediction of labels (converted) whose weighted sum,
/// sum of squares and total weight are given: ½·variance for the squared loss (an upper bound
/// for Huber's), the labels' entropy for the logistic loss (the log-odds of their rate),
/// 2·min(rate, 1 − rate) for the hinge loss; for the ε-insensitive and quantile losses an upper
/// bound from the labels' standard deviation σ (max(0, σ − ε); max(τ, 1 − τ)·σ). NaN without
/// labels.
pub fn baseline(loss: &Loss, y_sum: f64, y_sq: f64, n: f64) -> f64 {
    let mean = y_sum / n;
    match loss {
        Loss::Squared | Loss::Huber { .. } => 0.5 * (y_sq / n - mean * mean).max(0.0),
        // Bounds from the labels' spread σ (E|y − mean| ≤ σ): the sums kept have no quantiles.
        Loss::EpsilonInsensitive { epsilon } => ((y_sq / n - mean * mean).max(0.0).sqrt() - *epsilon as f64).max(0.0),
        Loss::Quantile { tau } => (*tau as f64).max(1.0 - *tau as f64) * (y_sq / n - mean * mean).max(0.0).sqrt(),
        Loss::Logistic | Loss::Hinge | Loss::ModifiedHuber | Loss::SquaredHinge | Loss::Perceptron => {
            let rate = ((1.0 + mean) / 2.0).clamp(0.0, 1.0);
            let least = rate.min(1.0 - rate);
            match loss {
                // The best constant margin's loss: m ∈ [−1, 1] for the hinges (4·least for the
                // squared ones, 2·least for the hinge), 0 for the perceptron (m = 0).
                Loss::Hinge => 2.0 * least,
                Loss::ModifiedHuber | Loss::SquaredHinge => 4.0 * least * (1.0 - least),
                Loss::Perceptron => 0.0,
                _ if least == 0.0 => 0.0,
                _ => -(rate * rate.ln() + (1.0 - rate) * (1.0 - rate).ln()),
            }
        }
    }
}

/// Metrics of margins `p` against converted labels `y` (importance weights `w`, or 1).
pub fn evaluate(loss: &Loss, p: &[f32], y: &[f32], w: Option<&[f32]>) -> Evaluation {
    let mut prog = Progressive::default();
    for i in 0..p.len() {
        prog.add(p[i], y[i], w.map_or(1.0, |w| w[i]), loss.value(p[i], y[i]));
    }
    prog.add_labels(y, w, |_| true);
    let cls = loss.is_classification();
    Evaluation {
        rows: p.len() as u64,
        loss: prog.mean_loss(),
        baseline: prog.baseline(loss),
        accuracy: cls.then(|| prog.correct / prog.weight_sum),
        auc: if cls { auc(p, y) } else { None },
        rmse: (!cls).then(|| (prog.sq_err / prog.weight_sum).sqrt()),
    }
}

/// ROC AUC by the rank statistic (ties count one half); `None` when one class is absent.
pub fn auc(scores: &[f32], y: &[f32]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut pos) = (0.0f64, 0u64);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            j += 1;
        }
        let mid = (i + j + 1) as f64 / 2.0; // average 1-based rank of the tie group
        for &k in &idx[i..j] {
            if y[k] > 0.0 {
                rank_sum += mid;
                pos += 1;
            }
        }
        i = j;
    }
    let neg = scores.len() as u64 - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_hand_cases() {
        assert_eq!(auc(&[0.1, 0.4, 0.35, 0.8], &[-1.0, -1.0, 1.0, 1.0]), Some(0.75));
        assert_eq!(auc(&[1.0, 2.0], &[-1.0, 1.0]), Some(1.0));
        assert_eq!(auc(&[1.0, 1.0], &[-1.0, 1.0]), Some(0.5));
        assert_eq!(auc(&[1.0, 2.0], &[1.0, 1.0]), None);
    }

    #[test]
    fn evaluation_values() {
        let e = evaluate(&Loss::Squared, &[1.0, 3.0], &[0.0, 3.0], None);
        assert_eq!((e.rmse, e.loss, e.accuracy), (Some((0.5f64).sqrt()), 0.25, None));
        let e = evaluate(&Loss::Logistic, &[2.0, -1.0, 0.5], &[1.0, 1.0, -1.0], None);
        assert!((e.accuracy.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }
}
