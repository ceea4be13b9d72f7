//! Every kernel twin against the scalar specification and an f64 reference, on awkward lengths
//! and random data. Reductions reorder sums, so the comparison is to f64 at a tolerance scaled
//! by Σ|terms| (f32 rounding: a few ulps of the magnitude of what is summed).
#![allow(clippy::needless_range_loop)] // index loops mirror the maths here

use proptest::prelude::*;
use streamsgd::kernel::{scalar, simd, ColumnMap, Columns, Fold, Isa, Moments, Predictor};

const LENGTHS: [usize; 12] = [0, 1, 7, 8, 9, 15, 16, 31, 33, 257, 1023, 1025];

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn close(got: f32, want: f64, scale: f64, what: &str) {
    let tol = 1e-5 * scale.max(1.0);
    assert!((got as f64 - want).abs() <= tol, "{what}: got {got}, want {want} (tol {tol})");
}

type Dot = fn(&[f32], &[f32]) -> f32;
type Axpy = fn(f32, &[f32], &mut [f32]);
type Predict = fn(&Columns<'_>, &[f32], f32, &mut [f32]);
type Gradient = fn(&Columns<'_>, &[f32], &mut [f32], &mut [f32], Option<&mut [f32]>);

fn twins() -> Vec<(&'static str, Dot, Axpy, Predict, Gradient)> {
    let mut v: Vec<(&'static str, Dot, Axpy, Predict, Gradient)> = vec![
        ("scalar", scalar::dot, scalar::axpy, scalar::predict_block, scalar::gradient_block),
        ("portable", simd::dot, simd::axpy, simd::predict_block, simd::gradient_block),
    ];
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.available() {
        // SAFETY (test): only reached when the CPU has AVX2 and FMA.
        v.push((
            "avx2",
            |a, b| unsafe { streamsgd::kernel::avx2::dot(a, b) },
            |a, x, y| unsafe { streamsgd::kernel::avx2::axpy(a, x, y) },
            |c, w, b, o| unsafe { streamsgd::kernel::avx2::predict_block(c, w, b, o) },
            |c, k, g, h, m| unsafe { streamsgd::kernel::avx2::gradient_block(c, k, g, h, m) },
        ));
    } else {
        eprintln!("AVX2+FMA not available here: testing the scalar and portable twins only");
    }
    v
}

fn check_all(n: usize, d: usize, offset: usize, seed: u64) {
    let a = data(n + offset, seed);
    let b = data(n + offset, seed + 1);
    let (a, b) = (&a[offset..], &b[offset..]);
    let stride = n + offset + 3;
    let block = data(stride * d, seed + 2);
    let w = data(d, seed + 3);
    let c = data(n, seed + 4);
    let cols = Columns::new(&block, stride, d, offset, n);
    for (name, dot, axpy, predict, gradient) in twins() {
        let want: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let scale: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 * *y as f64).abs()).sum();
        close(dot(a, b), want, scale, &format!("{name} dot n={n}"));

        let mut y = b.to_vec();
        axpy(0.75, a, &mut y);
        for i in 0..n {
            // Element-wise: one rounding (FMA) or two; either is within 1 ulp-ish of f64.
            close(y[i], b[i] as f64 + 0.75 * a[i] as f64, (b[i].abs() + a[i].abs()) as f64, &format!("{name} axpy n={n} i={i}"));
        }

        let mut out = vec![f32::NAN; n];
        predict(&cols, &w, 0.5, &mut out);
        for r in 0..n {
            let want: f64 = 0.5 + (0..d).map(|j| w[j] as f64 * cols.col(j)[r] as f64).sum::<f64>();
            let scale: f64 = 0.5 + (0..d).map(|j| (w[j] as f64 * cols.col(j)[r] as f64).abs()).sum::<f64>();
            close(out[r], want, scale, &format!("{name} predict n={n} d={d} r={r}"));
        }

        let (mut g, mut h, mut m) = (vec![f32::NAN; d], vec![f32::NAN; d], vec![f32::NAN; d]);
        gradient(&cols, &c, &mut g, &mut h, Some(&mut m));
        let (mut g2, mut h2) = (vec![f32::NAN; d], vec![f32::NAN; d]);
        gradient(&cols, &c, &mut g2, &mut h2, None);
        assert_eq!((&g, &h), (&g2, &h2), "{name}: max-abs output changes nothing else");
        for j in 0..d {
            let x = cols.col(j);
            let gw: f64 = (0..n).map(|r| c[r] as f64 * x[r] as f64).sum();
            let gs: f64 = (0..n).map(|r| (c[r] as f64 * x[r] as f64).abs()).sum();
            let hw: f64 = (0..n).map(|r| (c[r] as f64 * x[r] as f64).powi(2)).sum();
            close(g[j], gw, gs, &format!("{name} gradient g n={n} j={j}"));
            close(h[j], hw, hw, &format!("{name} gradient h n={n} j={j}"));
            assert_eq!(m[j], x.iter().fold(0.0f32, |a, v| a.max(v.abs())), "{name} max-abs n={n} j={j}");
        }
    }
}

