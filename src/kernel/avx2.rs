//! The AVX2 + FMA twin, raw intrinsics, selected at run time by [`super::isa`].
//!
//! Every function is `unsafe` for one reason only: the caller must have checked that the CPU
//! supports AVX2 and FMA. Memory accesses are bounds-checked by slicing before any load; loads
//! and stores are unaligned-tolerant (`loadu`/`storeu`), so alignment is a speed matter only.

use super::{BatchScore, ColumnMap, Columns, Fold, Moments, Predictor};
use crate::batch::SkipMask;
use crate::loss::Loss;
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn load(s: &[f32]) -> __m256 {
    let s = &s[..8];
    // SAFETY: `s` has 8 valid f32 (sliced above); `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

#[inline(always)]
unsafe fn store(s: &mut [f32], v: __m256) {
    let s = &mut s[..8];
    // SAFETY: `s` has 8 writable f32 (sliced above); `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: register-only AVX operations; the caller guarantees AVX.
    unsafe {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps::<0b01>(d, d)))
    }
}

/// The largest of `v`'s lanes, all +0 or more but for NaN ones, which are left out: as
/// `f32::max` folds them from 0.
///
/// # Safety
/// The CPU must support AVX.
#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    // SAFETY: register-only AVX operations; the caller guarantees AVX.
    unsafe {
        let v = _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_ORD_Q>(v, v));
        let q = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let d = _mm_max_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_max_ss(d, _mm_shuffle_ps::<0b01>(d, d)))
    }
}

/// `Σ a[i]·b[i]`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: every load is of an 8-element subslice (bounds-checked); AVX2/FMA by contract.
    unsafe {
        let n32 = a.len() / 32 * 32;
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..n32).step_by(32) {
            for (k, s) in acc.iter_mut().enumerate() {
                *s = _mm256_fmadd_ps(load(&a[i + 8 * k..]), load(&b[i + 8 * k..]), *s);
            }
        }
        let mut i = n32;
        while i + 8 <= a.len() {
            acc[0] = _mm256_fmadd_ps(load(&a[i..]), load(&b[i..]), acc[0]);
            i += 8;
        }
        let tail: f32 = a[i..].iter().zip(&b[i..]).map(|(x, y)| x * y).sum();
        hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) + tail
    }
}

/// `y[i] += alpha·x[i]`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    // SAFETY: every load/store is of an 8-element subslice (bounds-checked); AVX2/FMA by contract.
    unsafe {
        let a = _mm256_set1_ps(alpha);
        let n8 = x.len() / 8 * 8;
        for i in (0..n8).step_by(8) {
            let r = _mm256_fmadd_ps(load(&x[i..]), a, load(&y[i..]));
            store(&mut y[i..], r);
        }
        for i in n8..x.len() {
            y[i] += alpha * x[i];
        }
    }
}

/// `out[r] = bias + Σ_j w[j]·col_j[r]`: column-wise AXPY into `out`, four columns per pass
/// (four sequential streams: prefetch-friendly, and no L1 set conflicts between the
/// power-of-two-strided columns of a block).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn predict_block(cols: &Columns<'_>, w: &[f32], bias: f32, out: &mut [f32]) {
    // SAFETY: AVX2 and FMA by the caller's contract.
    unsafe { predict::<false, false, false, false, false>(cols, None, w, bias, out, ScanOut::none()) }
}

/// [`predict_block`] on folded columns ([`Fold`]): each column's 8 lanes are imputed (a blend on
/// the NaN mask), clamped when a bound is finite, and centred, before the same FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn predict_block_folded(cols: &Columns<'_>, f: &Fold, w: &[f32], bias: f32, out: &mut [f32]) {
    assert_eq!(f.a.len(), cols.d, "fold width");
    // SAFETY: AVX2 and FMA by the caller's contract.
    unsafe {
        match (f.clamp, f.impute) {
            (true, true) => predict::<true, true, true, false, false>(cols, Some(f), w, bias, out, ScanOut::none()),
            (true, false) => predict::<true, true, false, false, false>(cols, Some(f), w, bias, out, ScanOut::none()),
            (false, true) => predict::<true, false, true, false, false>(cols, Some(f), w, bias, out, ScanOut::none()),
            (false, false) => predict::<true, false, false, false, false>(cols, Some(f), w, bias, out, ScanOut::none()),
        }
    }
}

/// [`super::predict_scan`]: the margins of [`predict_block`] (or [`predict_block_folded`]
/// through `p.fold`), bit for bit, and in the same read of the rows their fingerprints
/// (bit-identical to [`super::scalar::row_hashes`]) and the columns' moments ([`moments`]).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn predict_scan(
    cols: &Columns<'_>,
    p: &Predictor<'_>,
    out: &mut [f32],
    labels: &[f32],
    hashes: Option<&mut Vec<u64>>,
    sums: Option<(&[f32], &mut Vec<Moments>)>,
) {
    let (h, (shifts, m)) = (hashes.is_some(), sums.map_or((&[][..], None), |(k, m)| (k, Some(m))));
    let s = ScanOut { labels, hashes, shifts, sums: m };
    let (f, w, bias) = (p.fold, p.w, p.bias);
    // SAFETY: AVX2 and FMA by the caller's contract.
    unsafe {
        macro_rules! scans {
            ($fold:literal, $clamp:literal, $impute:literal) => {
                match (h, s.sums.is_some()) {
                    (true, true) => predict::<$fold, $clamp, $impute, true, true>(cols, f, w, bias, out, s),
                    (true, false) => predict::<$fold, $clamp, $impute, true, false>(cols, f, w, bias, out, s),
                    (false, true) => predict::<$fold, $clamp, $impute, false, true>(cols, f, w, bias, out, s),
                    (false, false) => predict::<$fold, $clamp, $impute, false, false>(cols, f, w, bias, out, s),
                }
            };
        }
        match f.map(|f| (f.clamp, f.impute)) {
            None => scans!(false, false, false),
            Some((true, true)) => scans!(true, true, true),
            Some((true, false)) => scans!(true, true, false),
            Some((false, true)) => scans!(true, false, true),
            Some((false, false)) => scans!(true, false, false),
        }
    }
}

/// Column `j`'s fold in lanes: fill, lo, hi, a.
#[derive(Clone, Copy)]
struct FoldLanes([__m256; 4]);

impl FoldLanes {
    /// # Safety
    /// The CPU must support AVX.
    #[inline(always)]
    unsafe fn new<const FOLD: bool>(f: Option<&Fold>, j: usize) -> Self {
        // SAFETY: register-only AVX operations; the caller guarantees AVX.
        unsafe {
            match f.filter(|_| FOLD) {
                Some(f) => FoldLanes([f.fill[j], f.lo[j], f.hi[j], f.a[j]].map(|v| _mm256_set1_ps(v))),
                None => FoldLanes([_mm256_setzero_ps(); 4]),
            }
        }
    }

