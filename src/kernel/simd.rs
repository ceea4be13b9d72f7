//! The portable twin: `wide::f32x8` (instruction choice fixed at compile time). No `unsafe`.

use super::{BatchScore, ColumnMap, Columns, Moments};
use crate::loss::Loss;
use wide::f32x8;

#[inline(always)]
fn load(s: &[f32]) -> f32x8 {
    f32x8::from(<[f32; 8]>::try_from(&s[..8]).expect("8 lanes"))
}

/// `Σ a[i]·b[i]`: four 8-lane accumulators, then the scalar tail.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let n32 = a.len() / 32 * 32;
    let mut acc = [f32x8::ZERO; 4];
    for i in (0..n32).step_by(32) {
        for (k, s) in acc.iter_mut().enumerate() {
            *s = load(&a[i + 8 * k..]).mul_add(load(&b[i + 8 * k..]), *s);
        }
    }
    let mut i = n32;
    while i + 8 <= a.len() {
        acc[0] = load(&a[i..]).mul_add(load(&b[i..]), acc[0]);
        i += 8;
    }
    let tail: f32 = a[i..].iter().zip(&b[i..]).map(|(x, y)| x * y).sum();
    ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add() + tail
}

/// `y[i] += alpha·x[i]`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    let a = f32x8::splat(alpha);
    let n8 = x.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        let r: [f32; 8] = load(&x[i..]).mul_add(a, load(&y[i..])).into();
        y[i..i + 8].copy_from_slice(&r);
    }
    for i in n8..x.len() {
        y[i] += alpha * x[i];
    }
}

