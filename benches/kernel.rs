//! The learner kernel, single thread, data in cache: mini-batch update (B = 256), pure online
//! update and `predict_row`, for d = 8, 32, 128, 1024 and each kernel twin (scalar, portable,
//! avx2), so the SIMD/scalar ratio comes from one run.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use streamsgd::kernel::{force_isa, Isa};
use streamsgd::learner::{BadRows, Learner, LearnerConfig};
use streamsgd::loss::Loss;
use streamsgd::model::LinearModel;
use streamsgd::optim::{Kind, OptimConfig};

/// Four blocks of 1024 rows, laid out as in a `.ssgd` file (column stride 1024).
const ROWS: usize = 4096;
const BLOCK: usize = 1024;

fn data(d: usize) -> (Vec<f32>, Vec<f32>) {
    let mut next = common::uniform();
    let x: Vec<f32> = (0..ROWS * d).map(|_| next()).collect();
    let y: Vec<f32> = (0..ROWS).map(|_| if next() > 0.0 { 1.0 } else { 0.0 }).collect();
    (x, y)
}

fn cfg(batch: usize, kind: Kind) -> LearnerConfig {
    LearnerConfig { loss: Loss::Logistic, optim: OptimConfig::new(kind), batch, grow: false, bad_rows: BadRows::Error }
}

/// The online path without a transcendental on its critical path.
fn online_squared(c: &mut Criterion) {
    let mut g = c.benchmark_group("online_squared");
    g.throughput(Throughput::Elements(ROWS as u64));
    let d = 32;
    let (x, y) = data(d);
    for kind in [Kind::Sgd, Kind::Normalized] {
        let mut l = Learner::new(LearnerConfig { loss: Loss::Squared, ..cfg(1, kind) }, d);
        g.bench_function(format!("{:?}/{kind:?}/{d}", streamsgd::kernel::isa()), |b| {
            b.iter(|| {
                for (r, row) in x.chunks_exact(d).enumerate() {
                    l.learn_row(black_box(row), y[r], 1.0).unwrap();
                }
            })
        });
    }
    g.finish();
}

fn isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Portable, Isa::Avx2].into_iter().filter(|i| i.available()).collect()
}

fn minibatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("minibatch_b256");
    g.throughput(Throughput::Elements(ROWS as u64));
    for d in [8, 32, 128, 1024] {
        let (x, y) = data(d);
        for isa in isas() {
            force_isa(isa);
            for kind in [Kind::Sgd, Kind::Normalized] {
                let mut l = Learner::new(cfg(256, kind), d);
                g.bench_with_input(BenchmarkId::new(format!("{isa:?}/{kind:?}"), d), &d, |b, _| {
                    force_isa(isa);
                    b.iter(|| {
                        for (k, blk) in x.chunks_exact(BLOCK * d).enumerate() {
                            l.learn_rows(black_box(blk), BLOCK, d, 0, BLOCK, &y[k * BLOCK..(k + 1) * BLOCK], None).unwrap();
                        }
                    })
                });
            }
        }
    }
    g.finish();
}

fn online(c: &mut Criterion) {
    let mut g = c.benchmark_group("online");
    g.throughput(Throughput::Elements(ROWS as u64));
    for d in [8, 32, 128, 1024] {
        // Row-major for the online path: each row contiguous.
        let (x, y) = data(d);
        for isa in isas() {
            for kind in [Kind::Sgd, Kind::Normalized] {
                let mut l = Learner::new(cfg(1, kind), d);
                g.bench_with_input(BenchmarkId::new(format!("{isa:?}/{kind:?}"), d), &d, |b, _| {
                    force_isa(isa);
                    b.iter(|| {
                        for (r, row) in x.chunks_exact(d).enumerate() {
                            l.learn_row(black_box(row), y[r], 1.0).unwrap();
                        }
                    })
                });
            }
        }
    }
    g.finish();
}

