//! The numeric kernels of learning, in three twins with one contract:
//!
//! - [`scalar`]: the specification — plain loops, obviously correct;
//! - [`simd`]: `wide::f32x8`, portable; `wide` picks its instructions at *compile* time, so in a
//!   default x86-64 build this is SSE2 (two 4-lane halves per f32x8);
//! - [`avx2`] (x86-64 only): AVX2 + FMA intrinsics, compiled with `#[target_feature]` and
//!   chosen at *run* time when the CPU has both.
//!
//! The choice is made once per process ([`isa`]): AVX2+FMA when detected, else the portable
//! twin. So a plain `cargo build --release` binary runs on any x86-64 and still uses 256-bit FMA
//! on this machine. `STREAMSGD_ISA=scalar|portable|avx2` forces a twin (benchmarks, tests).
//!
//! Column views: a block stores feature `j` at `data[j*stride ..]`; the kernels work on rows
//! `r0 .. r0+n` of every column ([`Columns`]).

pub mod scalar;
pub mod simd;
pub mod sparse;

#[cfg(target_arch = "x86_64")]
pub mod avx2;

use crate::batch::SkipMask;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set twin of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    /// The scalar specification.
    Scalar,
    /// `wide` f32x8, compile-time instruction choice.
    Portable,
    /// AVX2 + FMA intrinsics (x86-64, detected at run time).
    Avx2,
}

impl Isa {
    /// The best twin this CPU can run.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("popcnt")
        {
            return Isa::Avx2;
        }
        Isa::Portable
    }

    /// Whether this CPU can run the twin.
    pub fn available(self) -> bool {
        self != Isa::Avx2 || Isa::detect() == Isa::Avx2
    }
}

/// 0 = not chosen yet, else `1 + Isa as u8`.
static ISA: AtomicU8 = AtomicU8::new(0);

const ISAS: [Isa; 3] = [Isa::Scalar, Isa::Portable, Isa::Avx2];

/// The twin in use: `STREAMSGD_ISA=scalar|portable|avx2` if set (and runnable here), else
/// [`Isa::detect`]. Chosen on first use; one relaxed atomic load afterwards.
#[inline(always)]
pub fn isa() -> Isa {
    match ISA.load(Ordering::Relaxed) {
        0 => choose_isa(),
        k => ISAS[(k - 1) as usize],
    }
}

#[cold]
fn choose_isa() -> Isa {
    let forced = match std::env::var("STREAMSGD_ISA").as_deref() {
        Ok("scalar") => Some(Isa::Scalar),
        Ok("portable") => Some(Isa::Portable),
        Ok("avx2") => Some(Isa::Avx2),
        _ => None,
    };
    let chosen = forced.filter(|i| i.available()).unwrap_or_else(Isa::detect);
    force_isa(chosen);
    chosen
}

/// Switches every later kernel call to `isa` (benchmarks comparing twins in one run).
/// Returns false, changing nothing, when this CPU cannot run it.
pub fn force_isa(isa: Isa) -> bool {
    if !isa.available() {
        return false;
    }
    ISA.store(1 + isa as u8, Ordering::Relaxed);
    true
}

/// Rows `r0 .. r0+n` of the `d` columns of a column-major block.
#[derive(Clone, Copy, Debug)]
pub struct Columns<'a> {
    /// All columns, column `j` starting at `j * stride`.
    pub data: &'a [f32],
    /// Column stride (values).
    pub stride: usize,
    /// Number of columns.
    pub d: usize,
    /// First row.
    pub r0: usize,
    /// Number of rows.
    pub n: usize,
}

impl<'a> Columns<'a> {
    /// A view; panics unless every column holds rows `r0 .. r0+n`.
    pub fn new(data: &'a [f32], stride: usize, d: usize, r0: usize, n: usize) -> Self {
        assert!(r0 + n <= stride || n == 0, "rows {r0}+{n} exceed the stride {stride}");
        assert!(d == 0 || (d - 1) * stride + r0 + n <= data.len(), "columns exceed the data");
        Columns { data, stride, d, r0, n }
    }