    /// `Fold::value` on 8 lanes (the identity unless `FOLD`): `max(lo, v)` then `min(hi, v)`
    /// return `v` itself when equal or NaN, as the scalar clamp.
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[inline(always)]
    unsafe fn value<const FOLD: bool, const CLAMP: bool, const IMPUTE: bool>(self, x: __m256) -> __m256 {
        if !FOLD {
            return x;
        }
        let [fill, lo, hi, _] = self.0;
        // SAFETY: register-only AVX operations; the caller guarantees AVX.
        unsafe {
            let v = if IMPUTE { _mm256_blendv_ps(fill, x, _mm256_cmp_ps::<_CMP_ORD_Q>(x, x)) } else { x };
            if CLAMP {
                _mm256_min_ps(hi, _mm256_max_ps(lo, v))
            } else {
                v
            }
        }
    }

    /// The gradient's `u = value − a` (the value itself unless `FOLD`).
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[inline(always)]
    unsafe fn centred<const FOLD: bool, const CLAMP: bool, const IMPUTE: bool>(self, x: __m256) -> __m256 {
        // SAFETY: register-only AVX operations; the caller guarantees AVX.
        unsafe {
            if FOLD {
                _mm256_sub_ps(self.value::<FOLD, CLAMP, IMPUTE>(x), self.0[3])
            } else {
                x
            }
        }
    }
}

/// The scalar form of [`FoldLanes::centred`] for the rows past the last multiple of 8.
#[inline(always)]
fn fold_centred<const FOLD: bool>(f: Option<&Fold>, j: usize, x: f32) -> f32 {
    match f.filter(|_| FOLD) {
        Some(f) => f.value(j, x) - f.a[j],
        None => x,
    }
}

/// What a prediction pass also computes in its one read of the rows ([`predict_scan`]): the
/// rows' fingerprints (features, then `labels`) into `hashes`, the moments of the columns'
/// non-NaN values shifted by `shifts` into `sums`; each only when the pass's `HASH` / `SUMS`
/// asks.
struct ScanOut<'s> {
    labels: &'s [f32],
    hashes: Option<&'s mut Vec<u64>>,
    shifts: &'s [f32],
    sums: Option<&'s mut Vec<Moments>>,
}

impl ScanOut<'_> {
    /// Nothing besides the margins.
    fn none() -> Self {
        ScanOut { labels: &[], hashes: None, shifts: &[], sums: None }
    }
}

/// The body of [`predict_block`], [`predict_block_folded`] and [`predict_scan`]: column-wise
/// FMAs into `out`, four columns per pass; with `HASH`, the rows' two hash chains advanced by
/// the same loads (8 rows' state kept in their 8 fingerprint slots of `hashes`, a then b),
/// with `SUMS` each column's moments.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn predict<const FOLD: bool, const CLAMP: bool, const IMPUTE: bool, const HASH: bool, const SUMS: bool>(
    cols: &Columns<'_>,
    f: Option<&Fold>,
    w: &[f32],
    bias: f32,
    out: &mut [f32],
    s: ScanOut<'_>,
) {
    assert_eq!((w.len(), out.len()), (cols.d, cols.n));
    assert!(!HASH || s.labels.len() == cols.n, "one label per row");
    assert!(!SUMS || s.shifts.len() == cols.d, "one shift per column");
    let n = cols.n;
    let n8 = n / 8 * 8;
    out.fill(bias);
    let (mut no_hashes, mut no_sums) = (Vec::new(), Vec::new());
    let hashes = s.hashes.unwrap_or(&mut no_hashes);
    let sums = s.sums.unwrap_or(&mut no_sums);
    // Rows past the last multiple of 8, hashed by the scalar specification.
    let tail = Columns::new(cols.data, cols.stride, cols.d, cols.r0 + n8, n - n8);
    // A column's moments, read again while it is in L1 (in the FMA loop their dependency
    // chains measured slower than a second read).
    // SAFETY: AVX2 and FMA by the caller's contract.
    let push_sums = |sums: &mut Vec<Moments>, j: usize, xs: &[f32]| sums.push(unsafe { moments::<false>(xs, s.shifts[j]) });
    // SAFETY: every load/store is of an 8-element subslice (bounds-checked); AVX2/FMA by contract.
    unsafe {
        if HASH {
            // Every slot is seeded below: no zeroing first (the last call's n rows are cut).
            hashes.resize(n8, 0);
            for g in hashes.chunks_exact_mut(8) {
                store_chains(g, CHAIN_SEEDS.map(|v| _mm256_set1_epi32(v as i32)));
            }
        }
        if SUMS {
            sums.clear();
        }
        let mut j = 0;
        while j + 4 <= cols.d {
            let c = [cols.col(j), cols.col(j + 1), cols.col(j + 2), cols.col(j + 3)];
            let (w0, w1, w2, w3) = (_mm256_set1_ps(w[j]), _mm256_set1_ps(w[j + 1]), _mm256_set1_ps(w[j + 2]), _mm256_set1_ps(w[j + 3]));
            let fl: [FoldLanes; 4] = std::array::from_fn(|i| FoldLanes::new::<FOLD>(f, j + i));
            let v = |i: usize, x: __m256| fl[i].centred::<FOLD, CLAMP, IMPUTE>(x);
            // The loop reads and writes through pointers: bounds checks and reloads of the
            // slices' lengths were a fifth of its instructions.
            let ahead = prefetch_ahead(cols, j).map(|a| a.as_ptr());
            let xp = c.map(|c| c[..n8].as_ptr());
            let op = out[..n8].as_mut_ptr();
            let hp = if HASH { hashes[..n8].as_mut_ptr() } else { std::ptr::null_mut() };
            for r in (0..n8).step_by(8) {
                // SAFETY: `r + 8 ≤ n8`, and every pointer but `ahead`'s is to at least `n8`
                // values (sliced above; `hp` only with `HASH`, and its 8 slots at `r` are
                // reached through nothing else while their slice lives); a prefetch is a hint,
                // valid for any address.
                if r % 16 == 0 {
                    for a in ahead {
                        _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(r).cast());
                    }
                }
                let x = xp.map(|p| _mm256_loadu_ps(p.add(r)));
                let a = _mm256_fmadd_ps(v(0, x[0]), w0, _mm256_loadu_ps(op.add(r)));
                let b = _mm256_mul_ps(v(1, x[1]), w1);
                let a = _mm256_fmadd_ps(v(2, x[2]), w2, a);
                let b = _mm256_fmadd_ps(v(3, x[3]), w3, b);
                _mm256_storeu_ps(op.add(r), _mm256_add_ps(a, b));
                if HASH {
                    let st = std::slice::from_raw_parts_mut(hp.add(r), 8);
                    store_chains(st, x.iter().fold(load_chains(st), |h, &x| mix8(h, x)));
                }
            }
            let x = |i: usize, r: usize| fold_centred::<FOLD>(f, j + i, c[i][r]);
            for (r, o) in out.iter_mut().enumerate().skip(n8) {
                *o += w[j] * x(0, r) + w[j + 1] * x(1, r) + w[j + 2] * x(2, r) + w[j + 3] * x(3, r);
            }
            if SUMS {
                for (i, c) in c.iter().enumerate() {
                    push_sums(sums, j + i, c);
                }
            }
            j += 4;
        }
        for (jj, &wj) in w.iter().enumerate().skip(j) {
            let (fl, c, wv) = (FoldLanes::new::<FOLD>(f, jj), cols.col(jj), _mm256_set1_ps(wj));
            for r in (0..n8).step_by(8) {
                let x = load(&c[r..]);
                let y = _mm256_fmadd_ps(fl.centred::<FOLD, CLAMP, IMPUTE>(x), wv, load(&out[r..]));
                store(&mut out[r..], y);
                if HASH {
                    let st = &mut hashes[r..];
                    store_chains(st, mix8(load_chains(st), x));
                }
            }
            for r in n8..n {
                out[r] += wj * fold_centred::<FOLD>(f, jj, c[r]);
            }
            if SUMS {
                push_sums(sums, jj, c);
            }
        }
        if HASH {
            for r in (0..n8).step_by(8) {
                let st = &mut hashes[r..r + 8];
                let [a, b] = mix8(load_chains(st), load(&s.labels[r..]));
                store_fingerprints(st, a, b);
            }
            super::scalar::row_hashes(&tail, &s.labels[n8..], hashes);
        }
    }
}