#[test]
fn awkward_lengths() {
    for &n in &LENGTHS {
        for d in [1, 3, 8, 33] {
            check_all(n, d, 0, n as u64 * 7 + d as u64);
            check_all(n, d, 5, n as u64 * 11 + d as u64);
        }
    }
}

#[test]
fn detected_isa_is_runnable() {
    assert!(streamsgd::kernel::isa().available());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_shapes(n in 0usize..600, d in 1usize..40, offset in 0usize..17, seed: u64) {
        check_all(n, d, offset, seed);
    }
}

fn check_score(n: usize, seed: u64) {
    use streamsgd::loss::Loss;
    let p: Vec<f32> = data(n, seed).iter().map(|x| x * 4.0).collect();
    let w: Vec<f32> = data(n, seed + 9).iter().map(|x| x.abs()).collect();
    for loss in [
        Loss::Squared,
        Loss::Logistic,
        Loss::Hinge,
        Loss::Huber { delta: 0.7 },
        Loss::EpsilonInsensitive { epsilon: 0.3 },
        Loss::Quantile { tau: 0.7 },
        Loss::ModifiedHuber,
        Loss::SquaredHinge,
        Loss::Perceptron,
    ] {
        let y: Vec<f32> = data(n, seed + 5).iter().map(|&v| if loss.is_classification() { v.signum() } else { v }).collect();
        for weights in [None, Some(&w[..])] {
            let (mut c0, mut c1) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            let a = scalar::score_batch(&loss, &p, &y, weights, &mut c0);
            let mut twins: Vec<(&str, streamsgd::kernel::BatchScore, Vec<f32>)> = Vec::new();
            let b = simd::score_batch(&loss, &p, &y, weights, &mut c1);
            twins.push(("portable", b, c1.clone()));
            #[cfg(target_arch = "x86_64")]
            if Isa::Avx2.available() {
                let mut c2 = vec![f32::NAN; n];
                // SAFETY (test): only reached when the CPU has AVX2 and FMA.
                let b2 = unsafe { streamsgd::kernel::avx2::score_batch(&loss, &p, &y, weights, &mut c2) };
                twins.push(("avx2", b2, c2));
            }
            for (name, b, c1) in twins {
                for r in 0..n {
                    assert!((c0[r] - c1[r]).abs() <= 1e-5 * c0[r].abs().max(1.0), "{name} {loss:?} n={n} r={r}: {} vs {}", c0[r], c1[r]);
                }
                let scale = n as f32 * 16.0;
                let pairs = [
                    (a.loss, b.loss, "loss"),
                    (a.correct, b.correct, "correct"),
                    (a.sq_err, b.sq_err, "sq_err"),
                    (a.c_sum, b.c_sum, "c_sum"),
                    (a.c_sq, b.c_sq, "c_sq"),
                    (a.n_w, b.n_w, "n_w"),
                ];
                for (x, z, what) in pairs {
                    assert!((x - z).abs() <= 1e-5 * scale.max(1.0), "{name} {loss:?} n={n} {what}: {x} vs {z}");
                }
            }
        }
    }
}

