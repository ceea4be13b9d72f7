//! Block iteration over a memory-mapped `.ssgd` file: GB/s of column data touched.
//! The file (d = 32, 1 M rows, 132 MB) is generated once under target/; run twice so the
//! second run reads from the page cache.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use indicatif::ProgressBar;
use std::hint::black_box;
use std::path::PathBuf;
use streamsgd::convert::write_generated;
use streamsgd::dataset::Dataset;
use streamsgd::source::gen::{GenConfig, Generator, Task};

fn bench_file() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-1m-d32.ssgd");
    if !p.exists() {
        let cfg = GenConfig {
            task: Task::Classification,
            rows: 1_000_000,
            features: 32,
            seed: 1,
            noise: 0.0,
            missing_rate: 0.0,
            duplicate_rate: 0.0,
            drift_at: None,
        };
        write_generated(&Generator::new(cfg), &p, 1024, &ProgressBar::hidden()).unwrap();
    }
    p
}

/// Sums every feature and label value: touches every byte of every block exactly once.
fn sum_blocks(ds: &Dataset) -> f32 {
    let mut acc = [0.0f32; 16];
    for b in ds.iter() {
        for j in 0..b.features {
            for c in b.column(j).chunks(16) {
                for (a, x) in acc.iter_mut().zip(c) {
                    *a += x;
                }
            }
        }
        for (a, y) in acc.iter_mut().zip(b.labels) {
            *a += y;
        }
    }
    acc.iter().sum()
}

fn iterate(c: &mut Criterion) {
    let ds = Dataset::open(bench_file()).unwrap();
    assert!(sum_blocks(&ds).is_finite());
    let mut g = c.benchmark_group("dataset");
    g.throughput(Throughput::Bytes(ds.bytes().len() as u64));
    g.sample_size(20);
    g.bench_function("iterate_blocks_sum_1m_d32", |b| b.iter(|| black_box(sum_blocks(black_box(&ds)))));
    g.bench_function("stream_bytes_1m_d32", |b| {
        b.iter(|| {
            let bytes: &[u64] = bytemuck::cast_slice(&ds.bytes()[..ds.bytes().len() / 8 * 8]);
            black_box(bytes.iter().fold(0u64, |a, &x| a ^ x))
        })
    });
    g.finish();
}

criterion_group!(benches, iterate);
criterion_main!(benches);