/// What the pass over columns `j .. j+4` of [`predict`] prefetches, a line per 16 rows: the
/// columns two passes ahead, `j+8 .. j+12`, the same rows (a block's columns are 4 KiB apart,
/// each its own page, where hardware prefetchers start cold); past the last column, the rows
/// after these in the block's first columns, where the block has them (the next mini-batch's
/// first two passes). Measured, plain pipeline, 2 threads (medians of interleaved train
/// runs): two passes ahead 47.2 and 48.6 M rows/s against 38.3 and 43.9 one pass ahead; no
/// change with 1 thread.
fn prefetch_ahead<'c>(cols: &Columns<'c>, j: usize) -> [&'c [f32]; 4] {
    let d = cols.d;
    let next = cols.r0 + cols.n;
    let rows = cols.n.min(cols.stride.saturating_sub(next));
    std::array::from_fn(|i| {
        let t = j + 8 + i;
        if t < d {
            return cols.col(t);
        }
        let s = (t - d).min(d - 1) * cols.stride + next;
        cols.data.get(s..s + rows).unwrap_or(&[])
    })
}

/// The seeds of the two hash chains (see `scalar::row_hashes`).
const CHAIN_SEEDS: [u32; 2] = [0x9e37_79b9, 0x7f4a_7c15];

/// One step of both hash chains on 8 rows' values `x` (their bit patterns): `a = m(a ^ x)`,
/// `b = m'(b + x)`, each multiply followed by an xorshift.
#[inline(always)]
unsafe fn mix8([a, b]: [__m256i; 2], x: __m256) -> [__m256i; 2] {
    // SAFETY: register-only AVX2 operations; the caller guarantees AVX2.
    unsafe {
        let x = _mm256_castps_si256(x);
        let h = _mm256_mullo_epi32(_mm256_xor_si256(a, x), _mm256_set1_epi32(0xcc9e_2d51u32 as i32));
        let a = _mm256_xor_si256(h, _mm256_srli_epi32::<15>(h));
        let h = _mm256_mullo_epi32(_mm256_add_epi32(b, x), _mm256_set1_epi32(0x1b87_3593u32 as i32));
        [a, _mm256_xor_si256(h, _mm256_srli_epi32::<13>(h))]
    }
}

/// 8 rows' chain states from their 8 fingerprint slots (a in the first 32 bytes, b after).
#[inline(always)]
unsafe fn load_chains(slots: &[u64]) -> [__m256i; 2] {
    let s = &slots[..8];
    // SAFETY: `s` is 8 valid u64 = 64 bytes (sliced above); `loadu` has no alignment requirement.
    unsafe { [_mm256_loadu_si256(s.as_ptr().cast()), _mm256_loadu_si256(s[4..].as_ptr().cast())] }
}

/// The inverse of [`load_chains`].
#[inline(always)]
unsafe fn store_chains(slots: &mut [u64], [a, b]: [__m256i; 2]) {
    let s = &mut slots[..8];
    // SAFETY: `s` is 8 writable u64 = 64 bytes (sliced above); `storeu` has no alignment
    // requirement.
    unsafe {
        _mm256_storeu_si256(s.as_mut_ptr().cast(), a);
        _mm256_storeu_si256(s[4..].as_mut_ptr().cast(), b);
    }
}

/// 8 rows' fingerprints `fmix(a) << 32 | fmix(b)` from their finished chains, into `slots`.
#[inline(always)]
unsafe fn store_fingerprints(slots: &mut [u64], a: __m256i, b: __m256i) {
    let s = &mut slots[..8];
    // SAFETY: register-only AVX2 operations, and stores of 8 writable u64 = 64 bytes (sliced
    // above); the caller guarantees AVX2.
    unsafe {
        let (fa, fb) = (fmix8(a), fmix8(b));
        // Interleaved per row: rows 0 1 4 5, then rows 2 3 6 7.
        let (lo, hi) = (_mm256_unpacklo_epi32(fb, fa), _mm256_unpackhi_epi32(fb, fa));
        _mm256_storeu_si256(s.as_mut_ptr().cast(), _mm256_permute2x128_si256::<0x20>(lo, hi));
        _mm256_storeu_si256(s[4..].as_mut_ptr().cast(), _mm256_permute2x128_si256::<0x31>(lo, hi));
    }
}

/// `g[j] = Σ_r c[r]·x[r][j]`, `h[j] = Σ_r (c[r]·x[r][j])²`, and, when asked,
/// `m[j] = max_r |x[r][j]|`. Four columns per pass share each load of `c` (5 loads per 8 rows
/// instead of 8; measured: this kernel was 37 % of a mini-batch step).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gradient_block(cols: &Columns<'_>, c: &[f32], g: &mut [f32], h: &mut [f32], m: Option<&mut [f32]>) {
    // SAFETY: AVX2 and FMA by the caller's contract.
    unsafe { gradient::<false, false, false, 4, false>(cols, None, c, g, h, m, &mut Vec::new()) }
}

/// [`gradient_block`] on folded columns, of `u = value − a` ([`Fold`]); with `sums`, where the
/// fold neither clamps nor imputes, the columns' moments of `u` (those of the values shifted
/// by `a`, as [`super::scalar::gradient_block_folded`]): two columns a pass then, their ten
/// accumulators in registers.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gradient_block_folded(
    cols: &Columns<'_>,
    f: &Fold,
    c: &[f32],
    g: &mut [f32],
    h: &mut [f32],
    m: Option<&mut [f32]>,
    sums: Option<&mut Vec<Moments>>,
) {
    assert_eq!(f.a.len(), cols.d, "fold width");
    let mut sums = sums;
    if let Some(s) = sums.as_deref_mut() {
        s.clear();
    }
    let (fo, none) = (Some(f), &mut Vec::new());
    // SAFETY: AVX2 and FMA by the caller's contract.
    unsafe {
        match (sums, f.clamp, f.impute) {
            (Some(out), false, false) => gradient::<true, false, false, 2, true>(cols, fo, c, g, h, m, out),
            (None, false, false) => gradient::<true, false, false, 4, false>(cols, fo, c, g, h, m, none),
            (_, true, true) => gradient::<true, true, true, 4, false>(cols, fo, c, g, h, m, none),
            (_, true, false) => gradient::<true, true, false, 4, false>(cols, fo, c, g, h, m, none),
            (_, false, true) => gradient::<true, false, true, 4, false>(cols, fo, c, g, h, m, none),
        }
    }
}