    /// Column `j`, rows `r0 .. r0+n`.
    #[inline]
    pub fn col(&self, j: usize) -> &'a [f32] {
        let s = j * self.stride + self.r0;
        &self.data[s..s + self.n]
    }
}

/// Sums over one scored mini-batch (f32 within a batch; callers accumulate batches in f64).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchScore {
    /// Σ w·loss(p, y).
    pub loss: f32,
    /// Σ w over rows classified correctly ((p > 0) == (y > 0)).
    pub correct: f32,
    /// Σ w·(p − y)².
    pub sq_err: f32,
    /// Σ c (the bias gradient).
    pub c_sum: f32,
    /// Σ c².
    pub c_sq: f32,
    /// Σ w.
    pub n_w: f32,
}

/// Scores a batch of margins `p` against converted labels `y` (weights `w`, or 1): writes the
/// per-row gradient coefficients `c[r] = w·∂loss/∂p` and returns the sums.
#[inline]
pub fn score_batch(loss: &crate::loss::Loss, p: &[f32], y: &[f32], w: Option<&[f32]>, c: &mut [f32]) -> BatchScore {
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::score_batch(loss, p, y, w, c) },
        Isa::Portable => simd::score_batch(loss, p, y, w, c),
        _ => scalar::score_batch(loss, p, y, w, c),
    }
}

/// `Σ a[i]·b[i]` (equal lengths).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::dot(a, b) },
        Isa::Portable => simd::dot(a, b),
        _ => scalar::dot(a, b),
    }
}

/// `y[i] += alpha·x[i]` (equal lengths).
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::axpy(alpha, x, y) },
        Isa::Portable => simd::axpy(alpha, x, y),
        _ => scalar::axpy(alpha, x, y),
    }
}

/// `out[r] = bias + Σ_j w[j]·col_j[r]` for the `n` rows (`out.len() == n`, `w.len() == d`).
#[inline]
pub fn predict_block(cols: &Columns<'_>, w: &[f32], bias: f32, out: &mut [f32]) {
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::predict_block(cols, w, bias, out) },
        Isa::Portable => simd::predict_block(cols, w, bias, out),
        _ => scalar::predict_block(cols, w, bias, out),
    }
}

/// `g[j] = Σ_r c[r]·col_j[r]` and `h[j] = Σ_r (c[r]·col_j[r])²` for every column: the gradient
/// of a mini-batch and the per-coordinate sum of squared per-row gradients (for adaptive steps);
/// with `m`, also `m[j] = max_r |col_j[r]|` (for normalized steps) in the same pass.
#[inline]
pub fn gradient_block(cols: &Columns<'_>, c: &[f32], g: &mut [f32], h: &mut [f32], m: Option<&mut [f32]>) {
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::gradient_block(cols, c, g, h, m) },
        Isa::Portable => simd::gradient_block(cols, c, g, h, m),
        _ => scalar::gradient_block(cols, c, g, h, m),
    }
}

/// Asks the CPU to start loading `xs` into cache (a hint: no effect on results), one 64-byte
/// line at a time. A column of a block is one 4 KiB page, where hardware prefetchers stop; a
/// pass that reads columns one after another prefetches the next one while it works on the
/// current, and a pass of random lookups prefetches them all first.
#[inline]
pub fn prefetch<T>(xs: &[T]) {
    #[cfg(target_arch = "x86_64")]
    for line in xs.chunks((64 / std::mem::size_of::<T>()).max(1)) {
        // SAFETY: a prefetch is a hint that cannot fault or change memory; the address is that
        // of a live slice element.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = xs;
}

/// The feature stage folded into the learner's kernels (no transformed copy of the data): the
/// raw value `x` of column `j` becomes `v = x`, or `fill[j]` where `x` is NaN (when `impute`),
/// clamped to `[lo[j], hi[j]]`; the learner sees `(v − a[j])·b[j]`. The kernels work on the centred
/// `v − a[j]` (exact for a value near the offset, so no precision is lost to large means):
/// predictions use the weights `w[j]·b[j]`, and gradients are scaled by `b[j]` afterwards
/// (see `learner`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fold {
    /// Value of a NaN cell (NaN: none; the row's prediction is then NaN and it is rejected).
    pub fill: Vec<f32>,
    /// Lower clamp, in raw units (−∞: none).
    pub lo: Vec<f32>,
    /// Upper clamp, in raw units (+∞: none).
    pub hi: Vec<f32>,
    /// Offset.
    pub a: Vec<f32>,
    /// Scale.
    pub b: Vec<f32>,
    /// True when any clamp bound is finite (the kernels skip clamping otherwise).
    pub clamp: bool,
    /// True when NaN cells are replaced by `fill`; false keeps them NaN (the kernels then skip
    /// the replacement: for data known to have no NaN cell, or nothing to fill with).
    pub impute: bool,
}