fn predict(c: &mut Criterion) {
    let mut g = c.benchmark_group("predict_row");
    for d in [8, 32, 128, 1024] {
        let (x, _) = data(d);
        let m = LinearModel { loss: Loss::Logistic, weights: x[..d + 1].to_vec() };
        for isa in isas() {
            g.bench_with_input(BenchmarkId::new(format!("{isa:?}"), d), &d, |b, _| {
                force_isa(isa);
                b.iter(|| black_box(&m).predict_row(black_box(&x[d..2 * d])))
            });
        }
    }
    g.finish();
}

/// The feature stage's column pass (moments + map into scratch) over 32 columns of 256 rows.
fn feature_pass(c: &mut Criterion) {
    use streamsgd::kernel::{column_pass, ColumnMap};
    let mut g = c.benchmark_group("column_pass_256");
    let d = 32;
    let (x, _) = data(d);
    g.throughput(Throughput::Elements(256));
    let f = ColumnMap { fill: 0.5, a: 0.1, b: 2.0, k: f32::MAX };
    let mut out = vec![0.0f32; 256 * d];
    for isa in isas() {
        for map in [false, true] {
            g.bench_function(format!("{isa:?}/{}", if map { "map" } else { "moments" }), |b| {
                force_isa(isa);
                b.iter(|| {
                    let mut s = 0.0;
                    for j in 0..d {
                        let o = map.then(|| (&f, &mut out[j * 256..(j + 1) * 256]));
                        s += column_pass(&x[j * BLOCK..j * BLOCK + 256], 0.1, o).s;
                    }
                    black_box(s)
                })
            });
        }
    }
    g.finish();
}

/// The mini-batch learner reading raw columns, and reading them through a fold (mean
/// imputation and standardisation folded into its kernels), d = 32, B = 256: with NaN cells to
/// replace (`folded`), and on a chunk known to have none (`folded_clean`).
fn folded(c: &mut Criterion) {
    use streamsgd::kernel::{Columns, Fold};
    let mut g = c.benchmark_group("folded_b256");
    g.throughput(Throughput::Elements(ROWS as u64));
    let d = 32;
    let (x, y) = data(d);
    let mut f = Fold::identity(d);
    f.fill.fill(0.0);
    f.a.fill(0.1);
    f.b.fill(2.0);
    let clean = f.clone();
    f.impute = true;
    for (name, fold) in [("raw", None), ("folded", Some(&f)), ("folded_clean", Some(&clean))] {
        let mut l = Learner::new(cfg(256, Kind::Normalized), d);
        g.bench_function(name, |b| {
            b.iter(|| {
                for (k, blk) in x.chunks_exact(BLOCK * d).enumerate() {
                    let cols = Columns::new(black_box(blk), BLOCK, d, 0, BLOCK);
                    l.learn_columns(&cols, fold, &y[k * BLOCK..(k + 1) * BLOCK], None).unwrap();
                }
            })
        });
    }
    g.finish();
}