/// The body of [`gradient_block`] and [`gradient_block_folded`], `C` columns a pass; with
/// `SUMS`, each column's moments of `u` (shift `a`) pushed to `sums`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn gradient<const FOLD: bool, const CLAMP: bool, const IMPUTE: bool, const C: usize, const SUMS: bool>(
    cols: &Columns<'_>,
    f: Option<&Fold>,
    c: &[f32],
    g: &mut [f32],
    h: &mut [f32],
    mut m: Option<&mut [f32]>,
    sums: &mut Vec<Moments>,
) {
    assert_eq!((c.len(), g.len(), h.len()), (cols.n, cols.d, cols.d));
    assert!(m.as_ref().is_none_or(|m| m.len() == cols.d));
    let n8 = cols.n / 8 * 8;
    let want_max = m.is_some();
    // SAFETY: the loads in the loop are through pointers to at least `n8` values (sliced
    // below) at offsets `r + 8 ≤ n8`; every other load/store is of an 8-element subslice
    // (bounds-checked); AVX2/FMA by contract.
    unsafe {
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let zeros = [_mm256_setzero_ps(); C];
        let cp = c[..n8].as_ptr();
        let mut j = 0;
        while j < cols.d {
            let k = (cols.d - j).min(C);
            let x: [&[f32]; C] = std::array::from_fn(|i| cols.col(j + i.min(k - 1)));
            let fl: [FoldLanes; C] = std::array::from_fn(|i| FoldLanes::new::<FOLD>(f, j + i.min(k - 1)));
            let (mut gs, mut hs, mut ms, mut ss, mut qs) = (zeros, zeros, zeros, zeros, zeros);
            // Through pointers: the slices' bounds checks were a third of the loop's
            // instructions.
            let xp = x.map(|x| x[..n8].as_ptr());
            for r in (0..n8).step_by(8) {
                let cv = _mm256_loadu_ps(cp.add(r));
                for i in 0..C {
                    let xv = fl[i].centred::<FOLD, CLAMP, IMPUTE>(_mm256_loadu_ps(xp[i].add(r)));
                    let v = _mm256_mul_ps(xv, cv);
                    gs[i] = _mm256_add_ps(gs[i], v);
                    hs[i] = _mm256_fmadd_ps(v, v, hs[i]);
                    if want_max {
                        ms[i] = _mm256_max_ps(ms[i], _mm256_and_ps(xv, abs));
                    }
                    if SUMS {
                        ss[i] = _mm256_add_ps(ss[i], xv);
                        qs[i] = _mm256_fmadd_ps(xv, xv, qs[i]);
                    }
                }
            }
            for i in 0..k {
                let (mut gsum, mut hsum_, mut msum) = (hsum(gs[i]), hsum(hs[i]), if want_max { hmax(ms[i]) } else { 0.0 });
                let (mut s, mut q) = (hsum(ss[i]) as f64, hsum(qs[i]) as f64);
                for r in n8..cols.n {
                    let u = fold_centred::<FOLD>(f, j + i, x[i][r]);
                    let v = u * c[r];
                    gsum += v;
                    hsum_ += v * v;
                    msum = msum.max(u.abs());
                    (s, q) = (s + u as f64, q + (u as f64) * (u as f64));
                }
                g[j + i] = gsum;
                h[j + i] = hsum_;
                if let Some(m) = m.as_deref_mut() {
                    m[j + i] = msum;
                }
                if SUMS {
                    let shift = f.map_or(0.0, |f| f.a[j + i]);
                    sums.push(Moments { n: cols.n as f64, s, q, ..Moments::empty(shift) });
                }
            }
            j += k;
        }
    }
}

/// e^x on 8 lanes: Cephes' `expf` scheme (x = n·ln2 + r, degree-6 polynomial, 2^n in the
/// exponent bits), relative error below 2·10⁻⁷ on the clamped range [−87.3, 88.3].
#[inline(always)]
unsafe fn exp8(x: __m256) -> __m256 {
    // SAFETY: register-only AVX2/FMA operations; the caller guarantees both.
    unsafe {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3)), _mm256_set1_ps(88.3));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_2e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))));
        _mm256_mul_ps(e, pow2)
    }
}

/// ln(u) on 8 lanes for u ∈ [1, 2] (all the logistic loss needs: u = 1 + e^−|z|): Cephes'
/// `logf` polynomial after folding u > √2 to u/2.
#[inline(always)]
unsafe fn ln_1_to_2(u: __m256) -> __m256 {
    // SAFETY: register-only AVX2/FMA operations; the caller guarantees both.
    unsafe {
        let big = _mm256_cmp_ps::<_CMP_GT_OQ>(u, _mm256_set1_ps(std::f32::consts::SQRT_2));
        let k = _mm256_and_ps(big, _mm256_set1_ps(1.0));
        let u = _mm256_blendv_ps(u, _mm256_mul_ps(u, _mm256_set1_ps(0.5)), big);
        let f = _mm256_sub_ps(u, _mm256_set1_ps(1.0));
        let z = _mm256_mul_ps(f, f);
        let mut y = _mm256_set1_ps(7.037_683_6e-2);
        for c in
            [-1.151_461e-1, 1.167_699_9e-1, -1.242_014_1e-1, 1.424_932_3e-1, -1.666_805_8e-1, 2.000_071_5e-1, -2.499_999_4e-1, 0.333_333_33]
        {
            y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(c));
        }
        y = _mm256_mul_ps(_mm256_mul_ps(y, f), z);
        y = _mm256_fmadd_ps(k, _mm256_set1_ps(-2.121_944_4e-4), y);
        y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5), y);
        _mm256_fmadd_ps(k, _mm256_set1_ps(0.693_359_4), _mm256_add_ps(f, y))
    }
}