#[test]
fn loss_kernel_twins_agree() {
    for &n in &LENGTHS {
        check_score(n, n as u64 + 100);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn loss_kernel_random(n in 0usize..300, seed: u64) {
        check_score(n, seed);
    }
}

type ColumnPass = fn(&[f32], f32, Option<(&ColumnMap, &mut [f32])>) -> Moments;

fn column_twins() -> Vec<(&'static str, ColumnPass)> {
    let mut v: Vec<(&'static str, ColumnPass)> = vec![("portable", simd::column_pass)];
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.available() {
        // SAFETY (test): only reached when the CPU has AVX2 and FMA.
        v.push(("avx2", |x, s, m| unsafe { streamsgd::kernel::avx2::column_pass(x, s, m) }));
    }
    v
}

/// The feature stage's column pass: the mapped values equal the scalar map bit for bit
/// (NaN cells, clipping and infinities included), and the moments agree with the f64
/// specification.
fn check_column(n: usize, seed: u64, nan_every: usize) {
    let mut xs = data(n, seed);
    for (i, x) in xs.iter_mut().enumerate() {
        if nan_every > 0 && i % nan_every == nan_every - 1 {
            *x = f32::NAN;
        }
    }
    if n > 5 {
        xs[3] = 1e3; // clipped by the first map
    }
    if n > 5 && seed % 2 == 1 {
        xs[5] = f32::NEG_INFINITY; // the sums are then infinite: only the map and extremes are compared
    }
    let maps = [
        ColumnMap { fill: 0.25, a: 0.1, b: 2.0, k: 3.0 },
        ColumnMap { fill: f32::NAN, a: 0.0, b: 1.0, k: f32::MAX },
        ColumnMap { fill: 0.0, a: -1.0, b: 0.5, k: f32::INFINITY },
    ];
    for f in &maps {
        let mut want = vec![0.0; n];
        let spec = scalar::column_pass(&xs, 0.3, Some((f, &mut want)));
        for (name, pass) in column_twins() {
            let mut got = vec![7.0; n];
            let m = pass(&xs, 0.3, Some((f, &mut got)));
            for i in 0..n {
                assert_eq!(got[i].to_bits(), want[i].to_bits(), "{name} n={n} i={i} x={} {f:?}", xs[i]);
            }
            let bare = pass(&xs, 0.3, None);
            assert_eq!((m.n, bare.n, m.lo, m.hi), (spec.n, spec.n, spec.lo, spec.hi), "{name} n={n}");
            if spec.q.is_finite() {
                let scale = xs.iter().filter(|x| x.is_finite()).map(|&x| (x as f64 - 0.3).powi(2)).sum::<f64>();
                assert!((m.s - spec.s).abs() <= 1e-5 * scale.sqrt().max(1.0) * (n as f64).sqrt(), "{name} s");
                assert!((m.q - spec.q).abs() <= 1e-5 * scale.max(1.0), "{name} q");
            }
        }
    }
}

#[test]
fn column_pass_twins_agree() {
    for &n in &LENGTHS {
        check_column(n, n as u64 + 7, 0);
        check_column(n, n as u64 + 8, 5);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn column_pass_random(n in 0usize..300, seed: u64, nan_every in 0usize..9) {
        check_column(n, seed, nan_every);
    }
}

/// The folded kernels (the feature stage inside predict and gradient) and the moments pass:
/// the AVX2 twin against the scalar specification, which is checked against f64 on the mapped
/// values `Fold::mapped`, with NaN cells, clamps and both fill modes.
fn check_folded(n: usize, d: usize, offset: usize, seed: u64, nan_every: usize, clamp: bool, impute: bool) {
    let stride = n + offset + 3;
    let mut block = data(stride * d, seed);
    for (i, x) in block.iter_mut().enumerate() {
        if nan_every > 0 && i % nan_every == nan_every - 1 {
            *x = f32::NAN;
        }
    }
    let cols = Columns::new(&block, stride, d, offset, n);
    let (w, c) = (data(d, seed + 1), data(n, seed + 2));
    let mut f = Fold::identity(d);
    for j in 0..d {
        f.fill[j] = if nan_every > 0 { 0.25 * j as f32 - 0.5 } else { f32::NAN };
        f.a[j] = 0.1 * j as f32 - 0.3;
        f.b[j] = 0.5 + 0.25 * j as f32;
        if clamp {
            (f.lo[j], f.hi[j]) = (-1.0 - 0.01 * j as f32, 1.25);
        }
    }
    f.clamp = clamp;
    f.impute = impute;
    let u = |j: usize, r: usize| (f.value(j, cols.col(j)[r]) - f.a[j]) as f64;
    let mut want_p = vec![0.0f32; n];
    scalar::predict_block_folded(&cols, &f, &w, 0.5, &mut want_p);
    for r in 0..n {
        let exact: f64 = 0.5 + (0..d).map(|j| w[j] as f64 * u(j, r)).sum::<f64>();
        let scale: f64 = 0.5 + (0..d).map(|j| (w[j] as f64 * u(j, r)).abs()).sum::<f64>();
        if exact.is_finite() {
            close(want_p[r], exact, scale, &format!("scalar folded predict n={n} d={d} r={r}"));
        } else {
            assert!(want_p[r].is_nan(), "an unimputed NaN cell gives a NaN prediction");
        }
    }
    let (mut g, mut h, mut m) = (vec![0.0f32; d], vec![0.0f32; d], vec![0.0f32; d]);
    // The gradient pass's moments: of the values shifted by `a`, only for a fold that neither
    // clamps nor imputes (a stale entry is cleared either way).
    let mut sums = vec![Moments::empty(7.0)];
    if nan_every == 0 {
        scalar::gradient_block_folded(&cols, &f, &c, &mut g, &mut h, Some(&mut m), Some(&mut sums));
        for j in 0..d {
            let gw: f64 = (0..n).map(|r| c[r] as f64 * u(j, r)).sum();
            let gs: f64 = (0..n).map(|r| (c[r] as f64 * u(j, r)).abs()).sum();
            close(g[j], gw, gs, &format!("scalar folded g n={n} j={j}"));
            assert_eq!(m[j] as f64, (0..n).map(|r| u(j, r).abs()).fold(0.0, f64::max), "scalar folded max n={n} j={j}");
        }
        assert_eq!(sums.len(), if clamp || impute { 0 } else { d }, "scalar gradient sums n={n} d={d}");
        for (j, got) in sums.iter().enumerate() {
            let want = scalar::column_pass(cols.col(j), f.a[j], None);
            assert_eq!((got.shift, got.n, got.s, got.q), (f.a[j], want.n, want.s, want.q), "scalar gradient sums n={n} j={j}");
        }
    }
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.available() {
        let mut got = vec![f32::NAN; n];
        // SAFETY (test): AVX2 and FMA checked above.
        unsafe { streamsgd::kernel::avx2::predict_block_folded(&cols, &f, &w, 0.5, &mut got) };
        for r in 0..n {
            if want_p[r].is_nan() {
                assert!(got[r].is_nan(), "avx2 folded predict NaN n={n} r={r}");
            } else {
                let scale: f64 = 0.5 + (0..d).map(|j| (w[j] as f64 * u(j, r)).abs()).sum::<f64>();
                close(got[r], want_p[r] as f64, scale, &format!("avx2 folded predict n={n} d={d} r={r}"));
            }
        }
        if nan_every == 0 {
            for (max, sum) in [(true, true), (true, false), (false, true)] {
                let (mut g2, mut h2, mut m2, mut s2) = (vec![0.0f32; d], vec![0.0f32; d], vec![0.0f32; d], vec![Moments::empty(7.0)]);
                // SAFETY (test): AVX2 and FMA checked above.
                unsafe {
                    streamsgd::kernel::avx2::gradient_block_folded(
                        &cols,
                        &f,
                        &c,
                        &mut g2,
                        &mut h2,
                        max.then_some(&mut m2),
                        sum.then_some(&mut s2),
                    )
                };
                for j in 0..d {
                    let gs: f64 = (0..n).map(|r| (c[r] as f64 * u(j, r)).abs()).sum();
                    close(g2[j], g[j] as f64, gs, &format!("avx2 folded g n={n} j={j} sums {sum}"));
                    close(h2[j], h[j] as f64, h[j] as f64, &format!("avx2 folded h n={n} j={j} sums {sum}"));
                    if max {
                        assert_eq!(m2[j], m[j], "avx2 folded max n={n} j={j}");
                    }
                }
                if sum {
                    assert_sums(&s2, &sums, n, "avx2 gradient sums");
                } else {
                    assert_eq!(s2.len(), 1, "no sums asked: left as they were");
                }
            }
        }
        for j in 0..d {
            let xs = cols.col(j);
            let spec = scalar::column_pass(xs, 0.3, None);
            for extremes in [false, true] {
                // SAFETY (test): AVX2 and FMA checked above.
                let got = unsafe {
                    if extremes {
                        streamsgd::kernel::avx2::moments::<true>(xs, 0.3)
                    } else {
                        streamsgd::kernel::avx2::moments::<false>(xs, 0.3)
                    }
                };
                assert_eq!(got.n, spec.n, "moments count n={n}");
                let scale = xs.iter().filter(|x| !x.is_nan()).map(|&x| (x as f64 - 0.3).powi(2)).sum::<f64>();
                assert!((got.s - spec.s).abs() <= 1e-5 * scale.sqrt().max(1.0) * (n as f64).sqrt(), "moments s n={n}");
                assert!((got.q - spec.q).abs() <= 1e-5 * scale.max(1.0), "moments q n={n}");
                if extremes {
                    assert_eq!((got.lo, got.hi), (spec.lo, spec.hi), "moments extremes n={n}");
                } else {
                    assert_eq!((got.lo, got.hi), (f32::INFINITY, f32::NEG_INFINITY), "no extremes asked n={n}");
                }
            }
        }
    }
}

#[test]
fn folded_kernels_on_awkward_lengths() {
    for &n in &LENGTHS {
        for d in [1, 3, 4, 5, 8, 33] {
            for (nan_every, clamp, impute) in [(0, false, false), (0, true, true), (7, false, true), (5, true, true), (5, false, false)] {
                check_folded(n, d, n % 3, n as u64 * 13 + d as u64, nan_every, clamp, impute);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn folded_kernels_random(n in 0usize..600, d in 1usize..40, offset in 0usize..9, seed: u64, nan_every in 0usize..9, clamp: bool, impute: bool) {
        check_folded(n, d, offset, seed, nan_every, clamp, impute);
    }
}

/// The batch scan (fingerprints and shifted column sums in one read): the AVX2 twin gives the
/// scalar specification's fingerprint bits exactly, and its sums within f32 rounding, NaN where
/// the column has a NaN cell; every combination of outputs, from an offset first row.
fn check_scan(n: usize, d: usize, r0: usize, seed: u64, nan_every: usize) {
    let stride = r0 + n.max(1);
    let mut block = data(stride * d, seed);
    if nan_every > 0 {
        block.iter_mut().step_by(nan_every * 7 + 3).for_each(|x| *x = f32::NAN);
    }
    let labels = data(n, seed ^ 99);
    let shifts: Vec<f32> = (0..d).map(|j| j as f32 * 0.25 - 1.0).collect();
    let cols = Columns::new(&block, stride, d, r0, n);
    let (mut want_h, mut want_m) = (Vec::new(), Vec::new());
    scalar::scan(&cols, &labels, Some(&mut want_h), Some((&shifts, &mut want_m)));
    assert_eq!((want_h.len(), want_m.len()), (n, d));
    for (j, m) in want_m.iter().enumerate() {
        // The specification against the f64 definition.
        let v: Vec<f64> = cols.col(j).iter().map(|&x| (x - shifts[j]) as f64).collect();
        assert_eq!((m.n, m.shift, m.lo, m.hi), (n as f64, shifts[j], f32::INFINITY, f32::NEG_INFINITY));
        let (s, q) = (v.iter().sum::<f64>(), v.iter().map(|v| v * v).sum::<f64>());
        assert!(m.s.to_bits() == s.to_bits() || (m.s - s).abs() <= 1e-9 * q.max(1.0), "scalar scan s n={n} j={j}");
    }
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.available() {
        for (hash, sum) in [(true, true), (true, false), (false, true)] {
            let (mut h, mut m, mut lanes) = (vec![7u64; 3], vec![Moments::empty(9.0); 2], vec![1.0f32; 5]);
            let sums = sum.then_some((&shifts[..], &mut m, &mut lanes));
            // SAFETY (test): AVX2 and FMA checked above.
            unsafe { streamsgd::kernel::avx2::scan(&cols, &labels, hash.then_some(&mut h), sums) };
            if hash {
                assert_eq!(h, want_h, "fingerprints n={n} d={d} r0={r0}");
            }
            if sum {
                assert_sums(&m, &want_m, n, "scan");
            }
        }
    }
}

/// Column sums of a fast twin against the specification's: the same counts, shifts and (unset)
/// extremes, NaN where the specification's is, otherwise within f32 rounding.
fn assert_sums(got: &[Moments], want: &[Moments], n: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: one sum per column");
    for (j, (got, want)) in got.iter().zip(want).enumerate() {
        assert_eq!((got.n, got.shift, got.lo, got.hi), (want.n, want.shift, want.lo, want.hi), "{what} sums n={n} j={j}");
        assert_eq!(got.s.is_nan(), want.s.is_nan(), "{what}: NaN sum n={n} j={j}");
        if !want.s.is_nan() {
            let scale = want.q.max(1.0);
            assert!((got.s - want.s).abs() <= 1e-5 * scale.sqrt() * (n as f64).sqrt(), "{what} s n={n} j={j}");
            assert!((got.q - want.q).abs() <= 1e-5 * scale, "{what} q n={n} j={j}");
        }
    }
}

#[test]
fn scan_twins_agree() {
    for &n in &LENGTHS {
        for d in [0, 1, 7, 33] {
            for (r0, nan_every) in [(0, 0), (3, 0), (1, 2)] {
                check_scan(n, d, r0, n as u64 * 31 + d as u64, nan_every);
            }
        }
    }
}

proptest! {
    #[test]
    fn scan_random(n in 0usize..300, d in 0usize..40, r0 in 0usize..9, seed: u64, nan_every in 0usize..5) {
        check_scan(n, d, r0, seed, nan_every);
    }
}

/// Row compaction (the rows a batch keeps after dedup): every twin writes exactly the kept
/// values, in order, and returns their count; masks with no, all, alternate and random rows
/// skipped.
fn check_compact(n: usize, mask: &streamsgd::batch::SkipMask) {
    use streamsgd::batch::skipped;
    let xs = data(n, n as u64 + mask[0]);
    let want: Vec<f32> = xs.iter().enumerate().filter(|&(r, _)| !skipped(mask, r)).map(|(_, &x)| x).collect();
    let mut out = vec![f32::NAN; n + 8];
    assert_eq!(scalar::compact(&xs, mask, &mut out), want.len(), "scalar n={n}");
    assert_eq!(out[..want.len()].iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.available() {
        let mut out = vec![f32::NAN; n + 8];
        // SAFETY (test): AVX2 checked above.
        let m = unsafe { streamsgd::kernel::avx2::compact(&xs, mask, &mut out) };
        assert_eq!(m, want.len(), "avx2 n={n}");
        assert_eq!(
            out[..m].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "avx2 n={n}"
        );
    }
    let mut out = vec![f32::NAN; n + 8];
    assert_eq!(streamsgd::kernel::compact(&xs, mask, &mut out), want.len(), "dispatch n={n}");
    assert_eq!(out[..want.len()].iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
}

#[test]
fn compact_twins_agree() {
    let words = streamsgd::batch::BATCH_ROWS / 64;
    for &n in LENGTHS.iter().filter(|&&n| n <= words * 64) {
        for word in [0u64, !0, 0x5555_5555_5555_5555, 0x8000_0000_0000_0001, 0x0f0f_00ff_f0f0_ff00] {
            check_compact(n, &[word; streamsgd::batch::BATCH_ROWS / 64]);
        }
    }
}

proptest! {
    #[test]
    fn compact_random(n in 0usize..=1024, mask: [u64; 16], dense: bool) {
        // Dense: most rows skipped; otherwise about one in 16 (as duplicates are).
        let mask = mask.map(|w| if dense { w | w.rotate_left(7) } else { w & w.rotate_left(11) & w.rotate_left(29) & w.rotate_left(43) });
        check_compact(n, &mask);
    }
}

/// The learner's predict pass with the scan in the same read ([`streamsgd::kernel::predict_scan`]):
/// the AVX2 twin's margins are bit for bit those of its own predict kernels (the learner takes
/// either), and within f32 rounding the specification's; its fingerprints are the
/// specification's bits, its moments (of the non-NaN values) the specification's within
/// rounding. With no fold, a fold, a clamped one and an imputing one; every combination of
/// outputs, from an offset first row; the dispatcher gives the detected twin's results.
fn check_predict_scan(n: usize, d: usize, r0: usize, seed: u64, nan_every: usize, fold: u8) {
    let stride = r0 + n.max(1) + 2;
    let mut block = data(stride * d, seed);
    if nan_every > 0 {
        block.iter_mut().step_by(nan_every * 7 + 3).for_each(|x| *x = f32::NAN);
    }
    let cols = Columns::new(&block, stride, d, r0, n);
    let (labels, w) = (data(n, seed ^ 99), data(d, seed ^ 5));
    let shifts: Vec<f32> = (0..d).map(|j| j as f32 * 0.25 - 1.0).collect();
    let mut f = Fold::identity(d);
    for j in 0..d {
        (f.a[j], f.b[j], f.fill[j]) = (0.1 * j as f32 - 0.3, 0.5 + 0.25 * j as f32, 0.2 * j as f32 - 0.5);
        if fold >= 2 {
            (f.lo[j], f.hi[j]) = (-1.0 - 0.01 * j as f32, 1.25);
        }
    }
    (f.clamp, f.impute) = (fold >= 2, fold == 3);
    let p = Predictor { fold: (fold > 0).then_some(&f), w: &w, bias: 0.5 };
    let (mut want_p, mut want_h, mut want_m) = (vec![f32::NAN; n], Vec::new(), Vec::new());
    scalar::predict_scan(&cols, &p, &mut want_p, &labels, Some(&mut want_h), Some((&shifts, &mut want_m)));
    let mut spec = vec![0.0; n];
    match p.fold {
        Some(f) => scalar::predict_block_folded(&cols, f, &w, 0.5, &mut spec),
        None => scalar::predict_block(&cols, &w, 0.5, &mut spec),
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&want_p), bits(&spec), "the specification is predict then scan");
    for (j, m) in want_m.iter().enumerate() {
        let v: Vec<f64> = cols.col(j).iter().filter(|x| !x.is_nan()).map(|&x| (x - shifts[j]) as f64).collect();
        assert_eq!(m.n, v.len() as f64, "the moments of the non-NaN values n={n} j={j}");
        assert!((m.s - v.iter().sum::<f64>()).abs() <= 1e-9 * (1.0 + v.iter().map(|v| v * v).sum::<f64>()), "s n={n} j={j}");
    }
    let mut twins: Vec<(&str, Vec<f32>)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.available() {
        let mut own = vec![0.0; n];
        // SAFETY (test): AVX2 and FMA checked above.
        unsafe {
            match p.fold {
                Some(f) => streamsgd::kernel::avx2::predict_block_folded(&cols, f, &w, 0.5, &mut own),
                None => streamsgd::kernel::avx2::predict_block(&cols, &w, 0.5, &mut own),
            }
        }
        for (hash, sum) in [(true, true), (true, false), (false, true), (false, false)] {
            let (mut got, mut h, mut m) = (vec![f32::NAN; n], vec![7u64; 3], vec![Moments::empty(9.0); 2]);
            let sums = sum.then_some((&shifts[..], &mut m));
            // SAFETY (test): AVX2 and FMA checked above.
            unsafe { streamsgd::kernel::avx2::predict_scan(&cols, &p, &mut got, &labels, hash.then_some(&mut h), sums) };
            assert_eq!(bits(&got), bits(&own), "avx2 margins as its predict kernels n={n} d={d} fold={fold}");
            if hash {
                assert_eq!(h, want_h, "avx2 fingerprints n={n} d={d} r0={r0}");
            }
            if sum {
                assert_sums(&m, &want_m, n, "avx2 predict_scan");
            }
        }
        twins.push(("avx2", own));
    }
    twins.push(("scalar", want_p.clone()));
    for (name, got) in &twins {
        for r in 0..n {
            let scale: f64 = 0.5 + (0..d).map(|j| (w[j] as f64 * (f.value(j, cols.col(j)[r]) as f64 - f.a[j] as f64)).abs()).sum::<f64>();
            if want_p[r].is_nan() {
                assert!(got[r].is_nan(), "{name}: NaN margin n={n} r={r}");
            } else {
                close(got[r], want_p[r] as f64, scale, &format!("{name} margin n={n} d={d} r={r}"));
            }
        }
    }
    let (mut got, mut h, mut m) = (vec![f32::NAN; n], Vec::new(), Vec::new());
    streamsgd::kernel::predict_scan(&cols, &p, &mut got, &labels, Some(&mut h), Some((&shifts, &mut m)));
    let detected = if twins.len() == 2 && streamsgd::kernel::isa() == Isa::Avx2 { &twins[0].1 } else { &want_p };
    assert_eq!(bits(&got), bits(detected), "dispatch n={n}");
    assert_eq!(h, want_h, "dispatch fingerprints n={n}");
    assert_sums(&m, &want_m, n, "dispatch");
}

#[test]
fn predict_scan_twins_agree() {
    for &n in &LENGTHS {
        for d in [0, 1, 3, 4, 5, 8, 33] {
            for (r0, nan_every, fold) in [(0, 0, 0), (3, 0, 1), (1, 0, 2), (2, 2, 3), (0, 1, 1)] {
                check_predict_scan(n, d, r0, n as u64 * 17 + d as u64, nan_every, fold);
            }
        }
    }
}

proptest! {
    #[test]
    fn predict_scan_random(n in 0usize..600, d in 0usize..40, r0 in 0usize..9, seed: u64, nan_every in 0usize..5, fold in 0u8..4) {
        check_predict_scan(n, d, r0, seed, nan_every, fold);
    }
}

proptest! {
    #[test]
    fn moments_remove_leaves_the_moments_of_the_rest(n in 0usize..300, seed: u64, nan_every in 0usize..5, drop_every in 1usize..9) {
        let mut xs = data(n, seed);
        if nan_every > 0 {
            xs.iter_mut().step_by(nan_every).for_each(|x| *x = f32::NAN);
        }
        let dropped: Vec<f32> = xs.iter().copied().step_by(drop_every).collect();
        let kept: Vec<f32> = xs.iter().enumerate().filter(|(i, _)| i % drop_every != 0).map(|(_, &x)| x).collect();
        let mut m = scalar::column_pass(&xs, 0.3, None);
        let want = scalar::column_pass(&kept, 0.3, None);
        let before = m;
        m.remove(xs.iter().copied().filter(|x| x.is_nan()));
        prop_assert_eq!((m.n, m.s.to_bits(), m.q.to_bits()), (before.n, before.s.to_bits(), before.q.to_bits()), "NaN cells change nothing");
        m.remove(dropped);
        prop_assert_eq!(m.n, want.n);
        let scale = want.q.max(1.0) + before.q;
        prop_assert!((m.s - want.s).abs() <= 1e-9 * scale.sqrt() * (n as f64 + 1.0), "s {} vs {}", m.s, want.s);
        prop_assert!((m.q - want.q).abs() <= 1e-9 * scale, "q {} vs {}", m.q, want.q);
    }
}

/// A program's row-major rows into the learner's columns: every twin puts value `j` of row `r`
/// at `j·stride + r`, bit for bit, and leaves the padding between columns alone.
fn check_transpose(n: usize, d: usize, pad: usize) {
    let rows = data(n * d, (n * 31 + d) as u64);
    let stride = n + pad;
    let want = |cols: &[f32], what: &str| {
        for r in 0..n {
            for j in 0..d {
                assert_eq!(cols[j * stride + r].to_bits(), rows[r * d + j].to_bits(), "{what} n={n} d={d} row {r} value {j}");
            }
            for j in 0..d.saturating_sub(1) {
                for k in n..stride {
                    assert!(cols[j * stride + k].is_nan(), "{what}: padding written");
                }
            }
        }
    };
    let len = (d - 1) * stride + n;
    let mut cols = vec![f32::NAN; len];
    scalar::transpose(&rows, d, &mut cols, stride);
    want(&cols, "scalar");
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.available() {
        let mut cols = vec![f32::NAN; len];
        // SAFETY (test): AVX2 checked above.
        unsafe { streamsgd::kernel::avx2::transpose(&rows, d, &mut cols, stride) };
        want(&cols, "avx2");
    }
    let mut cols = vec![f32::NAN; len];
    streamsgd::kernel::transpose(&rows, d, &mut cols, stride);
    want(&cols, "dispatch");
}

#[test]
fn transpose_twins_agree() {
    for &n in LENGTHS.iter().filter(|&&n| n <= 1100) {
        for d in [1, 2, 7, 8, 9, 16, 33] {
            check_transpose(n, d, 0);
            check_transpose(n, d, 17);
        }
    }
}

proptest! {
    #[test]
    fn transpose_random(n in 0usize..300, d in 1usize..40, pad in 0usize..40) {
        check_transpose(n, d, pad);
    }
}
