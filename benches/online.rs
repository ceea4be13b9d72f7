//! `OnlineModel`, the API a program learns through: `learn_batch` on row-major batches of
//! 10 000 rows × 32 (what Python's `partial_fit` hands it), the CLI's defaults (AdaGrad,
//! online standardisation, mini-batches of 256) and scikit-learn's algorithm (SGD, one row per
//! step, no scaling); and `learn_named` on rows of 32 named numbers (River's `learn_one`), the
//! names hashed per row or their keys kept (`learn_keyed`, what the Python package does).
//! The batches are in memory the first time each is read, as a program's are.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use streamsgd::loss::Loss;
use streamsgd::online::{Features, OnlineConfig, OnlineModel};
use streamsgd::optim::{Kind, OptimConfig, Schedule};
use streamsgd::sparse::parse::Named;
use streamsgd::transform::Scaling;

const ROWS: usize = 10_000;
const D: usize = 32;
/// Batches cycled through: 40 MB, more than the caches.
const BATCHES: usize = 32;

fn data() -> (Vec<f32>, Vec<f32>) {
    let mut next = common::uniform();
    let x: Vec<f32> = (0..BATCHES * ROWS * D).map(|_| next()).collect();
    let y: Vec<f32> = x.chunks(D).map(|r| f32::from(r.iter().take(8).sum::<f32>() > 0.0)).collect();
    (x, y)
}

fn learn_batch(c: &mut Criterion) {
    let (x, y) = data();
    let mut g = c.benchmark_group("online_learn_batch");
    g.throughput(Throughput::Elements(ROWS as u64));
    let sklearn = {
        let mut cfg = OnlineConfig::dense(Loss::Logistic, D);
        cfg.optim = OptimConfig { schedule: Schedule::Optimal, l2: 1e-4, lr: 10.0, ..OptimConfig::new(Kind::Sgd) };
        (cfg.batch, cfg.grow) = (1, false);
        if let Features::Dense { stage, .. } = &mut cfg.features {
            stage.scaling = Scaling::None;
        }
        cfg
    };
    let defaults = OnlineConfig { batch: 256, grow: false, ..OnlineConfig::dense(Loss::Logistic, D) };
    for (name, cfg) in [("defaults", defaults), ("sklearn_sgd", sklearn)] {
        let mut m = OnlineModel::new(cfg).unwrap();
        let mut b = 0;
        g.bench_function(name, |bench| {
            bench.iter(|| {
                let (xs, ys) = (&x[b * ROWS * D..(b + 1) * ROWS * D], &y[b * ROWS..(b + 1) * ROWS]);
                m.learn_batch(black_box(xs), ys, None).unwrap();
                b = (b + 1) % BATCHES;
            })
        });
    }
    g.finish();
}

fn learn_named(c: &mut Criterion) {
    let (x, y) = data();
    let names: Vec<String> = (0..D).map(|j| format!("x{j}")).collect();
    let mut g = c.benchmark_group("online_learn_named");
    g.throughput(Throughput::Elements(1));
    let mut m = OnlineModel::new(OnlineConfig::sparse(Loss::Logistic, 12)).unwrap();
    let mut r = 0;
    g.bench_function("32_numbers", |bench| {
        bench.iter(|| {
            let row = &x[r * D..(r + 1) * D];
            m.learn_named(names.iter().zip(row).map(|(n, &v)| (n.as_str(), Named::Number(v))), y[r]).unwrap();
            r = (r + 1) % (BATCHES * ROWS);
        })
    });
    // The names hashed once (what the Python package does with a dict's keys).
    let keys: Vec<_> = names.iter().map(|n| m.name_key(n).unwrap()).collect();
    g.bench_function("32_numbers_keyed", |bench| {
        bench.iter(|| {
            let row = &x[r * D..(r + 1) * D];
            m.learn_keyed(keys.iter().zip(row).map(|(&k, &v)| (k, Named::Number(v))), y[r]).unwrap();
            r = (r + 1) % (BATCHES * ROWS);
        })
    });
    g.finish();
}

criterion_group!(benches, learn_batch, learn_named);
criterion_main!(benches);