/// Per-lane loss value and derivative (the AVX2 twin of `simd::loss_lanes`).
#[inline(always)]
unsafe fn loss_lanes(loss: &Loss, p: __m256, y: __m256) -> (__m256, __m256) {
    // SAFETY: register-only AVX2/FMA operations; the caller guarantees both.
    unsafe {
        let zero = _mm256_setzero_ps();
        let one = _mm256_set1_ps(1.0);
        let half = _mm256_set1_ps(0.5);
        let sign = _mm256_set1_ps(-0.0);
        match *loss {
            Loss::Squared => {
                let r = _mm256_sub_ps(p, y);
                (_mm256_mul_ps(_mm256_mul_ps(half, r), r), r)
            }
            Loss::Logistic => {
                // z = −y·p; loss = max(z, 0) + ln(1 + e^−|z|); ∂/∂p = −y·σ(z).
                let z = _mm256_xor_ps(_mm256_mul_ps(y, p), sign);
                let e = exp8(_mm256_or_ps(z, sign)); // e^−|z|
                let u = _mm256_add_ps(one, e);
                let inv = _mm256_div_ps(one, u);
                let sigma = _mm256_blendv_ps(_mm256_mul_ps(e, inv), inv, _mm256_cmp_ps::<_CMP_GT_OQ>(z, zero));
                (_mm256_add_ps(_mm256_max_ps(z, zero), ln_1_to_2(u)), _mm256_xor_ps(_mm256_mul_ps(y, sigma), sign))
            }
            Loss::Hinge => {
                let m = _mm256_fnmadd_ps(y, p, one);
                let active = _mm256_cmp_ps::<_CMP_GT_OQ>(m, zero);
                (_mm256_max_ps(m, zero), _mm256_and_ps(active, _mm256_xor_ps(y, sign)))
            }
            Loss::Huber { delta } => {
                let r = _mm256_sub_ps(p, y);
                let a = _mm256_andnot_ps(sign, r);
                let dv = _mm256_set1_ps(delta);
                let quad = _mm256_mul_ps(_mm256_mul_ps(half, r), r);
                let lin = _mm256_mul_ps(dv, _mm256_sub_ps(a, _mm256_set1_ps(0.5 * delta)));
                let l = _mm256_blendv_ps(lin, quad, _mm256_cmp_ps::<_CMP_LE_OQ>(a, dv));
                (l, _mm256_min_ps(_mm256_max_ps(r, _mm256_xor_ps(dv, sign)), dv))
            }
            Loss::EpsilonInsensitive { epsilon } => {
                let r = _mm256_sub_ps(p, y);
                let out = _mm256_sub_ps(_mm256_andnot_ps(sign, r), _mm256_set1_ps(epsilon));
                let active = _mm256_cmp_ps::<_CMP_GT_OQ>(out, zero);
                // sign(r) as ±1: 1 with r's sign bit.
                let unit = _mm256_or_ps(one, _mm256_and_ps(sign, r));
                (_mm256_max_ps(out, zero), _mm256_and_ps(active, unit))
            }
            Loss::Quantile { tau } => {
                let r = _mm256_sub_ps(y, p);
                let under = _mm256_cmp_ps::<_CMP_GE_OQ>(r, zero);
                let above = _mm256_cmp_ps::<_CMP_GT_OQ>(r, zero);
                let l = _mm256_blendv_ps(_mm256_mul_ps(_mm256_set1_ps(tau - 1.0), r), _mm256_mul_ps(_mm256_set1_ps(tau), r), under);
                let d_under = _mm256_and_ps(above, _mm256_set1_ps(-tau));
                let d = _mm256_blendv_ps(_mm256_set1_ps(1.0 - tau), d_under, under);
                (l, d)
            }
            Loss::ModifiedHuber => {
                let z = _mm256_mul_ps(y, p);
                let m = _mm256_max_ps(_mm256_sub_ps(one, z), zero);
                let near = _mm256_cmp_ps::<_CMP_GE_OQ>(z, _mm256_set1_ps(-1.0));
                let four = _mm256_set1_ps(-4.0);
                let l = _mm256_blendv_ps(_mm256_mul_ps(four, z), _mm256_mul_ps(m, m), near);
                let d = _mm256_blendv_ps(_mm256_mul_ps(four, y), _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0), y), m), near);
                (l, d)
            }
            Loss::SquaredHinge => {
                let m = _mm256_max_ps(_mm256_sub_ps(one, _mm256_mul_ps(y, p)), zero);
                (_mm256_mul_ps(m, m), _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0), y), m))
            }
            Loss::Perceptron => {
                let z = _mm256_mul_ps(y, p);
                let wrong = _mm256_cmp_ps::<_CMP_LE_OQ>(z, zero);
                (_mm256_max_ps(_mm256_xor_ps(z, sign), zero), _mm256_and_ps(wrong, _mm256_xor_ps(y, sign)))
            }
        }
    }
}

/// Scores a batch 8 rows at a time; the tail by the scalar specification.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn score_batch(loss: &Loss, p: &[f32], y: &[f32], w: Option<&[f32]>, c: &mut [f32]) -> BatchScore {
    assert!(y.len() == p.len() && c.len() == p.len() && w.is_none_or(|w| w.len() == p.len()));
    let n8 = p.len() / 8 * 8;
    // SAFETY: every load/store is of an 8-element subslice (bounds-checked); AVX2/FMA by contract.
    unsafe {
        let zero = _mm256_setzero_ps();
        let (mut l, mut ok, mut sq, mut cs, mut cq, mut nw) = (zero, zero, zero, zero, zero, zero);
        for r in (0..n8).step_by(8) {
            let (pv, yv) = (load(&p[r..]), load(&y[r..]));
            let wv = w.map_or(_mm256_set1_ps(1.0), |w| load(&w[r..]));
            let (lv, dv) = loss_lanes(loss, pv, yv);
            let cv = _mm256_mul_ps(wv, dv);
            store(&mut c[r..], cv);
            l = _mm256_fmadd_ps(wv, lv, l);
            let differ = _mm256_xor_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(pv, zero), _mm256_cmp_ps::<_CMP_GT_OQ>(yv, zero));
            ok = _mm256_add_ps(ok, _mm256_andnot_ps(differ, wv));
            let e = _mm256_sub_ps(pv, yv);
            sq = _mm256_fmadd_ps(_mm256_mul_ps(wv, e), e, sq);
            cs = _mm256_add_ps(cs, cv);
            cq = _mm256_fmadd_ps(cv, cv, cq);
            nw = _mm256_add_ps(nw, wv);
        }
        let t = super::scalar::score_batch(loss, &p[n8..], &y[n8..], w.map(|w| &w[n8..]), &mut c[n8..]);
        BatchScore {
            loss: hsum(l) + t.loss,
            correct: hsum(ok) + t.correct,
            sq_err: hsum(sq) + t.sq_err,
            c_sum: hsum(cs) + t.c_sum,
            c_sq: hsum(cq) + t.c_sq,
            n_w: hsum(nw) + t.n_w,
        }
    }
}

/// The feature stage's column pass: [`moments`] without a map; with one, two interleaved sets
/// of accumulators (`Acc`, 16 values per iteration) and one loop per case (imputing, or
/// keeping NaN), so no branch is left inside.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn column_pass(xs: &[f32], shift: f32, map: Option<(&ColumnMap, &mut [f32])>) -> Moments {
    // SAFETY: AVX2 and FMA by the caller's contract.
    unsafe {
        match map {
            None => moments::<true>(xs, shift),
            Some((f, out)) if f.fill.is_nan() => pass::<false>(xs, shift, f, out),
            Some((f, out)) => pass::<true>(xs, shift, f, out),
        }
    }
}

/// The moments of `xs`'s non-NaN values (the extremes only when `EXTREMES`, else ±∞): four
/// interleaved sets of accumulators, all in registers (32 values per iteration). Most columns
/// have no NaN cell: the values are summed without masks first (3 operations per 8 values
/// instead of 6), and summed again with masks only when the sums come out NaN, so the result
/// is the masked sums' bit for bit either way.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn moments<const EXTREMES: bool>(xs: &[f32], shift: f32) -> Moments {
    let whole = xs.len() / 8 * 8;
    // SAFETY: AVX2 and FMA by the caller's contract.
    let mut m = unsafe {
        let dense = lane_sums::<EXTREMES, false>(&xs[..whole], shift);
        if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(dense.s, dense.q)) == 0 {
            Moments { n: whole as f64, ..reduce(shift, dense) }
        } else {
            reduce(shift, lane_sums::<EXTREMES, true>(&xs[..whole], shift))
        }
    };
    for &x in &xs[whole..] {
        m.add(x);
    }
    if !EXTREMES {
        (m.lo, m.hi) = (f32::INFINITY, f32::NEG_INFINITY);
    }
    m
}