/// Duplicate detection over one pipeline batch (4096 rows, d = 32): the rows' fingerprints,
/// and the window's lookups and inserts (N = 1000).
fn dedup(c: &mut Criterion) {
    use streamsgd::dedup::Dedup;
    use streamsgd::kernel::{scan, Columns};
    let mut g = c.benchmark_group("dedup_4096x32");
    g.throughput(Throughput::Elements(ROWS as u64));
    let d = 32;
    let (x, y) = data(d);
    let mut fps = Vec::new();
    for isa in isas() {
        g.bench_function(format!("{isa:?}/hash"), |b| {
            force_isa(isa);
            b.iter(|| {
                for (k, blk) in x.chunks_exact(BLOCK * d).enumerate() {
                    scan(&Columns::new(black_box(blk), BLOCK, d, 0, BLOCK), &y[k * BLOCK..(k + 1) * BLOCK], Some(&mut fps), None);
                }
                black_box(fps[0])
            })
        });
    }
    let mut window = Dedup::new(1000);
    // Fingerprints as random as real ones (a probe's length must not be predictable).
    let fps: Vec<u64> = (0..ROWS as u64)
        .map(|i| {
            let z = (i % 3000).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z ^ (z >> 27)
        })
        .collect();
    g.bench_function("window", |b| b.iter(|| black_box(fps.iter().filter(|&&fp| window.is_duplicate(fp)).count())));
    // As the shards call it: a batch at a time, new fingerprints but for 1 row in 20 that
    // repeats the row 99 before, itself a new row (a duplicate within the window; the row 100
    // before was a repeat of an older fingerprint, found in no slot). Each iteration takes the
    // next 4096 rows of a 2^20-row stream, so the window sees new rows, not a replay.
    let stream: Vec<u64> = (0..1u64 << 20)
        .map(|i| {
            let z = (if i % 20 == 19 { i - 99 } else { i }).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z ^ (z >> 29)
        })
        .collect();
    let mut skip = [0; streamsgd::batch::BATCH_ROWS / 64];
    let mut at = 0;
    g.bench_function("mark_5pct_dups", |b| {
        b.iter(|| {
            for batch in stream[at..at + ROWS].chunks(streamsgd::batch::BATCH_ROWS) {
                skip.fill(0);
                window.mark(black_box(batch), &mut skip);
            }
            at = (at + ROWS) % stream.len();
            black_box(skip[0])
        })
    });
    // The kept rows of a 256-row mini-batch with 1 row in 20 a duplicate, column by column.
    let mut mask = [0u64; streamsgd::batch::BATCH_ROWS / 64];
    for r in (19..256).step_by(20) {
        mask[r / 64] |= 1 << (r % 64);
    }
    let mut out = vec![0.0f32; 264];
    g.bench_function("compact_5pct_dups", |b| {
        b.iter(|| {
            let mut kept = 0;
            for col in x.chunks_exact(256) {
                kept += streamsgd::kernel::compact(black_box(col), &mask, &mut out);
            }
            black_box(kept)
        })
    });
    g.finish();
}

/// The learner's predict pass over 256-row mini-batches (d = 32, a fold without clamps), alone
/// and with the scan in the same read: the rows' fingerprints, the columns' sums, both.
fn predict_scan(c: &mut Criterion) {
    use streamsgd::kernel::{predict_block_folded, predict_scan, Columns, Fold, Moments, Predictor};
    let mut g = c.benchmark_group("predict_scan_b256");
    g.throughput(Throughput::Elements(ROWS as u64));
    let d = 32;
    let (x, y) = data(d);
    let mut f = Fold::identity(d);
    f.a.fill(0.1);
    let (w, shifts) = (vec![0.5f32; d], vec![0.1f32; d]);
    let (mut out, mut fps, mut sums) = (vec![0.0f32; 256], Vec::new(), Vec::<Moments>::new());
    for isa in isas() {
        for (name, hash, sum) in [("predict", false, false), ("hash", true, false), ("sums", false, true), ("hash_sums", true, true)] {
            g.bench_function(format!("{isa:?}/{name}"), |b| {
                force_isa(isa);
                b.iter(|| {
                    for (k, blk) in x.chunks_exact(BLOCK * d).enumerate() {
                        for r0 in (0..BLOCK).step_by(256) {
                            let cols = Columns::new(black_box(blk), BLOCK, d, r0, 256);
                            let labels = &y[k * BLOCK + r0..k * BLOCK + r0 + 256];
                            if hash || sum {
                                let p = Predictor { fold: Some(&f), w: &w, bias: 0.0 };
                                predict_scan(
                                    &cols,
                                    &p,
                                    &mut out,
                                    labels,
                                    hash.then_some(&mut fps),
                                    sum.then_some((&shifts[..], &mut sums)),
                                );
                            } else {
                                predict_block_folded(&cols, &f, &w, 0.0, &mut out);
                            }
                        }
                    }
                    black_box(out[0])
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_millis(900)).sample_size(20);
    targets = dedup, feature_pass, folded, minibatch, online, online_squared, predict, predict_scan
}
criterion_main!(benches);
