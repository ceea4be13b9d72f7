//! The feature stage and monitoring end to end: counters that add up, drift alarms that fire
//! after the drift point and not before, and predict applying exactly what train applied.

use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use streamsgd::convert::write_generated;
use streamsgd::dataset::Dataset;
use streamsgd::learner::LearnerConfig;
use streamsgd::loss::Loss;
use streamsgd::model::{LinearModel, ModelFile, SharedModel};
use streamsgd::optim::{Kind, OptimConfig};
use streamsgd::pipeline::{saved_transform, train, Input, OnDrift, PipelineConfig, WindowConfig};
use streamsgd::source::gen::{GenConfig, Generator, Task};
use streamsgd::transform::{Missing, Scaling, TransformConfig};
use streamsgd::window::WindowKind;

fn gen(dir: &Path, name: &str, rows: u64, missing: f32, dups: f32, drift_at: Option<u64>) -> PathBuf {
    let p = dir.join(name);
    let cfg = GenConfig {
        task: Task::Classification,
        rows,
        features: 8,
        seed: 5,
        noise: 0.0,
        missing_rate: missing,
        duplicate_rate: dups,
        drift_at,
    };
    write_generated(&Generator::new(cfg), &p, 1024, &ProgressBar::hidden()).unwrap();
    p
}

fn cfg(threads: usize) -> PipelineConfig {
    let learner = LearnerConfig { batch: 64, grow: false, ..LearnerConfig::new(Loss::Logistic, OptimConfig::new(Kind::Normalized)) };
    PipelineConfig {
        merge_every: 16,
        transform: TransformConfig { missing: Missing::Mean, indicator: true, scaling: Scaling::Standard, clip: Some(5.0) },
        dedup_window: 64,
        ..PipelineConfig::new(learner, threads)
    }
}

fn run(c: &PipelineConfig, p: &Path) -> streamsgd::pipeline::TrainOutcome {
    let ds = Dataset::open(p).unwrap();
    let shared = Arc::new(SharedModel::new(LinearModel::zeros(Loss::Logistic, 1)));
    train(c, &mut Input::Mapped { dataset: &ds, train_rows: ds.rows() }, "t", None, shared, &ProgressBar::hidden()).unwrap()
}

#[test]
fn every_counter_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let p = gen(dir.path(), "a.ssgd", 200_000, 0.05, 0.05, None);
    for (threads, missing) in [(1, Missing::Mean), (2, Missing::Drop), (2, Missing::Zero)] {
        let mut c = cfg(threads);
        c.transform.missing = missing;
        let r = run(&c, &p).report;
        assert_eq!(r.rows, 200_000);
        assert_eq!(r.rows_learned + r.rows_dropped_missing + r.rows_dropped_duplicate + r.rows_rejected, r.rows, "{missing:?}: {r:?}");
        // The generator duplicates ~5% of rows (each a copy of one of the 16 before it).
        assert!((8_000..11_000).contains(&r.rows_dropped_duplicate), "{}", r.rows_dropped_duplicate);
        // A window per shard (a mapped file, 64 rows), each a table of 64 buckets of 128 bytes
        // plus its stash and filter.
        assert_eq!(r.dedup_windows, threads as u64);
        assert!((8192 * threads as u64..64 * 1024 * threads as u64).contains(&r.dedup_bytes), "{}", r.dedup_bytes);
        match missing {
            // 8 features at 5% missing: 1 − 0.95^8 ≈ 34% of the non-duplicate rows.
            Missing::Drop => assert!((55_000..75_000).contains(&r.rows_dropped_missing) && r.cells_imputed == 0, "{r:?}"),
            _ => assert!(r.rows_dropped_missing == 0 && (65_000..85_000).contains(&r.cells_imputed), "{r:?}"),
        }
        assert!(r.holdout.is_none() && r.progressive_accuracy.unwrap() > 0.7, "{r:?}");
    }
}