/// The lane sums of [`moments`] over `xs` (a multiple of 8 long), merged into one set; with
/// `MASKED`, of the non-NaN values, with their count; without, of all values and no count.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn lane_sums<const EXTREMES: bool, const MASKED: bool>(xs: &[f32], shift: f32) -> Acc {
    // SAFETY: register-only AVX operations, and loads through the bounds-checked `load` helper
    // on 8-value chunks; the caller guarantees AVX2 and FMA.
    unsafe {
        let kv = _mm256_set1_ps(shift);
        let mut acc = [Acc::empty(); 4];
        let quads = xs.len() / 32 * 32;
        for x in xs[..quads].chunks_exact(32) {
            for (k, a) in acc.iter_mut().enumerate() {
                a.add::<EXTREMES, MASKED>(load(&x[k * 8..k * 8 + 8]), kv);
            }
        }
        for x in xs[quads..].chunks_exact(8) {
            acc[0].add::<EXTREMES, MASKED>(load(x), kv);
        }
        let [a0, a1, a2, a3] = acc;
        a0.merge(a1).merge(a2.merge(a3))
    }
}

/// Sums one lane set's accumulators into [`Moments`].
///
/// # Safety
/// The CPU must support AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn reduce(shift: f32, a: Acc) -> Moments {
    // SAFETY: register-only AVX/AVX2 operations; the caller guarantees AVX2.
    unsafe {
        let n = _mm_add_epi32(_mm256_castsi256_si128(a.n), _mm256_extracti128_si256::<1>(a.n));
        let n = _mm_add_epi32(n, _mm_unpackhi_epi64(n, n));
        let n = _mm_cvtsi128_si32(_mm_add_epi32(n, _mm_shuffle_epi32::<0b01>(n)));
        let fold = |v: __m256, op: unsafe fn(__m128, __m128) -> __m128| {
            let h = op(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let h = op(h, _mm_movehl_ps(h, h));
            _mm_cvtss_f32(op(h, _mm_shuffle_ps::<0b01>(h, h)))
        };
        Moments {
            shift,
            n: n as f64,
            s: hsum(a.s) as f64,
            q: hsum(a.q) as f64,
            lo: fold(a.lo, |a, b| _mm_min_ps(a, b)),
            hi: fold(a.hi, |a, b| _mm_max_ps(a, b)),
        }
    }
}

/// Rows the batch scan works on at a time: 4 vectors per hash chain, all in registers.
const SCAN_ROWS: usize = 32;

/// How many 32-row chunks ahead the scan prefetches: a block's columns are 4 KiB apart, one
/// page each, more streams than the hardware prefetchers follow. One: further ahead measured
/// slower (2 chunks: 31 against 29.5 cycles per row in the pipeline, 8 chunks: 49), as the
/// prefetched lines of all the columns land in the same few L1 sets and displace the current
/// chunk's.
const SCAN_AHEAD: usize = 1;

/// The batch scan ([`super::scalar::scan`]) in one read of the batch, 32 rows at a time: the
/// rows' two multiply–xorshift chains (bit-identical to the scalar fingerprints: integer
/// arithmetic), and the columns' shifted sums in f32 lanes (f64 across chunks' lanes at the
/// end). Rows past the last multiple of 32 by the scalar specification.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn scan(
    cols: &Columns<'_>,
    labels: &[f32],
    hashes: Option<&mut Vec<u64>>,
    sums: Option<(&[f32], &mut Vec<Moments>, &mut Vec<f32>)>,
) {
    // SAFETY: AVX2 and FMA by the caller's contract.
    unsafe {
        match (hashes, sums) {
            (Some(h), Some((shifts, m, l))) => scan_chunks::<true, true>(cols, labels, h, shifts, m, l),
            (Some(h), None) => scan_chunks::<true, false>(cols, labels, h, &[], &mut Vec::new(), &mut Vec::new()),
            (None, Some((shifts, m, l))) => scan_chunks::<false, true>(cols, labels, &mut Vec::new(), shifts, m, l),
            (None, None) => {}
        }
    }
}

/// Per byte of kept-row bits, the lane permutation that moves the kept lanes to the front, in
/// order ([`compact`]).
static COMPACT: [[u32; 8]; 256] = {
    let mut t = [[0u32; 8]; 256];
    let mut keep = 0;
    while keep < 256 {
        let (mut lane, mut k) = (0, 0);
        while lane < 8 {
            if keep >> lane & 1 == 1 {
                t[keep][k] = lane as u32;
                k += 1;
            }
            lane += 1;
        }
        keep += 1;
    }
    t
};

/// [`super::scalar::compact`], 8 rows at a time: one lane permutation by the rows' byte of the
/// mask, and a store of all 8 lanes at the next free place (lanes past the kept ones are
/// overwritten by the next store, or lie past the result). `out` must have room for the kept
/// values plus 8; values past the kept ones are clobbered.
///
/// # Safety
/// The CPU must support AVX2 and POPCNT.
#[target_feature(enable = "avx2,popcnt")]
pub unsafe fn compact(xs: &[f32], skip: &SkipMask, out: &mut [f32]) -> usize {
    let n8 = xs.len() / 8 * 8;
    assert!(out.len() >= n8 + 8 && n8 <= skip.len() * 64, "room for the kept values and a store");
    let mut m = 0;
    let (src, dst) = (xs.as_ptr(), out.as_mut_ptr());
    // The loop stores through pointers, each mask word kept in a register: bounds checks and
    // a reload of the mask per 8 rows were half its instructions.
    for (w, &word) in skip.iter().enumerate().take(n8.div_ceil(64)) {
        let keep = !word;
        for b in 0..(n8 - 64 * w).min(64) / 8 {
            let (r, k) = (64 * w + 8 * b, (keep >> (8 * b)) as u8);
            // SAFETY: `r + 8 ≤ n8 ≤ xs.len()`; `m ≤ r`, so `m + 8 ≤ n8 + 8 ≤ out.len()`
            // (asserted above); AVX2 and POPCNT by the caller's contract.
            unsafe {
                let perm = _mm256_loadu_si256(COMPACT[usize::from(k)].as_ptr().cast());
                _mm256_storeu_ps(dst.add(m), _mm256_permutevar8x32_ps(_mm256_loadu_ps(src.add(r)), perm));
            }
            m += k.count_ones() as usize;
        }
    }
    for (r, &x) in xs.iter().enumerate().skip(n8) {
        if !crate::batch::skipped(skip, r) {
            out[m] = x;
            m += 1;
        }
    }
    m
}

