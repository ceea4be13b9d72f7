//! Deterministic synthetic data: a hidden linear model, a logistic link for classification or
//! Gaussian noise for regression, optional missing cells, duplicated rows and concept drift.
//!
//! Rows are generated in chunks of [`CHUNK_ROWS`]; chunk `k` draws from its own
//! xoshiro256++ stream seeded from `(seed, k)`, so chunks can be generated in parallel and the
//! same seed always gives the same values, whatever the output format or thread count.
//! No `unsafe` here.

use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Rows per generation chunk (fixed: it is part of what a seed means).
pub const CHUNK_ROWS: usize = 1024;

/// What kind of labels to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Labels in {0, 1} drawn from a logistic link.
    Classification,
    /// Real labels: linear function plus Gaussian noise.
    Regression,
}

/// Generator settings.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Classification or regression.
    pub task: Task,
    /// Rows to generate.
    pub rows: u64,
    /// Feature count D.
    pub features: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Regression: noise standard deviation. Classification: probability of flipping a label.
    pub noise: f32,
    /// Probability that a feature cell is missing (NaN).
    pub missing_rate: f32,
    /// Probability that a row repeats one of the previous 16 rows exactly.
    pub duplicate_rate: f32,
    /// From this row on the hidden weights are a second, independent draw.
    pub drift_at: Option<u64>,
}

/// A configured generator; [`Generator::chunk`] fills one chunk of rows.
#[derive(Clone, Debug)]
pub struct Generator {
    cfg: GenConfig,
    weights: [Vec<f32>; 2],
    bias: [f32; 2],
}

fn stream(seed: u64, k: u64) -> Xoshiro256PlusPlus {
    // splitmix64 of the pair, so nearby seeds and chunk numbers give unrelated streams.
    let mut z = seed ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(0x632b_e59b_d9b4_e019);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Xoshiro256PlusPlus::seed_from_u64(z ^ (z >> 31))
}

/// Fills `out` (a multiple of 16 long) with standard normal f32 by Box-Muller on 8 lanes:
/// u₁ ∈ (0, 1], u₂ ∈ [0, 1), ρ = √(−2 ln u₁), z = ρ·cos 2πu₂ and ρ·sin 2πu₂.
fn normals(rng: &mut Xoshiro256PlusPlus, out: &mut [f32]) {
    use rand::Rng;
    use wide::f32x8;
    const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
    for block in out.chunks_exact_mut(16) {
        let (mut u1, mut u2) = ([0.0f32; 8], [0.0f32; 8]);
        for i in 0..8 {
            let bits = rng.next_u64();
            u1[i] = (((bits >> 40) as u32) + 1) as f32 * SCALE;
            u2[i] = ((bits >> 8) as u32 & 0xff_ffff) as f32 * SCALE;
        }
        let rho = (f32x8::from(u1).ln() * f32x8::splat(-2.0)).sqrt();
        let (sin, cos) = (f32x8::from(u2) * f32x8::splat(std::f32::consts::TAU)).sin_cos();
        block[..8].copy_from_slice(&<[f32; 8]>::from(rho * cos));
        block[8..].copy_from_slice(&<[f32; 8]>::from(rho * sin));
    }
}

impl Generator {
    /// Draws the hidden weights (‖w‖ ≈ 2, bias ~ N(0, 0.25)) from the seed.
    pub fn new(cfg: GenConfig) -> Self {
        let mut rng = stream(cfg.seed, u64::MAX);
        let scale = 2.0 / (cfg.features.max(1) as f32).sqrt();
        let mut draw = || -> (Vec<f32>, f32) {
            let w = (0..cfg.features).map(|_| rng.sample::<f32, _>(StandardNormal) * scale).collect();
            (w, rng.sample::<f32, _>(StandardNormal) * 0.5)
        };
        let (w0, b0) = draw();
        let (w1, b1) = draw();
        Generator { cfg, weights: [w0, w1], bias: [b0, b1] }
    }

    /// The settings.
    pub fn config(&self) -> &GenConfig {
        &self.cfg
    }