/// `out[r] = bias + Σ_j w[j]·col_j[r]`: column-wise AXPY into `out`, four columns per pass.
pub fn predict_block(cols: &Columns<'_>, w: &[f32], bias: f32, out: &mut [f32]) {
    assert_eq!((w.len(), out.len()), (cols.d, cols.n));
    let n = cols.n;
    let n8 = n / 8 * 8;
    out.fill(bias);
    let mut j = 0;
    while j + 4 <= cols.d {
        let (c0, c1, c2, c3) = (cols.col(j), cols.col(j + 1), cols.col(j + 2), cols.col(j + 3));
        let (w0, w1, w2, w3) = (f32x8::splat(w[j]), f32x8::splat(w[j + 1]), f32x8::splat(w[j + 2]), f32x8::splat(w[j + 3]));
        for r in (0..n8).step_by(8) {
            let a = load(&c0[r..]).mul_add(w0, load(&out[r..]));
            let b = load(&c1[r..]) * w1;
            let a = load(&c2[r..]).mul_add(w2, a);
            let b = load(&c3[r..]).mul_add(w3, b);
            out[r..r + 8].copy_from_slice(&<[f32; 8]>::from(a + b));
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

/// `g[j] = Σ_r c[r]·x[r][j]`, `h[j] = Σ_r (c[r]·x[r][j])²` (two 8-lane accumulator pairs), and,
/// when asked, `m[j] = max_r |x[r][j]|`.
pub fn gradient_block(cols: &Columns<'_>, c: &[f32], g: &mut [f32], h: &mut [f32], mut m: Option<&mut [f32]>) {
    assert_eq!((c.len(), g.len(), h.len()), (cols.n, cols.d, cols.d));
    assert!(m.as_ref().is_none_or(|m| m.len() == cols.d));
    let n16 = cols.n / 16 * 16;
    for j in 0..cols.d {
        let x = cols.col(j);
        let (mut g0, mut g1, mut h0, mut h1) = (f32x8::ZERO, f32x8::ZERO, f32x8::ZERO, f32x8::ZERO);
        let mut mx = f32x8::ZERO;
        for r in (0..n16).step_by(16) {
            let (x0, x1) = (load(&x[r..]), load(&x[r + 8..]));
            let v0 = x0 * load(&c[r..]);
            let v1 = x1 * load(&c[r + 8..]);
            g0 += v0;
            g1 += v1;
            h0 = v0.mul_add(v0, h0);
            h1 = v1.mul_add(v1, h1);
            if m.is_some() {
                mx = mx.max(x0.abs()).max(x1.abs());
            }
        }
        let (mut gs, mut hs) = ((g0 + g1).reduce_add(), (h0 + h1).reduce_add());
        let mut ms = <[f32; 8]>::from(mx).iter().fold(0.0f32, |a, &b| a.max(b));
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

/// Per-lane loss value and derivative.
#[inline(always)]
fn loss_lanes(loss: &Loss, p: f32x8, y: f32x8) -> (f32x8, f32x8) {
    let zero = f32x8::ZERO;
    match *loss {
        Loss::Squared => {
            let r = p - y;
            (f32x8::splat(0.5) * r * r, r)
        }
        Loss::Logistic => {
            // z = −y·p; loss = max(z, 0) + ln(1 + e^−|z|); ∂/∂p = −y·σ(z).
            let z = -(y * p);
            let e = (-z.abs()).exp();
            let inv = f32x8::ONE / (f32x8::ONE + e);
            let sigma = z.simd_gt(zero).select(inv, e * inv);
            // e ∈ (0, 1]: ln(1 + e) has no cancellation to guard against.
            (z.max(zero) + (f32x8::ONE + e).ln(), -(y * sigma))
        }
        Loss::Hinge => {
            let m = f32x8::ONE - y * p;
            let active = m.simd_gt(zero);
            (m.max(zero), active.select(-y, zero))
        }
        Loss::Huber { delta } => {
            let r = p - y;
            let a = r.abs();
            let dv = f32x8::splat(delta);
            let quad = f32x8::splat(0.5) * r * r;
            let lin = dv * (a - f32x8::splat(0.5 * delta));
            (a.simd_le(dv).select(quad, lin), r.max(-dv).min(dv))
        }
        Loss::EpsilonInsensitive { epsilon } => {
            let r = p - y;
            let out = r.abs() - f32x8::splat(epsilon);
            let active = out.simd_gt(zero);
            let sign = r.simd_gt(zero).select(f32x8::ONE, -f32x8::ONE);
            (out.max(zero), active.select(sign, zero))
        }
        Loss::Quantile { tau } => {
            let r = y - p;
            let (t, t1) = (f32x8::splat(tau), f32x8::splat(tau - 1.0));
            let under = r.simd_ge(zero);
            let d = r.simd_gt(zero).select(-t, under.select(zero, f32x8::splat(1.0 - tau)));
            (under.select(t * r, t1 * r), d)
        }
        Loss::ModifiedHuber => {
            let z = y * p;
            let m = (f32x8::ONE - z).max(zero);
            let near = z.simd_ge(-f32x8::ONE);
            let four = f32x8::splat(-4.0);
            (near.select(m * m, four * z), near.select(f32x8::splat(-2.0) * y * m, four * y))
        }
        Loss::SquaredHinge => {
            let m = (f32x8::ONE - y * p).max(zero);
            (m * m, f32x8::splat(-2.0) * y * m)
        }
        Loss::Perceptron => {
            let z = y * p;
            ((-z).max(zero), z.simd_le(zero).select(-y, zero))
        }
    }
}

/// Scores a batch 8 rows at a time (`wide` exp/ln for the logistic loss), tail by the scalar
/// specification.
pub fn score_batch(loss: &Loss, p: &[f32], y: &[f32], w: Option<&[f32]>, c: &mut [f32]) -> BatchScore {
    assert!(y.len() == p.len() && c.len() == p.len() && w.is_none_or(|w| w.len() == p.len()));
    let n8 = p.len() / 8 * 8;
    let zero = f32x8::ZERO;
    let (mut l, mut ok, mut sq, mut cs, mut cq, mut nw) = (zero, zero, zero, zero, zero, zero);
    for r in (0..n8).step_by(8) {
        let (pv, yv) = (load(&p[r..]), load(&y[r..]));
        let wv = w.map_or(f32x8::ONE, |w| load(&w[r..]));
        let (lv, dv) = loss_lanes(loss, pv, yv);
        let cv = wv * dv;
        c[r..r + 8].copy_from_slice(&<[f32; 8]>::from(cv));
        l = wv.mul_add(lv, l);
        // Masks are all-ones bit patterns (NaN as floats): compare them bitwise, never with `==`.
        let differ = pv.simd_gt(zero) ^ yv.simd_gt(zero);
        ok += differ.select(zero, wv);
        let e = pv - yv;
        sq = (wv * e).mul_add(e, sq);
        cs += cv;
        cq = cv.mul_add(cv, cq);
        nw += wv;
    }
    let t = super::scalar::score_batch(loss, &p[n8..], &y[n8..], w.map(|w| &w[n8..]), &mut c[n8..]);
    BatchScore {
        loss: l.reduce_add() + t.loss,
        correct: ok.reduce_add() + t.correct,
        sq_err: sq.reduce_add() + t.sq_err,
        c_sum: cs.reduce_add() + t.c_sum,
        c_sq: cq.reduce_add() + t.c_sq,
        n_w: nw.reduce_add() + t.n_w,
    }
}

/// The feature stage's column pass, in 8-lane arrays: plain array code that the compiler
/// vectorises for the target it is compiled for — SSE2 here, AVX2 when the [`super::avx2`]
/// twin inlines it under `#[target_feature]`. NaN lanes are excluded by selects, so every lane
/// operation is branch-free; partial sums stay in f32 lanes, shifted by `shift`.
#[inline(always)]
pub fn column_pass(xs: &[f32], shift: f32, mut map: Option<(&ColumnMap, &mut [f32])>) -> Moments {
    let (mut n, mut s, mut q) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    let (mut lo, mut hi) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
    let whole = xs.len() / 8 * 8;
    let f = map.as_ref().map(|(f, _)| **f);
    for (i, c) in xs[..whole].chunks_exact(8).enumerate() {
        let c: &[f32; 8] = c.try_into().expect("8 lanes");
        for l in 0..8 {
            let x = c[l];
            #[allow(clippy::eq_op)]
            let ok = x == x; // false exactly on NaN
            let v = if ok { x - shift } else { 0.0 };
            n[l] += if ok { 1.0 } else { 0.0 };
            s[l] += v;
            q[l] += v * v;
            let (xl, xh) = if ok { (x, x) } else { (f32::INFINITY, f32::NEG_INFINITY) };
            lo[l] = if xl < lo[l] { xl } else { lo[l] };
            hi[l] = if xh > hi[l] { xh } else { hi[l] };
        }
        if let (Some(f), Some((_, out))) = (f, map.as_mut()) {
            // ColumnMap::apply with compares and selects only (the same results, NaN included).
            let o: &mut [f32; 8] = (&mut out[i * 8..i * 8 + 8]).try_into().expect("8 lanes");
            for l in 0..8 {
                let x = c[l];
                #[allow(clippy::eq_op)]
                let v = if x == x { x } else { f.fill };
                let y = (v - f.a) * f.b;
                let y = if y < -f.k { -f.k } else { y };
                let y = if y > f.k { f.k } else { y };
                #[allow(clippy::eq_op)]
                let keep = v == v;
                o[l] = if keep { y } else { v };
            }
        }
    }
    let sum = |a: [f32; 8]| a.iter().map(|&v| v as f64).sum::<f64>();
    let mut m = Moments {
        shift,
        n: sum(n),
        s: sum(s),
        q: sum(q),
        lo: lo.iter().fold(f32::INFINITY, |a, &b| a.min(b)),
        hi: hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
    };
    for (i, &x) in xs.iter().enumerate().skip(whole) {
        if let Some((f, out)) = map.as_mut() {
            out[i] = f.apply(x);
        }
        m.add(x);
    }
    m
}