/// `fmix32` on 8 lanes.
#[inline(always)]
unsafe fn fmix8(h: __m256i) -> __m256i {
    // SAFETY: register-only AVX2 operations; the caller guarantees AVX2.
    unsafe {
        let h = _mm256_xor_si256(h, _mm256_srli_epi32::<16>(h));
        let h = _mm256_mullo_epi32(h, _mm256_set1_epi32(0x85eb_ca6bu32 as i32));
        let h = _mm256_xor_si256(h, _mm256_srli_epi32::<13>(h));
        let h = _mm256_mullo_epi32(h, _mm256_set1_epi32(0xc2b2_ae35u32 as i32));
        _mm256_xor_si256(h, _mm256_srli_epi32::<16>(h))
    }
}

/// The body of [`scan`]: fingerprints into `out` when `HASH`, sums into `sums` when `SUMS`
/// (with `lanes`, 16 per column, as scratch).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_chunks<const HASH: bool, const SUMS: bool>(
    cols: &Columns<'_>,
    labels: &[f32],
    out: &mut Vec<u64>,
    shifts: &[f32],
    sums: &mut Vec<Moments>,
    lanes: &mut Vec<f32>,
) {
    let (d, n) = (cols.d, cols.n);
    assert!(!HASH || labels.len() == n, "one label per row");
    assert!(!SUMS || shifts.len() == d, "one shift per column");
    let whole = n / SCAN_ROWS * SCAN_ROWS;
    out.clear();
    // SAFETY: every load/store is of an 8-element subslice (bounds-checked), prefetches are of
    // live slices; AVX2/FMA by the caller's contract.
    unsafe {
        lanes.clear();
        lanes.resize(if SUMS { 16 * d } else { 0 }, 0.0);
        let mut words = [0u64; SCAN_ROWS];
        for r in (0..whole).step_by(SCAN_ROWS) {
            let mut h = [CHAIN_SEEDS.map(|v| _mm256_set1_epi32(v as i32)); SCAN_ROWS / 8];
            let mut mix = |x: [__m256; SCAN_ROWS / 8]| {
                for (h, x) in h.iter_mut().zip(x) {
                    *h = mix8(*h, x);
                }
            };
            let ahead = r + SCAN_AHEAD * SCAN_ROWS;
            for j in 0..d {
                let c = cols.col(j);
                if ahead < n {
                    super::prefetch(&c[ahead..(ahead + SCAN_ROWS).min(n)]);
                }
                let x: [__m256; SCAN_ROWS / 8] = std::array::from_fn(|i| load(&c[r + 8 * i..]));
                if HASH {
                    mix(x);
                }
                if SUMS {
                    let k = _mm256_set1_ps(shifts[j]);
                    let [v0, v1, v2, v3] = x.map(|x| _mm256_sub_ps(x, k));
                    let (s, q) = lanes[16 * j..16 * j + 16].split_at_mut(8);
                    store(s, _mm256_add_ps(load(s), _mm256_add_ps(_mm256_add_ps(v0, v1), _mm256_add_ps(v2, v3))));
                    store(q, _mm256_fmadd_ps(v0, v0, _mm256_fmadd_ps(v1, v1, _mm256_fmadd_ps(v2, v2, _mm256_fmadd_ps(v3, v3, load(q))))));
                }
            }
            if HASH {
                mix(std::array::from_fn(|i| load(&labels[r + 8 * i..])));
                for (i, [a, b]) in h.into_iter().enumerate() {
                    store_fingerprints(&mut words[8 * i..], a, b);
                }
                out.extend_from_slice(&words);
            }
        }
        let tail = Columns::new(cols.data, cols.stride, d, cols.r0 + whole, n - whole);
        if HASH && whole < n {
            super::scalar::row_hashes(&tail, &labels[whole..], out);
        }
        if SUMS {
            sums.clear();
            sums.extend((0..d).map(|j| {
                let shift = shifts[j];
                let (s, q) = super::scalar::shifted_sums(tail.col(j), shift);
                let (ls, lq) = lanes[16 * j..16 * j + 16].split_at(8);
                Moments { n: n as f64, s: hsum(load(ls)) as f64 + s, q: hsum(load(lq)) as f64 + q, ..Moments::empty(shift) }
            }));
        }
    }
}

/// One lane set's running sums of [`column_pass`].
#[derive(Clone, Copy)]
struct Acc {
    n: __m256i,
    s: __m256,
    q: __m256,
    lo: __m256,
    hi: __m256,
}

impl Acc {
    /// No values yet.
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[inline(always)]
    unsafe fn empty() -> Self {
        // SAFETY: register-only AVX operations; the caller guarantees AVX.
        unsafe {
            Acc {
                n: _mm256_setzero_si256(),
                s: _mm256_setzero_ps(),
                q: _mm256_setzero_ps(),
                lo: _mm256_set1_ps(f32::INFINITY),
                hi: _mm256_set1_ps(f32::NEG_INFINITY),
            }
        }
    }

    /// Adds the lanes of `x` (shifted by `kv`; extremes when `EXTREMES`), with `MASKED` only
    /// the non-NaN ones, counted, and returns the non-NaN mask (without, all lanes). No
    /// blends: the count sums the mask (−1 per lane), and `min`/`max` return their second
    /// operand when the first is NaN.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline(always)]
    unsafe fn add<const EXTREMES: bool, const MASKED: bool>(&mut self, x: __m256, kv: __m256) -> __m256 {
        // SAFETY: register-only AVX2/FMA operations; the caller guarantees both.
        unsafe {
            let (ok, v) = if MASKED {
                let ok = _mm256_cmp_ps::<_CMP_ORD_Q>(x, x);
                self.n = _mm256_sub_epi32(self.n, _mm256_castps_si256(ok));
                (ok, _mm256_and_ps(ok, _mm256_sub_ps(x, kv)))
            } else {
                (_mm256_castsi256_ps(_mm256_set1_epi32(-1)), _mm256_sub_ps(x, kv))
            };
            self.s = _mm256_add_ps(self.s, v);
            self.q = _mm256_fmadd_ps(v, v, self.q);
            if EXTREMES {
                self.lo = _mm256_min_ps(x, self.lo);
                self.hi = _mm256_max_ps(x, self.hi);
            }
            ok
        }
    }

    /// Both sets' sums.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline(always)]
    unsafe fn merge(self, o: Acc) -> Acc {
        // SAFETY: register-only AVX2 operations; the caller guarantees AVX2.
        unsafe {
            Acc {
                n: _mm256_add_epi32(self.n, o.n),
                s: _mm256_add_ps(self.s, o.s),
                q: _mm256_add_ps(self.q, o.q),
                lo: _mm256_min_ps(self.lo, o.lo),
                hi: _mm256_max_ps(self.hi, o.hi),
            }
        }
    }
}