    /// Hidden weights and bias in force at `row` (they change at `drift_at`).
    pub fn truth(&self, row: u64) -> (&[f32], f32) {
        let i = usize::from(self.cfg.drift_at.is_some_and(|d| row >= d));
        (&self.weights[i], self.bias[i])
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u64 {
        self.cfg.rows.div_ceil(CHUNK_ROWS as u64)
    }

    /// Fills chunk `k` column-major with stride [`CHUNK_ROWS`]: D feature columns then the
    /// label column (`out.len() == (D + 1) * CHUNK_ROWS`). Returns the rows in the chunk.
    ///
    /// Order of draws (part of what a seed means): features column by column (Box-Muller,
    /// 16 normals from 8 pairs of uniforms), then per row the label (and flip), then per cell
    /// the missing mask, then per row the duplicate choice. A duplicated row is a bitwise copy
    /// of an earlier row of the chunk, NaNs and label included.
    pub fn chunk(&self, k: u64, out: &mut [f32]) -> usize {
        let d = self.cfg.features;
        assert_eq!(out.len(), (d + 1) * CHUNK_ROWS, "chunk buffer size");
        let first = k * CHUNK_ROWS as u64;
        let rows = (self.cfg.rows.saturating_sub(first)).min(CHUNK_ROWS as u64) as usize;
        let mut rng = stream(self.cfg.seed, k);
        let (features, labels) = out.split_at_mut(d * CHUNK_ROWS);
        for col in features.chunks_exact_mut(CHUNK_ROWS) {
            normals(&mut rng, col);
        }
        // Margins by column-wise AXPY, split where the hidden weights change.
        let split = match self.cfg.drift_at {
            Some(at) if at > first => ((at - first) as usize).min(rows),
            Some(_) => 0,
            None => rows,
        };
        for (range, i) in [(0..split, 0), (split..rows, 1)] {
            let m = &mut labels[range.clone()];
            m.fill(self.bias[i]);
            for (j, col) in features.chunks_exact(CHUNK_ROWS).enumerate() {
                crate::kernel::axpy(self.weights[i][j], &col[range.clone()], m);
            }
        }
        for y in labels[..rows].iter_mut() {
            let margin = *y;
            *y = match self.cfg.task {
                Task::Classification => {
                    let p = 1.0 / (1.0 + (-margin).exp());
                    let pos = rng.random::<f32>() < p;
                    let flip = self.cfg.noise > 0.0 && rng.random::<f32>() < self.cfg.noise;
                    if pos != flip {
                        1.0
                    } else {
                        0.0
                    }
                }
                Task::Regression => margin + self.cfg.noise * rng.sample::<f32, _>(StandardNormal),
            };
        }
        if self.cfg.missing_rate > 0.0 {
            for col in features.chunks_exact_mut(CHUNK_ROWS) {
                for x in &mut col[..rows] {
                    if rng.random::<f32>() < self.cfg.missing_rate {
                        *x = f32::NAN;
                    }
                }
            }
        }
        if self.cfg.duplicate_rate > 0.0 {
            for r in 1..rows {
                if rng.random::<f32>() < self.cfg.duplicate_rate {
                    let src = r - 1 - rng.random_range(0..r.min(16));
                    for col in out.chunks_exact_mut(CHUNK_ROWS) {
                        col[r] = col[src];
                    }
                }
            }
        }
        rows
    }

    /// Generates chunks `ks` in parallel (rayon) into `bufs`, one buffer per chunk.
    pub fn chunks_par(&self, ks: std::ops::Range<u64>, bufs: &mut [Vec<f32>]) -> Vec<usize> {
        use rayon::prelude::*;
        let d = self.cfg.features;
        bufs.par_iter_mut()
            .enumerate()
            .take(ks.end.saturating_sub(ks.start) as usize)
            .map(|(i, buf)| {
                buf.resize((d + 1) * CHUNK_ROWS, 0.0);
                self.chunk(ks.start + i as u64, buf)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(task: Task) -> GenConfig {
        GenConfig { task, rows: 3000, features: 5, seed: 7, noise: 0.0, missing_rate: 0.0, duplicate_rate: 0.0, drift_at: None }
    }

    #[test]
    fn deterministic_and_seed_sensitive() {
        let (a, b) = (Generator::new(cfg(Task::Classification)), Generator::new(cfg(Task::Classification)));
        let (mut x, mut y) = (vec![0.0; 6 * CHUNK_ROWS], vec![0.0; 6 * CHUNK_ROWS]);
        assert_eq!(a.chunk(2, &mut x), 3000 - 2048);
        b.chunk(2, &mut y);
        assert_eq!(bytemuck::cast_slice::<f32, u32>(&x), bytemuck::cast_slice::<f32, u32>(&y));
        let c = Generator::new(GenConfig { seed: 8, ..cfg(Task::Classification) });
        c.chunk(2, &mut y);
        assert_ne!(x, y);
    }

    #[test]
    fn labels_follow_the_link() {
        let g = Generator::new(GenConfig { rows: 1024, ..cfg(Task::Classification) });
        let mut x = vec![0.0; 6 * CHUNK_ROWS];
        g.chunk(0, &mut x);
        let labels = &x[5 * CHUNK_ROWS..];
        assert!(labels.iter().all(|&y| y == 0.0 || y == 1.0));
        // The true margin predicts the label far better than chance.
        let (w, b) = g.truth(0);
        let correct =
            (0..1024).filter(|&r| ((0..5).map(|j| w[j] * x[j * CHUNK_ROWS + r]).sum::<f32>() + b > 0.0) == (labels[r] == 1.0)).count();
        assert!(correct > 700, "{correct}");
    }

    #[test]
    fn missing_duplicates_and_drift() {
        let g = Generator::new(GenConfig { missing_rate: 0.1, duplicate_rate: 0.1, drift_at: Some(500), ..cfg(Task::Regression) });
        let mut x = vec![0.0; 6 * CHUNK_ROWS];
        g.chunk(0, &mut x);
        let nan = x[..5 * CHUNK_ROWS].iter().filter(|v| v.is_nan()).count();
        assert!((300..700).contains(&nan), "{nan}");
        assert_ne!(g.truth(499).0, g.truth(500).0);
        let dups = (1..CHUNK_ROWS)
            .filter(|&r| (0..r).rev().take(16).any(|s| (0..6).all(|j| x[j * CHUNK_ROWS + r].to_bits() == x[j * CHUNK_ROWS + s].to_bits())))
            .count();
        assert!((50..160).contains(&dups), "{dups}");
    }
}