impl Fold {
    /// The identity for `d` columns (NaN kept, no clamp, a = 0, b = 1).
    pub fn identity(d: usize) -> Self {
        Fold {
            fill: vec![f32::NAN; d],
            lo: vec![f32::NEG_INFINITY; d],
            hi: vec![f32::INFINITY; d],
            a: vec![0.0; d],
            b: vec![1.0; d],
            clamp: false,
            impute: false,
        }
    }

    /// The clamped, imputed raw value `v` of `x` in column `j` (the scalar reference; NaN
    /// passes the clamp unchanged).
    #[inline(always)]
    pub fn value(&self, j: usize, x: f32) -> f32 {
        let v = if self.impute && x.is_nan() { self.fill[j] } else { x };
        let v = if v < self.lo[j] { self.lo[j] } else { v };
        if v > self.hi[j] {
            self.hi[j]
        } else {
            v
        }
    }

    /// The value the learner sees: `(v − a)·b`.
    #[inline(always)]
    pub fn mapped(&self, j: usize, x: f32) -> f32 {
        (self.value(j, x) - self.a[j]) * self.b[j]
    }
}

/// [`predict_block`] on folded columns: `out[r] = bias + Σ_j w[j]·(f.value(j, col_j[r]) − a[j])`
/// (the caller passes the folded weights `w·b`). The portable build uses the scalar twin.
#[inline]
pub fn predict_block_folded(cols: &Columns<'_>, f: &Fold, w: &[f32], bias: f32, out: &mut [f32]) {
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::predict_block_folded(cols, f, w, bias, out) },
        _ => scalar::predict_block_folded(cols, f, w, bias, out),
    }
}

/// [`gradient_block`] on folded columns, of `u = f.value(j, x) − f.a[j]`: `g[j] = Σ c·u`,
/// `h[j] = Σ (c·u)²`, `m[j] = max |u|` (the caller scales by `b`). With `sums`, where the fold
/// neither clamps nor imputes, also each column's [`Moments`] of all its values shifted by
/// `a[j]` (the `u` themselves; NaN sums where a value is NaN, no extremes) — what a
/// standardising stage learns, read in the pass that learns the rows; else `sums` is left
/// empty. The portable build uses the scalar twin.
#[inline]
pub fn gradient_block_folded(
    cols: &Columns<'_>,
    f: &Fold,
    c: &[f32],
    g: &mut [f32],
    h: &mut [f32],
    m: Option<&mut [f32]>,
    sums: Option<&mut Vec<Moments>>,
) {
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::gradient_block_folded(cols, f, c, g, h, m, sums) },
        _ => scalar::gradient_block_folded(cols, f, c, g, h, m, sums),
    }
}

/// What a prediction pass predicts with: the learner's weights (the folded `w·b` when `fold`
/// is given) and its bias.
#[derive(Clone, Copy, Debug)]
pub struct Predictor<'a> {
    /// The feature stage folded into the kernel, if any.
    pub fold: Option<&'a Fold>,
    /// One weight per column.
    pub w: &'a [f32],
    /// The bias.
    pub bias: f32,
}