/// [`column_pass`] with a map into `out`: `IMPUTE` (fill not NaN) blends the fill
/// in before mapping, else a NaN cell maps to the fill (NaN) itself.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn pass<const IMPUTE: bool>(xs: &[f32], shift: f32, f: &ColumnMap, out: &mut [f32]) -> Moments {
    assert_eq!(out.len(), xs.len(), "output length");
    let whole = xs.len() / 8 * 8;
    // SAFETY: register-only AVX operations, and loads/stores through the bounds-checked
    // `load`/`store` helpers on 8-value chunks; the caller guarantees AVX2 and FMA.
    let mut m = unsafe {
        let kv = _mm256_set1_ps(shift);
        let (fill, a, b, k) = (_mm256_set1_ps(f.fill), _mm256_set1_ps(f.a), _mm256_set1_ps(f.b), _mm256_set1_ps(f.k));
        let nk = _mm256_sub_ps(_mm256_setzero_ps(), k);
        let empty = Acc::empty();
        let step = |x: &[f32], o: &mut [f32], acc: &mut Acc| {
            let x = load(x);
            let ok = acc.add::<true, true>(x, kv);
            let vx = if IMPUTE { _mm256_blendv_ps(fill, x, ok) } else { x };
            let y = _mm256_mul_ps(_mm256_sub_ps(vx, a), b);
            // max(−k, y) then min(k, y): y itself when equal or NaN, as the scalar clamp.
            let y = _mm256_min_ps(k, _mm256_max_ps(nk, y));
            store(o, if IMPUTE { y } else { _mm256_blendv_ps(fill, y, ok) });
        };
        let (mut p, mut r) = (empty, empty);
        let pairs = xs.len() / 16;
        for (i, x) in xs[..pairs * 16].chunks_exact(16).enumerate() {
            let o = &mut out[i * 16..i * 16 + 16];
            let (o0, o1) = o.split_at_mut(8);
            step(&x[..8], o0, &mut p);
            step(&x[8..], o1, &mut r);
        }
        if whole > pairs * 16 {
            let i = pairs * 16;
            let o = &mut out[i..i + 8];
            step(&xs[i..i + 8], o, &mut p);
        }
        reduce(shift, p.merge(r))
    };
    for (i, &x) in xs.iter().enumerate().skip(whole) {
        out[i] = f.apply(x);
        m.add(x);
    }
    m
}

/// Bytes [`transpose`] prefetches ahead of the rows it reads.
const TRANSPOSE_AHEAD: usize = 2048;

/// [`super::scalar::transpose`], 8 rows × 8 columns at a time in registers (the row-major
/// reads and column writes both 32 bytes wide).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn transpose(rows: &[f32], d: usize, cols: &mut [f32], stride: usize) {
    let n = rows.len() / d;
    assert!(rows.len() == n * d && stride >= n && cols.len() >= (d - 1) * stride + n, "whole rows, and room for their columns");
    let (n8, d8) = (n / 8 * 8, d / 8 * 8);
    // Rows read a few KiB ahead: the transpose is where a batch is read from memory, and its
    // strided walk through 8 rows at a time is more than the hardware prefetcher follows.
    let ahead = (TRANSPOSE_AHEAD / (4 * d)).next_multiple_of(8).max(8);
    for r in (0..n8).step_by(8) {
        if let Some(next) = rows.get((r + ahead) * d..(r + ahead + 8) * d) {
            super::prefetch(next);
        }
        for j in (0..d8).step_by(8) {
            // SAFETY: rows r..r+8 < n and values j..j+8 ≤ d of each are in `rows`, and each
            // column's rows r..r+8 in `cols` (asserted above; `load`/`store` slice them again);
            // register-only shuffles otherwise.
            unsafe {
                let a: [__m256; 8] = std::array::from_fn(|i| load(&rows[(r + i) * d + j..]));
                let t0 = _mm256_unpacklo_ps(a[0], a[1]);
                let t1 = _mm256_unpackhi_ps(a[0], a[1]);
                let t2 = _mm256_unpacklo_ps(a[2], a[3]);
                let t3 = _mm256_unpackhi_ps(a[2], a[3]);
                let t4 = _mm256_unpacklo_ps(a[4], a[5]);
                let t5 = _mm256_unpackhi_ps(a[4], a[5]);
                let t6 = _mm256_unpacklo_ps(a[6], a[7]);
                let t7 = _mm256_unpackhi_ps(a[6], a[7]);
                let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let c = [
                    _mm256_permute2f128_ps::<0x20>(s0, s4),
                    _mm256_permute2f128_ps::<0x20>(s1, s5),
                    _mm256_permute2f128_ps::<0x20>(s2, s6),
                    _mm256_permute2f128_ps::<0x20>(s3, s7),
                    _mm256_permute2f128_ps::<0x31>(s0, s4),
                    _mm256_permute2f128_ps::<0x31>(s1, s5),
                    _mm256_permute2f128_ps::<0x31>(s2, s6),
                    _mm256_permute2f128_ps::<0x31>(s3, s7),
                ];
                for (k, v) in c.into_iter().enumerate() {
                    store(&mut cols[(j + k) * stride + r..], v);
                }
            }
        }
        for j in d8..d {
            for i in 0..8 {
                cols[j * stride + r + i] = rows[(r + i) * d + j];
            }
        }
    }
    super::scalar::transpose(&rows[n8 * d..], d, &mut cols[n8..], stride);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    unsafe fn lanes(f: impl Fn(__m256) -> __m256, x: f32) -> f32 {
        let mut out = [0.0f32; 8];
        // SAFETY: AVX by the caller's contract; `out` has 8 lanes.
        unsafe { store(&mut out, f(_mm256_set1_ps(x))) };
        out[0]
    }

    #[test]
    fn exp_and_ln_match_f64() {
        if !super::super::Isa::Avx2.available() {
            return; // nothing to test on this CPU: the twin is never selected
        }
        // SAFETY: AVX2 and FMA checked above.
        unsafe {
            let (mut worst_exp, mut x) = (0.0f64, -87.0f32);
            while x < 88.0 {
                let want = (x as f64).exp();
                worst_exp = worst_exp.max(((lanes(|v| exp8(v), x) as f64 - want) / want).abs());
                x += 0.00731;
            }
            assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
            let (mut worst_ln, mut u) = (0.0f64, 1.0f32);
            while u <= 2.0 {
                let want = (u as f64).ln();
                worst_ln = worst_ln.max((lanes(|v| ln_1_to_2(v), u) as f64 - want).abs());
                u += 1.0 / 4096.0;
            }
            assert!(worst_ln < 2e-7, "ln absolute error {worst_ln}");
        }
    }

    #[test]
    fn unmasked_moments_are_the_masked_ones_bit_for_bit() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        let bits = |m: Moments| (m.n.to_bits(), m.s.to_bits(), m.q.to_bits(), m.lo.to_bits(), m.hi.to_bits());
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 255, 256, 1023] {
            let base: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37).collect();
            // No special value, a NaN, one infinity, both infinities (their sum is NaN).
            for special in [&[][..], &[f32::NAN], &[f32::INFINITY], &[f32::INFINITY, f32::NEG_INFINITY]] {
                let mut xs = base.clone();
                for (k, &v) in special.iter().enumerate() {
                    if let Some(x) = xs.get_mut((k * 5 + 3) % n.max(1)) {
                        *x = v;
                    }
                }
                let whole = n / 8 * 8;
                // SAFETY: AVX2 and FMA checked above.
                let (got, masked) = unsafe {
                    let mut masked = reduce(0.25, lane_sums::<true, true>(&xs[..whole], 0.25));
                    for &x in &xs[whole..] {
                        masked.add(x);
                    }
                    (moments::<true>(&xs, 0.25), masked)
                };
                assert_eq!(bits(got), bits(masked), "n={n} special={special:?}");
            }
        }
    }
}
