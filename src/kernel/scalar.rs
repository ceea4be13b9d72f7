//! The specification of every kernel: plain loops, no `unsafe`, no lanes.

use super::{BatchScore, ColumnMap, Columns, Fold, Moments, Predictor};
use crate::batch::{skipped, SkipMask};
use crate::loss::Loss;

/// `Σ a[i]·b[i]`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y[i] += alpha·x[i]`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `out[r] = bias + Σ_j w[j]·col_j[r]`.
pub fn predict_block(cols: &Columns<'_>, w: &[f32], bias: f32, out: &mut [f32]) {
    predict_with(cols, w, bias, out, |_, x| x)
}

/// `out[r] = bias + Σ_j w[j]·(f.value(j, x[r][j]) − f.a[j])`.
pub fn predict_block_folded(cols: &Columns<'_>, f: &Fold, w: &[f32], bias: f32, out: &mut [f32]) {
    assert_eq!(f.a.len(), cols.d, "fold width");
    predict_with(cols, w, bias, out, |j, x| f.value(j, x) - f.a[j])
}

/// `out[r] = bias + Σ_j w[j]·v(j, x[r][j])`.
fn predict_with(cols: &Columns<'_>, w: &[f32], bias: f32, out: &mut [f32], v: impl Fn(usize, f32) -> f32) {
    assert_eq!((w.len(), out.len()), (cols.d, cols.n));
    out.fill(bias);
    for (j, &wj) in w.iter().enumerate() {
        for (o, &x) in out.iter_mut().zip(cols.col(j)) {
            *o += wj * v(j, x);
        }
    }
}

/// `g[j] = Σ_r c[r]·x[r][j]`, `h[j] = Σ_r (c[r]·x[r][j])²`, and, when asked,
/// `m[j] = max_r |x[r][j]|`.
pub fn gradient_block(cols: &Columns<'_>, c: &[f32], g: &mut [f32], h: &mut [f32], m: Option<&mut [f32]>) {
    gradient_with(cols, c, g, h, m, |_, x| x)
}

/// The same of `u = f.value(j, x[r][j]) − f.a[j]`; with `sums`, where the fold neither clamps
/// nor imputes (`u` is then the value shifted by `a[j]`), each column's moments of all its
/// values shifted by `a[j]` (NaN sums where a value is NaN; no extremes), else none.
pub fn gradient_block_folded(
    cols: &Columns<'_>,
    f: &Fold,
    c: &[f32],
    g: &mut [f32],
    h: &mut [f32],
    m: Option<&mut [f32]>,
    sums: Option<&mut Vec<Moments>>,
) {
    assert_eq!(f.a.len(), cols.d, "fold width");
    gradient_with(cols, c, g, h, m, |j, x| f.value(j, x) - f.a[j]);
    if let Some(sums) = sums {
        sums.clear();
        if !f.clamp && !f.impute {
            sums.extend(f.a.iter().enumerate().map(|(j, &a)| {
                let (s, q) = shifted_sums(cols.col(j), a);
                Moments { n: cols.n as f64, s, q, ..Moments::empty(a) }
            }));
        }
    }
}

/// `g[j] = Σ_r c[r]·u`, `h[j] = Σ_r (c[r]·u)²`, `m[j] = max_r |u|` with `u = v(j, x[r][j])`.
fn gradient_with(cols: &Columns<'_>, c: &[f32], g: &mut [f32], h: &mut [f32], mut m: Option<&mut [f32]>, v: impl Fn(usize, f32) -> f32) {
    assert_eq!((c.len(), g.len(), h.len()), (cols.n, cols.d, cols.d));
    assert!(m.as_ref().is_none_or(|m| m.len() == cols.d));
    for j in 0..cols.d {
        let (mut gs, mut hs, mut ms) = (0.0f32, 0.0f32, 0.0f32);
        for (&x, &cr) in cols.col(j).iter().zip(c) {
            let u = v(j, x);
            let t = cr * u;
            gs += t;
            hs += t * t;
            ms = ms.max(u.abs());
        }
        g[j] = gs;
        h[j] = hs;
        if let Some(m) = m.as_deref_mut() {
            m[j] = ms;
        }
    }
}

/// Scores a batch: `c[r] = w[r]·loss'(p[r], y[r])` and the sums of [`BatchScore`].
pub fn score_batch(loss: &Loss, p: &[f32], y: &[f32], w: Option<&[f32]>, c: &mut [f32]) -> BatchScore {
    assert!(y.len() == p.len() && c.len() == p.len() && w.is_none_or(|w| w.len() == p.len()));
    let mut s = BatchScore::default();
    for r in 0..p.len() {
        let wr = w.map_or(1.0, |w| w[r]);
        let (pr, yr) = (p[r], y[r]);
        let (l, d) = loss.eval(pr, yr);
        let cr = wr * d;
        c[r] = cr;
        s.loss += wr * l;
        s.correct += if (pr > 0.0) == (yr > 0.0) { wr } else { 0.0 };
        s.sq_err += wr * (pr - yr) * (pr - yr);
        s.c_sum += cr;
        s.c_sq += cr * cr;
        s.n_w += wr;
    }
    s
}