#[test]
fn drift_alarm_fires_after_the_drift_point_and_not_before() {
    // Stated bound: the alarm fires within 8192 rows (8 batches) after the drift point, and no
    // alarm fires before it.
    let dir = tempfile::tempdir().unwrap();
    let drift_at = 150_000u64;
    let p = gen(dir.path(), "d.ssgd", 300_000, 0.0, 0.0, Some(drift_at));
    let report = dir.path().join("w.jsonl");
    for (threads, on_drift) in [(1, OnDrift::Warn), (2, OnDrift::Reset)] {
        let mut c = cfg(threads);
        c.dedup_window = 0;
        c.windows =
            Some(WindowConfig { kind: WindowKind::Rows(20_000), report: Some(report.clone()), delta: 0.005, lambda: 0.5, on_drift });
        let r = run(&c, &p).report;
        assert!(!r.drift_alarms.is_empty(), "no alarm: {r:?}");
        assert!(r.drift_alarms.iter().all(|&a| a > drift_at), "alarm before the drift: {:?}", r.drift_alarms);
        assert!(r.drift_alarms[0] <= drift_at + 8192, "late alarm: {:?}", r.drift_alarms);
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(&report).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let windows: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("window").is_some()).collect();
        assert_eq!(windows.len() as u64, r.windows);
        assert_eq!(windows.iter().map(|w| w["rows"].as_u64().unwrap()).sum::<u64>(), 300_000);
        assert!(lines.iter().any(|l| l["drift"] == true));
    }
    // No drift in the data: no alarm.
    let q = gen(dir.path(), "n.ssgd", 300_000, 0.0, 0.0, None);
    let mut c = cfg(1);
    c.windows = Some(WindowConfig { kind: WindowKind::Off, report: None, delta: 0.005, lambda: 0.5, on_drift: OnDrift::Warn });
    assert_eq!(run(&c, &q).report.drift_alarms, Vec::<u64>::new());
}