/// The learner's predict pass and the batch scan in one read of the rows: the margins of
/// [`predict_block`] (or [`predict_block_folded`] through `p.fold`) into `out`, and each row's
/// fingerprint (its features, then `labels`, as [`scan`] computes it) into `hashes`, and each
/// column's [`moments`] (its non-NaN values, shifted by the given shift; no extremes) into
/// `sums`. The portable build uses the scalar twin.
#[inline]
pub fn predict_scan(
    cols: &Columns<'_>,
    p: &Predictor<'_>,
    out: &mut [f32],
    labels: &[f32],
    hashes: Option<&mut Vec<u64>>,
    sums: Option<(&[f32], &mut Vec<Moments>)>,
) {
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::predict_scan(cols, p, out, labels, hashes, sums) },
        _ => scalar::predict_scan(cols, p, out, labels, hashes, sums),
    }
}

/// One column's transform coefficients (see `transform::Transform`): v = fill where x is
/// NaN, y = clamp((v − a)·b, −k, k), NaN kept when nothing imputes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColumnMap {
    /// Value for NaN cells (NaN: none).
    pub fill: f32,
    /// Offset.
    pub a: f32,
    /// Scale.
    pub b: f32,
    /// Clip bound.
    pub k: f32,
}

impl ColumnMap {
    /// The map of one value (the scalar reference).
    #[inline(always)]
    pub fn apply(&self, x: f32) -> f32 {
        let v = if x.is_nan() { self.fill } else { x };
        let y = ((v - self.a) * self.b).max(-self.k).min(self.k);
        if v.is_nan() {
            v
        } else {
            y
        }
    }
}

/// A batch's moments of the non-NaN values of one column, shifted by `shift` (so the f32 sums
/// of squares do not cancel).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moments {
    /// The shift.
    pub shift: f32,
    /// Non-NaN values.
    pub n: f64,
    /// Σ (x − shift).
    pub s: f64,
    /// Σ (x − shift)².
    pub q: f64,
    /// Smallest value (+∞ when none).
    pub lo: f32,
    /// Largest value (−∞ when none).
    pub hi: f32,
}

impl Moments {
    /// No values yet.
    pub fn empty(shift: f32) -> Self {
        Moments { shift, n: 0.0, s: 0.0, q: 0.0, lo: f32::INFINITY, hi: f32::NEG_INFINITY }
    }

    /// Adds the values `o` summed (with the same shift).
    pub fn absorb(&mut self, o: &Moments) {
        debug_assert_eq!(self.shift.to_bits(), o.shift.to_bits(), "moments of one shift");
        self.n += o.n;
        self.s += o.s;
        self.q += o.q;
        self.lo = self.lo.min(o.lo);
        self.hi = self.hi.max(o.hi);
    }

    /// Takes values out of the sums (NaNs skipped; the extremes are kept). Without a branch: a
    /// NaN adds zeros, which leave the sums bit for bit as they were (they start at +0 and
    /// can never become −0), where a branch on data with NaN cells was mispredicted.
    pub fn remove(&mut self, xs: impl IntoIterator<Item = f32>) {
        let (mut n, mut s, mut q) = (0.0, 0.0, 0.0);
        for x in xs {
            let ok = !x.is_nan();
            let v = if ok { (x - self.shift) as f64 } else { 0.0 };
            n += f64::from(u8::from(ok));
            s += v;
            q += v * v;
        }
        self.n -= n;
        self.s -= s;
        self.q -= q;
    }

    /// Adds one value (NaN skipped).
    #[inline(always)]
    pub fn add(&mut self, x: f32) {
        if !x.is_nan() {
            let v = (x - self.shift) as f64;
            self.n += 1.0;
            self.s += v;
            self.q += v * v;
            self.lo = self.lo.min(x);
            self.hi = self.hi.max(x);
        }
    }
}