/// The feature stage's column pass: f64 sums, one value at a time.
pub fn column_pass(xs: &[f32], shift: f32, mut map: Option<(&ColumnMap, &mut [f32])>) -> Moments {
    let mut m = Moments::empty(shift);
    for (i, &x) in xs.iter().enumerate() {
        if let Some((f, out)) = map.as_mut() {
            out[i] = f.apply(x);
        }
        m.add(x);
    }
    m
}

/// Rows hashed together by [`row_hashes`] (fixed-length inner loops the compiler vectorises).
const HASH_ROWS: usize = 64;

/// Each row's 64-bit fingerprint (see `dedup`): two 32-bit multiply–xorshift chains over the
/// bit patterns of the features then the label, each finalised as MurmurHash3's `fmix32`.
/// Column-wise over up to 64 rows at a time (the AVX2 twin is part of its `scan`); appended to
/// `out`.
pub fn row_hashes(cols: &Columns<'_>, labels: &[f32], out: &mut Vec<u64>) {
    assert_eq!(labels.len(), cols.n, "one label per row");
    let fmix = |mut h: u32| {
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    };
    let mut r0 = 0;
    while r0 < cols.n {
        let m = HASH_ROWS.min(cols.n - r0);
        let (mut a, mut b) = ([0x9e37_79b9u32; HASH_ROWS], [0x7f4a_7c15u32; HASH_ROWS]);
        let mut mix = |xs: &[f32]| {
            for ((a, b), x) in a.iter_mut().zip(b.iter_mut()).zip(xs) {
                let x = x.to_bits();
                let h = (*a ^ x).wrapping_mul(0xcc9e_2d51);
                *a = h ^ (h >> 15);
                let h = b.wrapping_add(x).wrapping_mul(0x1b87_3593);
                *b = h ^ (h >> 13);
            }
        };
        for j in 0..cols.d {
            mix(&cols.col(j)[r0..r0 + m]);
        }
        mix(&labels[r0..r0 + m]);
        out.extend(a[..m].iter().zip(&b[..m]).map(|(&a, &b)| (fmix(a) as u64) << 32 | fmix(b) as u64));
        r0 += m;
    }
}

/// The batch scan ([`super::scan`]): each row's fingerprint ([`row_hashes`]) when `hashes`, and
/// with `sums` each column's sums over all its values shifted by `shifts[j]`, in f64 — `n` is
/// the row count and `s`, `q` are NaN when a value is NaN; the extremes are not computed.
pub fn scan(cols: &Columns<'_>, labels: &[f32], hashes: Option<&mut Vec<u64>>, sums: Option<(&[f32], &mut Vec<Moments>)>) {
    if let Some(out) = hashes {
        out.clear();
        row_hashes(cols, labels, out);
    }
    if let Some((shifts, out)) = sums {
        assert_eq!(shifts.len(), cols.d, "one shift per column");
        out.clear();
        out.extend(shifts.iter().enumerate().map(|(j, &shift)| {
            let (s, q) = shifted_sums(cols.col(j), shift);
            Moments { n: cols.n as f64, s, q, ..Moments::empty(shift) }
        }));
    }
}

/// [`predict_block`] or [`predict_block_folded`] (through `p.fold`), then the fingerprints of
/// [`scan`] and each column's [`column_pass`] moments without the extremes: what the fast
/// twins compute in one read of the rows.
pub fn predict_scan(
    cols: &Columns<'_>,
    p: &Predictor<'_>,
    out: &mut [f32],
    labels: &[f32],
    hashes: Option<&mut Vec<u64>>,
    sums: Option<(&[f32], &mut Vec<Moments>)>,
) {
    match p.fold {
        Some(f) => predict_block_folded(cols, f, p.w, p.bias, out),
        None => predict_block(cols, p.w, p.bias, out),
    }
    scan(cols, labels, hashes, None);
    if let Some((shifts, out)) = sums {
        assert_eq!(shifts.len(), cols.d, "one shift per column");
        out.clear();
        out.extend((0..cols.d).map(|j| Moments { lo: f32::INFINITY, hi: f32::NEG_INFINITY, ..column_pass(cols.col(j), shifts[j], None) }));
    }
}

/// Writes the values of `xs` whose rows `skip` does not mark (bit `r` of the mask: row `r`),
/// in order, to the start of `out`; returns how many. `out` must have room for them; values
/// past them are left as they were.
pub fn compact(xs: &[f32], skip: &SkipMask, out: &mut [f32]) -> usize {
    let mut m = 0;
    for (r, &x) in xs.iter().enumerate() {
        if !skipped(skip, r) {
            out[m] = x;
            m += 1;
        }
    }
    m
}

/// `Σ (x − shift)` and `Σ (x − shift)²` in f64, NaN when a value is NaN.
pub fn shifted_sums(xs: &[f32], shift: f32) -> (f64, f64) {
    xs.iter().fold((0.0, 0.0), |(s, q), &x| {
        let v = (x - shift) as f64;
        (s + v, q + v * v)
    })
}

/// Row-major `rows` of `d` values into columns `stride` apart: value `j` of row `r` to
/// `cols[j·stride + r]`.
pub fn transpose(rows: &[f32], d: usize, cols: &mut [f32], stride: usize) {
    for (r, x) in rows.chunks_exact(d).enumerate() {
        for (j, &v) in x.iter().enumerate() {
            cols[j * stride + r] = v;
        }
    }
}