#[test]
fn predict_applies_exactly_what_train_applied() {
    let dir = tempfile::tempdir().unwrap();
    let p = gen(dir.path(), "p.ssgd", 50_000, 0.05, 0.0, None);
    let model = dir.path().join("p.model");
    let out = Command::new(env!("CARGO_BIN_EXE_streamsgd"))
        .args(["train", p.to_str().unwrap(), "--missing", "mean", "--missing-indicator", "--scale", "standard", "--clip", "4"])
        .args(["--threads", "2", "--save", model.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = ModelFile::load(&model).unwrap();
    let t = saved_transform(&file.extra).unwrap().expect("the feature stage is saved");
    assert_eq!((t.d, t.output_features(), file.model.features()), (8, 16, 16));
    assert!(t.stats.count[0] > 40_000.0, "statistics of both shards: {}", t.stats.count[0]);
    // The frozen model's in-training prediction of each row, computed here from the saved
    // statistics, is what `predict` prints.
    let ds = Dataset::open(&p).unwrap();
    let (mut x, mut z) = (vec![0.0; 8], vec![0.0; 16]);
    let mut want = Vec::new();
    for b in ds.iter() {
        for r in 0..b.rows {
            b.row_into(r, &mut x);
            assert!(t.apply_row(&x, &mut z));
            assert!(z.iter().all(|v| v.is_finite() && v.abs() <= 4.0 || *v == 1.0 || *v == 0.0));
            want.push(file.model.loss.output(file.model.predict_row(&z)));
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_streamsgd"))
        .args(["predict", "--model", model.to_str().unwrap(), p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<f32> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-6, "row {i}: predict {g} vs frozen model {w}");
    }
}

#[test]
fn event_time_windows_count_late_rows() {
    // 3000 rows 10 ms apart (30 s of event time, windows of 5 s, lateness 1 s), out of order
    // by up to 0.5 s, plus every 500th row 8 s late (more than a window plus the lateness):
    // those 6 rows are late, nothing else is.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    let mut text = String::from("ts,a,b,label\n");
    let mut late = 0;
    for i in 0..3000u32 {
        let mut t = 1_700_000_000.0 + f64::from(i) * 0.01 - f64::from(i % 7) * 0.07;
        if i % 500 == 499 {
            t -= 8.0;
            late += 1;
        }
        let (a, b) = (f64::from(i % 13) / 13.0 - 0.5, f64::from(i % 11) / 11.0 - 0.5);
        text += &format!("{t:.3},{a},{b},{}\n", u8::from(a + b > 0.0));
    }
    std::fs::write(&csv, text).unwrap();
    let report = dir.path().join("w.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_streamsgd"))
        .args(["train", csv.to_str().unwrap(), "--timestamp-col", "ts", "--window-time", "5s", "--lateness", "1s"])
        .args(["--window-report", report.to_str().unwrap(), "--threads", "2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["rows"].as_u64(), r["rows_late"].as_u64()), (Some(3000), Some(late)));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&report).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let windows: Vec<_> = lines.iter().filter(|l| l.get("window").is_some()).collect();
    // 1 700 000 000 is a multiple of 5: windows start on it, 30 s → 6 or 7 windows (the first rows
    // reach back 0.42 s).
    assert!((6..=7).contains(&windows.len()), "{lines:?}");
    assert_eq!(windows.len() as u64, r["windows"].as_u64().unwrap());
    let starts: Vec<f64> = windows.iter().map(|w| w["start"].as_f64().unwrap()).collect();
    assert!(starts.windows(2).all(|p| p[1] - p[0] == 5.0), "in order, no gaps: {starts:?}");
    let sum = |k: &str| lines.iter().filter_map(|l| l[k].as_u64()).sum::<u64>();
    assert_eq!(sum("rows") + sum("late_rows"), 3000, "every row is in one window or counted as late");
    assert_eq!(sum("late_rows"), late);
    // Bad timestamps are errors that name the line and the column.
    std::fs::write(&csv, "ts,a,label\n1.0,2,1\nnoon,3,0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamsgd"))
        .args(["train", csv.to_str().unwrap(), "--timestamp-col", "ts", "--window-time", "5s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("t.csv:3: field ts") && err.contains("noon"), "{err}");
    // Event time needs the column.
    let out = Command::new(env!("CARGO_BIN_EXE_streamsgd")).args(["train", csv.to_str().unwrap(), "--window-time", "5s"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timestamp-col"));
}

/// The duplicate window is one stream-ordered window whatever the shards: with 1, 2 or 3
/// threads, batches of one block or bundles of several (`--merge-every` 1 or 16), the rows
/// dropped are exactly those a single window over the whole file in order drops.
/// Shards keep duplicate windows of their own where each batch can carry the rows before it
/// (a mapped file, a window of at most 8192 rows), else share one: either way a run drops what
/// one thread drops (whose window sees the whole stream in order) — shuffled passes, a cut
/// last block, short blocks, windows on both sides of the limit, the one-read path (mini-batch,
/// a folded stage) and the scan path (online learning).
#[test]
fn dedup_matches_one_thread_in_every_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, block_rows) in [("k.ssgd", 1024), ("s.ssgd", 256)] {
        // Rows drawn from 3000 distinct ones (a NaN cell in some): duplicates at every
        // distance, across every batch boundary.
        let p = dir.path().join(name);
        let mut w = streamsgd::dataset::DatasetWriter::create(&p, 5, block_rows, false).unwrap();
        let mut s = 12345u64;
        for _ in 0..50_000 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let k = (s >> 33) % 3000;
            let x: Vec<f32> = (0..5).map(|j| if k % 97 == j { f32::NAN } else { ((k >> (2 * j)) % 4) as f32 }).collect();
            w.push(&x, (k % 2) as f32, 1.0).unwrap();
        }
        w.finish().unwrap();
        files.push(p);
    }
    for p in &files {
        let ds = Dataset::open(p).unwrap();
        for (window, batch) in [(64, 64), (1000, 64), (5000, 1), (20_000, 64)] {
            let mut counts = Vec::new();
            for threads in [1, 2, 3] {
                let mut c = cfg(threads);
                c.transform = TransformConfig { missing: Missing::Mean, indicator: false, scaling: Scaling::Standard, clip: Some(4.0) };
                (c.dedup_window, c.learner.batch, c.passes, c.shuffle_seed) = (window, batch, 2, Some(11));
                let shared = Arc::new(SharedModel::new(LinearModel::zeros(Loss::Logistic, 1)));
                let input = &mut Input::Mapped { dataset: &ds, train_rows: ds.rows() - 777 };
                let r = train(&c, input, "t", None, shared, &ProgressBar::hidden()).unwrap().report;
                assert_eq!(r.rows_learned + r.rows_dropped_duplicate + r.rows_rejected + r.rows_dropped_missing, r.rows);
                let own = threads == 1 || streamsgd::batch::own_window_fits(window, ds.header().block_rows as usize);
                assert_eq!(r.dedup_windows, if own { threads as u64 } else { 1 }, "window {window}, {threads} threads");
                counts.push((r.rows_dropped_duplicate, r.cells_imputed));
            }
            assert!(counts[0].0 > 1000, "the generator made duplicates: {counts:?}");
            assert!(counts.iter().all(|c| *c == counts[0]), "{}: window {window}, batch {batch}: {counts:?}", p.display());
        }
    }
}

#[test]
fn dedup_is_exact_whatever_the_threads() {
    use streamsgd::dedup::Dedup;
    use streamsgd::kernel::{scan, Columns};
    let dir = tempfile::tempdir().unwrap();
    let p = gen(dir.path(), "u.ssgd", 60_000, 0.0, 0.08, None);
    let ds = Dataset::open(&p).unwrap();
    let mut window = Dedup::new(64);
    let mut fps = Vec::new();
    for b in 0..ds.blocks() {
        let blk = ds.block(b);
        let n = ds.header().rows_in_block(b) as usize;
        scan(&Columns::new(blk.data, blk.stride, blk.features, 0, n), &blk.labels[..n], Some(&mut fps), None);
        fps.iter().for_each(|&fp| {
            window.is_duplicate(fp);
        });
    }
    assert!(window.dropped > 3_000, "the generator made duplicates: {}", window.dropped);
    for (threads, merge_every) in [(1, 16), (2, 16), (3, 16), (2, 1)] {
        let mut c = cfg(threads);
        c.transform = TransformConfig::default();
        c.merge_every = merge_every;
        let r = run(&c, &p).report;
        assert_eq!(r.rows_dropped_duplicate, window.dropped, "{threads} threads, merge every {merge_every}");
        assert_eq!(r.rows_learned + r.rows_dropped_duplicate, r.rows);
    }
}

/// A standardising stage that does not clip learns its statistics in the learner's gradient
/// pass (the one-read path, after the duplicates are out): they are the two-pass mean and
/// variance of the rows learned, with one shard and with two (whose statistics merge). With
/// NaN cells, the first mini-batch that has some is predicted again imputing, and from then
/// on the predict pass sums (the non-NaN values).
#[test]
fn standardising_statistics_are_those_of_the_rows_learned() {
    let dir = tempfile::tempdir().unwrap();
    for missing in [0.0, 0.02] {
        let p = gen(dir.path(), &format!("st{missing}.ssgd"), 30_000, missing, 0.05, None);
        let ds = Dataset::open(&p).unwrap();
        let window = 64;
        // The rows learned: each row not identical (bit for bit, label included) to one of the
        // `window` rows before it; their non-NaN values.
        let d = ds.features();
        let (mut learned, mut rows): (Vec<Vec<f64>>, u64) = (vec![Vec::new(); d], 0);
        let mut last = std::collections::HashMap::new();
        let mut row = 0usize;
        for b in 0..ds.blocks() {
            let blk = ds.block(b);
            for r in 0..ds.header().rows_in_block(b) as usize {
                let x = |j: usize| blk.data[j * blk.stride + r];
                let key: Vec<u32> = (0..d).map(|j| x(j).to_bits()).chain([blk.labels[r].to_bits()]).collect();
                if last.insert(key, row).is_none_or(|seen| row - seen > window) {
                    rows += 1;
                    (0..d).filter(|&j| !x(j).is_nan()).for_each(|j| learned[j].push(x(j) as f64));
                }
                row += 1;
            }
        }
        assert!(rows < 29_000, "the generator made duplicates");
        assert_eq!(learned.iter().all(|xs| xs.len() as u64 == rows), missing == 0.0, "NaN cells where asked");
        for threads in [1, 2] {
            let mut c = cfg(threads);
            c.transform = TransformConfig { missing: Missing::Mean, indicator: false, scaling: Scaling::Standard, clip: None };
            c.dedup_window = window;
            let out = run(&c, &p);
            let what = format!("{threads} threads, missing {missing}");
            assert_eq!(out.report.rows_learned, rows, "{what}");
            let stats = saved_transform(&out.model.extra).unwrap().expect("a feature stage").stats;
            for (j, xs) in learned.iter().enumerate() {
                let n = xs.len() as f64;
                let mean = xs.iter().sum::<f64>() / n;
                let m2: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
                assert_eq!(stats.count[j], n, "{what}, feature {j}");
                assert!(
                    (stats.mean[j] - mean).abs() <= 1e-6 * (m2 / n).sqrt(),
                    "{what}, feature {j}: mean {} against {mean}",
                    stats.mean[j]
                );
                assert!((stats.m2[j] - m2).abs() <= 1e-5 * m2, "{what}, feature {j}: m2 {} against {m2}", stats.m2[j]);
            }
        }
    }
}