/// The feature stage's column pass: the moments of `xs`'s non-NaN values and, with `map`, the
/// mapped values written to `out` (same length), reading the column once.
#[inline]
pub fn column_pass(xs: &[f32], shift: f32, map: Option<(&ColumnMap, &mut [f32])>) -> Moments {
    if let Some((_, out)) = &map {
        assert_eq!(out.len(), xs.len(), "output length");
    }
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::column_pass(xs, shift, map) },
        Isa::Portable => simd::column_pass(xs, shift, map),
        _ => scalar::column_pass(xs, shift, map),
    }
}

/// The moments of `xs`'s non-NaN values, shifted by `shift`; the extremes only when asked
/// (else `lo`/`hi` are ±∞): the feature stage's statistics pass when it is folded into the
/// learner (see `transform::Transform::fold`).
#[inline]
pub fn moments(xs: &[f32], shift: f32, extremes: bool) -> Moments {
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            if extremes {
                avx2::moments::<true>(xs, shift)
            } else {
                avx2::moments::<false>(xs, shift)
            }
        },
        isa => {
            let m = if isa == Isa::Portable { simd::column_pass(xs, shift, None) } else { scalar::column_pass(xs, shift, None) };
            if extremes {
                m
            } else {
                Moments { lo: f32::INFINITY, hi: f32::NEG_INFINITY, ..m }
            }
        }
    }
}

/// Writes the values of `xs` (at most a [`SkipMask`]'s rows) whose rows `skip` does not
/// mark, in order, to the start of `out`, which must have room for `xs.len() + 8` values (the
/// AVX2 twin stores 8 lanes at a time); returns how many. Values of `out` past them are
/// unspecified.
#[inline]
pub fn compact(xs: &[f32], skip: &SkipMask, out: &mut [f32]) -> usize {
    assert!(xs.len() <= skip.len() * 64 && out.len() >= xs.len() + 8, "a mask's rows, and room for them");
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2, FMA and POPCNT.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::compact(xs, skip, out) },
        _ => scalar::compact(xs, skip, out),
    }
}

/// Row-major `rows` of `d` values into columns `stride` apart in `cols`: value `j` of row `r`
/// to `cols[j·stride + r]` (a program's rows into the learner's layout).
pub fn transpose(rows: &[f32], d: usize, cols: &mut [f32], stride: usize) {
    let n = rows.len() / d.max(1);
    assert!(d > 0 && rows.len() == n * d && stride >= n && cols.len() >= (d - 1) * stride + n, "whole rows, and room for their columns");
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::transpose(rows, d, cols, stride) },
        _ => scalar::transpose(rows, d, cols, stride),
    }
}

/// A batch's column sums from [`scan`], with the scan's scratch (kept between batches, so a
/// warm pipeline allocates nothing).
#[derive(Clone, Debug, Default)]
pub struct ColumnSums {
    /// Per column, its sums as [`Moments`] (see [`scan`]).
    pub moments: Vec<Moments>,
    /// Per column, the AVX2 pass's partial sums in lanes: 8 of Σ(x − shift), then 8 of
    /// Σ(x − shift)².
    lanes: Vec<f32>,
}

/// One read of a batch for the stages before the learner: each row's 64-bit fingerprint over
/// its features and label into `hashes` (see `dedup`), and each column's sums shifted by
/// `shifts[j]` into `sums.moments` as [`Moments`] of all its values — `n` is the row count, and
/// `s`, `q` are NaN when a value is NaN (the caller then takes [`moments`] of that column); the
/// extremes are not computed. Reading the batch once for both also brings it into this core's
/// cache for the learner.
#[inline]
pub fn scan(cols: &Columns<'_>, labels: &[f32], hashes: Option<&mut Vec<u64>>, sums: Option<(&[f32], &mut ColumnSums)>) {
    match isa() {
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::scan(cols, labels, hashes, sums.map(|(k, s)| (k, &mut s.moments, &mut s.lanes))) },
        _ => scalar::scan(cols, labels, hashes, sums.map(|(k, s)| (k, &mut s.moments))),
    }
}
