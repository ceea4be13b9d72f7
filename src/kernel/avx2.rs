//! The AVX2 + FMA twin, raw intrinsics, selected at run time by [`super::isa`].
//!
//! Every function is `unsafe` for one reason only: the caller must have checked that the CPU
//! supports AVX2 and FMA. Memory accesses are bounds-checked by slicing before any load; loads
//! and stores are unaligned-tolerant (`loadu`/`storeu`), so alignment is a speed matter only.

use super::Columns;
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
    assert_eq!((w.len(), out.len()), (cols.d, cols.n));
    let n = cols.n;
    let n8 = n / 8 * 8;
    out.fill(bias);
    // SAFETY: every load/store is of an 8-element subslice (bounds-checked); AVX2/FMA by contract.
    unsafe {
        let mut j = 0;
        while j + 4 <= cols.d {
            let (c0, c1, c2, c3) = (cols.col(j), cols.col(j + 1), cols.col(j + 2), cols.col(j + 3));
            let (w0, w1, w2, w3) = (_mm256_set1_ps(w[j]), _mm256_set1_ps(w[j + 1]), _mm256_set1_ps(w[j + 2]), _mm256_set1_ps(w[j + 3]));
            for r in (0..n8).step_by(8) {
                let a = _mm256_fmadd_ps(load(&c0[r..]), w0, load(&out[r..]));
                let b = _mm256_mul_ps(load(&c1[r..]), w1);
                let a = _mm256_fmadd_ps(load(&c2[r..]), w2, a);
                let b = _mm256_fmadd_ps(load(&c3[r..]), w3, b);
                store(&mut out[r..], _mm256_add_ps(a, b));
            }
            for r in n8..n {
                out[r] += w[j] * c0[r] + w[j + 1] * c1[r] + w[j + 2] * c2[r] + w[j + 3] * c3[r];
            }
            j += 4;
        }
        for (jj, &wj) in w.iter().enumerate().skip(j) {
            axpy(wj, cols.col(jj), out);
        }
    }
}

/// `g[j] = Σ_r c[r]·x[r][j]`, `h[j] = Σ_r (c[r]·x[r][j])²`, and, when asked,
/// `m[j] = max_r |x[r][j]|`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gradient_block(cols: &Columns<'_>, c: &[f32], g: &mut [f32], h: &mut [f32], mut m: Option<&mut [f32]>) {
    assert_eq!((c.len(), g.len(), h.len()), (cols.n, cols.d, cols.d));
    assert!(m.as_ref().is_none_or(|m| m.len() == cols.d));
    let n16 = cols.n / 16 * 16;
    // SAFETY: every load is of an 8-element subslice (bounds-checked); AVX2/FMA by contract.
    unsafe {
        for j in 0..cols.d {
            let x = cols.col(j);
            let (mut g0, mut g1, mut h0, mut h1) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
            let mut mx = _mm256_setzero_ps();
            let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
            for r in (0..n16).step_by(16) {
                let (x0, x1) = (load(&x[r..]), load(&x[r + 8..]));
                let v0 = _mm256_mul_ps(x0, load(&c[r..]));
                let v1 = _mm256_mul_ps(x1, load(&c[r + 8..]));
                g0 = _mm256_add_ps(g0, v0);
                g1 = _mm256_add_ps(g1, v1);
                h0 = _mm256_fmadd_ps(v0, v0, h0);
                h1 = _mm256_fmadd_ps(v1, v1, h1);
                if m.is_some() {
                    mx = _mm256_max_ps(mx, _mm256_max_ps(_mm256_and_ps(x0, abs), _mm256_and_ps(x1, abs)));
                }
            }
            let (mut gs, mut hs) = (hsum(_mm256_add_ps(g0, g1)), hsum(_mm256_add_ps(h0, h1)));
            let mut lanes = [0.0f32; 8];
            store(&mut lanes, mx);
            let mut ms = lanes.iter().fold(0.0f32, |a, &b| a.max(b));
            for r in n16..cols.n {
                let v = x[r] * c[r];
                gs += v;
                hs += v * v;
                ms = ms.max(x[r].abs());
            }
            g[j] = gs;
            h[j] = hs;
            if let Some(m) = m.as_deref_mut() {
                m[j] = ms;
            }
        }
    }
}
