//! The streaming pipeline end to end: accounting, merging quality, allocation-free steady
//! state, sources (mapped, text, stdin, socket), pacing, checkpoints under SIGKILL, predict.

use indicatif::ProgressBar;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use streamsgd::convert::{open_parser, write_generated};
use streamsgd::dataset::Dataset;
use streamsgd::learner::{BadRows, LearnerConfig};
use streamsgd::loss::Loss;
use streamsgd::merge::MergeMode;
use streamsgd::model::{LinearModel, ModelFile, SharedModel};
use streamsgd::optim::{Kind, OptimConfig};
use streamsgd::pipeline::{train, Input, PipelineConfig, TrainOutcome};
use streamsgd::source::gen::{GenConfig, Generator, Task};
use streamsgd::source::{TextFormat, TextOptions};

fn gen_file(dir: &Path, name: &str, task: Task, rows: u64, missing: f32) -> PathBuf {
    let p = dir.join(name);
    // Noise: Gaussian σ for regression; for classification it would flip labels, so none.
    let noise = if task == Task::Regression { 0.5 } else { 0.0 };
    let cfg = GenConfig { task, rows, features: 16, seed: 21, noise, missing_rate: missing, duplicate_rate: 0.0, drift_at: None };
    write_generated(&Generator::new(cfg), &p, 1024, &ProgressBar::hidden()).unwrap();
    p
}

fn cfg(threads: usize, merge: MergeMode) -> PipelineConfig {
    let learner = LearnerConfig { batch: 256, grow: false, ..LearnerConfig::new(Loss::Logistic, OptimConfig::new(Kind::Normalized)) };
    PipelineConfig { merge, ..PipelineConfig::new(learner, threads) }
}

fn shared() -> Arc<SharedModel> {
    Arc::new(SharedModel::new(LinearModel::zeros(Loss::Logistic, 1)))
}

fn run_mapped(c: &PipelineConfig, path: &Path, holdout: f64) -> TrainOutcome {
    let ds = Dataset::open(path).unwrap();
    let train_rows = ds.rows() - (ds.rows() as f64 * holdout) as u64;
    train(c, &mut Input::Mapped { dataset: &ds, train_rows }, "t", None, shared(), &ProgressBar::hidden()).unwrap()
}

fn run_text(c: &PipelineConfig, path: &Path, skip_bad: bool) -> TrainOutcome {
    let mut parser = open_parser(path, TextFormat::Csv, &TextOptions::default(), &Default::default()).unwrap();
    train(c, &mut Input::Stream { parser: &mut parser, train_rows: None, skip_bad }, "t", None, shared(), &ProgressBar::hidden()).unwrap()
}

#[test]
fn two_shards_are_within_two_percent_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = gen_file(dir.path(), "a.ssgd", Task::Classification, 400_000, 0.0);
    let one = run_mapped(&cfg(1, MergeMode::Sync), &p, 0.2).report.holdout.unwrap().loss;
    assert!(one < 0.5, "the single-shard model learned something: {one}");
    for mode in [MergeMode::Sync, MergeMode::Async] {
        let two = run_mapped(&cfg(2, mode), &p, 0.2).report;
        let h = two.holdout.unwrap();
        assert_eq!(h.rows, 80_000);
        assert!((h.loss - one).abs() / one < 0.02, "{mode:?}: 2 shards {} vs 1 shard {one}", h.loss);
        assert_eq!(two.rows, 320_000);
        assert!(two.merges > 0);
    }
}

#[test]
fn rows_in_equal_rows_learned_plus_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = gen_file(dir.path(), "m.ssgd", Task::Classification, 50_000, 0.01);
    let csv = gen_file(dir.path(), "m.csv", Task::Classification, 50_000, 0.01);
    let mut c = cfg(2, MergeMode::Async);
    c.learner.bad_rows = BadRows::Skip;
    for r in [run_mapped(&c, &p, 0.0).report, run_text(&c, &csv, true).report] {
        assert_eq!(r.rows, 50_000);
        assert_eq!(r.rows_learned + r.rows_rejected, r.rows);
        // 16 features at 1% missing: about 15% of rows have a NaN.
        assert!((5_000..10_000).contains(&r.rows_rejected), "{}", r.rows_rejected);
        assert!(r.first_rejected.unwrap().contains("NaN"));
    }
    // Without --skip-bad the same data is an error naming the row — the stream's row, also with
    // two shards (each learns every other batch).
    let dir2 = tempfile::tempdir().unwrap();
    let q = dir2.path().join("one-nan.ssgd");
    let mut w = streamsgd::dataset::DatasetWriter::create(&q, 2, 1024, false).unwrap();
    for r in 0..5000u32 {
        let x = if r == 3210 { [1.0, f32::NAN] } else { [r as f32 / 5000.0, 1.0] };
        w.push(&x, (r % 2) as f32, 1.0).unwrap();
    }
    w.finish().unwrap();
    let ds2 = Dataset::open(&q).unwrap();
    let e = train(
        &cfg(2, MergeMode::Sync),
        &mut Input::Mapped { dataset: &ds2, train_rows: 5000 },
        "one-nan.ssgd",
        None,
        shared(),
        &ProgressBar::hidden(),
    )
    .err()
    .unwrap();
    // Rows numbered from 1: index 3210 is row 3211.
    assert_eq!(e.to_string(), "one-nan.ssgd: row 3211: feature 1 is NaN (missing or infinite values need a --missing policy)");
    // Without --skip-bad the same data is an error naming the row.
    let ds = Dataset::open(&p).unwrap();
    let e = train(
        &cfg(1, MergeMode::Sync),
        &mut Input::Mapped { dataset: &ds, train_rows: 50_000 },
        "m.ssgd",
        None,
        shared(),
        &ProgressBar::hidden(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().starts_with("m.ssgd: row ") && e.to_string().contains("is NaN"), "{e}");
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamsgd"))
}

fn out(c: &mut Command) -> (bool, String, String) {
    let o = c.output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn json_report_has_stable_fields_and_predict_matches_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = gen_file(dir.path(), "j.ssgd", Task::Classification, 30_000, 0.0);
    let csv = gen_file(dir.path(), "j.csv", Task::Classification, 30_000, 0.0);
    let model = dir.path().join("j.model");
    let hgrm = dir.path().join("j.hgrm");
    let (ok, stdout, err) = out(bin().args([
        "train",
        p.to_str().unwrap(),
        "--holdout",
        "0.1",
        "--json",
        "--save",
        model.to_str().unwrap(),
        "--hgrm",
        hgrm.to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for k in ["rows", "seconds", "rows_per_sec", "threads", "progressive_loss"] {
        assert!(v[k].is_number(), "{k} in {v}");
    }
    for k in ["loss", "accuracy", "auc"] {
        assert!(v["holdout"][k].is_number(), "holdout.{k}");
    }
    for k in ["p50", "p90", "p99", "p999", "max"] {
        assert!(v["latency_ns"][k].is_number(), "latency_ns.{k}");
    }
    assert_eq!(v["rows"], 27_000);
    assert!(std::fs::read_to_string(&hgrm).unwrap().contains("Percentile"));
    for k in ["progressive_baseline", "holdout.baseline"] {
        let v = k.split('.').fold(&v, |v, part| &v[part]);
        assert!(v.as_f64().is_some_and(|b| b > 0.5 && b < 0.7), "{k} = {v}");
    }
    // predict from text and from the mapped file: the model's probabilities, line by line,
    // through the saved feature stage (standardisation by default).
    let file = ModelFile::load(&model).unwrap();
    let stage = streamsgd::pipeline::saved_transform(&file.extra).unwrap().expect("a feature stage");
    let m = file.model;
    let ds = Dataset::open(&p).unwrap();
    let mut want = Vec::new();
    let (mut row, mut seen) = (vec![0.0; 16], vec![0.0; 16]);
    for b in ds.iter() {
        for r in 0..b.rows {
            b.row_into(r, &mut row);
            assert!(stage.apply_row(&row, &mut seen));
            want.push(m.loss.output(m.predict_row(&seen)));
        }
    }
    for data in [csv.to_str().unwrap(), p.to_str().unwrap()] {
        let (ok, stdout, err) = out(bin().args(["predict", "--model", model.to_str().unwrap(), data]));
        assert!(ok, "{err}");
        assert!(err.contains("per-row latency"), "{err}");
        let got: Vec<f32> = stdout.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
}

#[test]
fn predict_on_csv_without_labels() {
    let dir = tempfile::tempdir().unwrap();
    let csv = gen_file(dir.path(), "u.csv", Task::Regression, 2_000, 0.0);
    let model = dir.path().join("u.model");
    assert!(out(bin().args(["train", csv.to_str().unwrap(), "--loss", "squared", "--save", model.to_str().unwrap()])).0);
    // Drop the label column (the last one) from header and rows.
    let text = std::fs::read_to_string(&csv).unwrap();
    let unlabeled: String = text.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n").collect();
    let u = dir.path().join("unlabeled.csv");
    std::fs::write(&u, &unlabeled).unwrap();
    let (ok, a, err) = out(bin().args(["predict", "--model", model.to_str().unwrap(), u.to_str().unwrap()]));
    assert!(ok, "{err}");
    let (ok, b, err) = out(bin().args(["predict", "--model", model.to_str().unwrap(), csv.to_str().unwrap()]));
    assert!(ok, "{err}");
    assert_eq!(a.lines().count(), 2_000);
    assert_eq!(a, b, "same rows, with or without the label column");
}

#[test]
fn stdin_and_socket_sources() {
    let dir = tempfile::tempdir().unwrap();
    let csv = gen_file(dir.path(), "s.csv", Task::Regression, 5_000, 0.0);
    let text = std::fs::read(&csv).unwrap();
    let mut child = bin()
        .args(["train", "-", "--format", "csv", "--loss", "squared", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rows"], 5_000);

    // A socket that sends everything then closes cleanly.
    let serve = |payload: Vec<u8>| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = s.write_all(&payload);
        });
        (format!("tcp://{addr}"), h)
    };
    let (url, h) = serve(text.clone());
    let (ok, stdout, err) = out(bin().args(["train", &url, "--format", "csv", "--loss", "squared", "--json"]));
    h.join().unwrap();
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["rows"], 5_000);
    // A socket that closes in the middle of a record: a clear error, not a truncated number.
    let cut = text.len() - 7;
    let (url, h) = serve(text[..cut].to_vec());
    let (ok, _, err) = out(bin().args(["train", &url, "--format", "csv", "--loss", "squared"]));
    h.join().unwrap();
    assert!(!ok);
    assert!(err.contains("tcp://") && err.contains("closed in the middle of a record"), "{err}");
    // Nothing listening: a clear error.
    let (ok, _, err) = out(bin().args(["train", "tcp://127.0.0.1:1", "--format", "csv"]));
    assert!(!ok && err.contains("cannot connect"), "{err}");
}

#[test]
fn rate_paces_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let p = gen_file(dir.path(), "r.ssgd", Task::Classification, 200_000, 0.0);
    let mut c = cfg(1, MergeMode::Sync);
    c.rate = Some(1_000_000.0);
    let r = run_mapped(&c, &p, 0.0).report;
    // 200k rows at 1M rows/s: 0.2 s (the last batch is sent at 0.199 s).
    assert!((0.19..0.35).contains(&r.seconds), "{}", r.seconds);
    assert!(r.latency_ns.p50 < 5_000_000, "{:?}", r.latency_ns);
}

#[test]
fn sigkill_mid_checkpoint_leaves_a_usable_checkpoint_and_resume_continues() {
    let dir = tempfile::tempdir().unwrap();
    let p = gen_file(dir.path(), "k.ssgd", Task::Classification, 300_000, 0.0);
    let ck = dir.path().join("ck.model");
    for delay_ms in [40u64, 90, 150, 230, 310] {
        let mut child = bin()
            .args(["train", p.to_str().unwrap(), "--passes", "200", "--threads", "2", "--merge-every", "1"])
            .args(["--checkpoint", ck.to_str().unwrap(), "--checkpoint-every", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if ck.exists() {
            let f = ModelFile::load(&ck).unwrap_or_else(|e| panic!("after SIGKILL at {delay_ms} ms: {e}"));
            assert_eq!(f.model.features(), 16);
        }
    }
    assert!(ck.exists(), "no checkpoint was ever written");
    let before = ModelFile::load(&ck).unwrap();
    let (ok, stdout, err) = out(bin().args(["train", p.to_str().unwrap(), "--resume", ck.to_str().unwrap(), "--holdout", "0.1", "--json"]));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["holdout"]["loss"].as_f64().unwrap() < 0.5, "{v}");
    assert!(before.optimizer.t > 0.0);
}

/// A CSV with what trips a splitter: a BOM, CRLF lines, quoted cells, blank lines, malformed
/// lines and NaN cells (rejected by the learner), a last line without its newline.
fn awkward_csv(rows: usize) -> String {
    let mut s = String::from("\u{feff}a,\"b\",label\r\n");
    let mut x = 7u64;
    for i in 0..rows {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (a, b) = ((x >> 40) as f32 / 16777216.0, (x >> 16 & 0xffff) as f32 / 65536.0);
        let y = u8::from(a + b > 1.0);
        match i % 113 {
            5 => s.push_str("\r\n"),
            17 => s.push_str("1,2,3,4\n"),
            29 => s.push_str(&format!("{a},NaN,{y}\n")),
            41 => s.push_str(&format!("\"{a}\",\"{b}\",{y}\r\n")),
            _ => s.push_str(&format!("{a},{b},{y}\n")),
        }
    }
    s.push_str("0.5,0.5,1");
    s
}

#[test]
fn shards_parsing_their_own_ranges_count_and_report_as_one_reader() {
    use streamsgd::source::split::SplitText;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.csv");
    std::fs::write(&path, awkward_csv(20_000)).unwrap();
    let parser = || open_parser(&path, TextFormat::Csv, &TextOptions::default(), &Default::default()).unwrap();
    let stream = |c: &PipelineConfig, skip_bad| {
        let mut p = parser();
        train(c, &mut Input::Stream { parser: &mut p, train_rows: None, skip_bad }, "a.csv", None, shared(), &ProgressBar::hidden())
    };
    let split = |c: &PipelineConfig, skip_bad, range: usize| {
        let p = parser();
        let text = SplitText::open(&path, p.bytes(), p.line_no(), 0.0, TextFormat::Csv).unwrap().with_range_bytes(range);
        let mut input = Input::Split { text: &text, parser: p.detached(std::io::empty(), 0), skip_bad };
        train(c, &mut input, "a.csv", None, shared(), &ProgressBar::hidden())
    };
    let mut c = cfg(1, MergeMode::Sync);
    c.learner.bad_rows = BadRows::Skip;
    let one = stream(&c, true).unwrap().report;
    assert!(one.rows_rejected > 300 && one.first_rejected.as_deref().is_some_and(|w| w.contains("a.csv:19:")), "{one:?}");
    for range in [1, 333, 4096, 1 << 20] {
        for threads in [1, 2, 3] {
            for mode in [MergeMode::Sync, MergeMode::Async] {
                let c = PipelineConfig { threads, merge: mode, ..c.clone() };
                let r = split(&c, true, range).unwrap().report;
                let want = (one.rows, one.rows_learned, one.rows_rejected, &one.first_rejected);
                assert_eq!((r.rows, r.rows_learned, r.rows_rejected, &r.first_rejected), want, "{threads} threads, {range}-byte ranges");
                // Ranges of hundreds of rows learn as one reader does (tiny ones are tiny batches).
                // One range holds the whole file: one shard learns it as one reader does.
                if range == 1 << 20 {
                    assert_eq!(r.progressive_loss.to_bits(), one.progressive_loss.to_bits());
                }
                // Without --skip-bad the first malformed line stops the run, named alike.
                let e = |r: Result<TrainOutcome, streamsgd::pipeline::PipelineError>| {
                    r.map(|o| o.source_error.map(|e| e.to_string())).map_err(|e| e.to_string())
                };
                assert_eq!(
                    e(split(&c, false, range)),
                    e(stream(&cfg(1, MergeMode::Sync), false)),
                    "{threads} threads, {range}-byte ranges, {mode:?}"
                );
            }
        }
    }
}

#[test]
fn a_stop_ends_shards_parsing_their_own_ranges_after_the_same_merge() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use streamsgd::source::split::SplitText;
    let dir = tempfile::tempdir().unwrap();
    let path = gen_file(dir.path(), "s.csv", Task::Classification, 300_000, 0.0);
    for (threads, mode, after_ms) in [(3, MergeMode::Sync, 0), (3, MergeMode::Sync, 30), (2, MergeMode::Async, 30), (3, MergeMode::Sync, 5)]
    {
        let stop = Arc::new(AtomicBool::new(after_ms == 0));
        let c = PipelineConfig { stop: Some(stop.clone()), merge_every: 2, ..cfg(threads, mode) };
        let p = open_parser(&path, TextFormat::Csv, &TextOptions::default(), &Default::default()).unwrap();
        let text = SplitText::open(&path, p.bytes(), p.line_no(), 0.0, TextFormat::Csv).unwrap().with_range_bytes(16 << 10);
        let setter = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(after_ms));
            stop.store(true, Ordering::Release);
        });
        let mut input = Input::Split { text: &text, parser: p.detached(std::io::empty(), 0), skip_bad: false };
        let r = train(&c, &mut input, "s.csv", None, shared(), &ProgressBar::hidden()).unwrap().report;
        setter.join().unwrap();
        assert!(r.stopped, "{threads} shards, stop after {after_ms} ms");
        assert!(r.rows < 300_000 && r.rows_learned == r.rows, "{threads} shards, stop after {after_ms} ms: {} rows", r.rows);
        if after_ms == 0 {
            assert_eq!(r.rows, 0);
        }
    }
}

#[test]
fn a_stream_dealt_to_the_shards_in_chunks_counts_and_reports_as_one_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.csv");
    // Long enough for several chunks (4 KiB at least each).
    let text = awkward_csv(60_000);
    std::fs::write(&path, &text).unwrap();
    let mut c = cfg(1, MergeMode::Sync);
    c.learner.bad_rows = BadRows::Skip;
    let open = || open_parser(&path, TextFormat::Csv, &TextOptions::default(), &Default::default()).unwrap();
    let one_reader = |c: &PipelineConfig, skip_bad| {
        let mut p = open();
        train(c, &mut Input::Stream { parser: &mut p, train_rows: None, skip_bad }, "a.csv", None, shared(), &ProgressBar::hidden())
    };
    let chunked = |c: &PipelineConfig, skip_bad, require_newline| {
        let mut p = open();
        let template = p.detached(std::io::empty(), 0);
        let header_lines = p.line_no();
        let mut input = Input::Chunked { reader: p.reader_mut(), parser: template, header_lines, require_newline, skip_bad };
        train(c, &mut input, "a.csv", None, shared(), &ProgressBar::hidden())
    };
    let one = one_reader(&c, true).unwrap().report;
    for threads in [2, 3] {
        for mode in [MergeMode::Sync, MergeMode::Async] {
            let c = PipelineConfig { threads, merge: mode, merge_every: 2, ..c.clone() };
            let r = chunked(&c, true, false).unwrap().report;
            let want = (one.rows, one.rows_learned, one.rows_rejected, &one.first_rejected);
            assert_eq!((r.rows, r.rows_learned, r.rows_rejected, &r.first_rejected), want, "{threads} shards, {mode:?}");
            let e = |r: Result<TrainOutcome, streamsgd::pipeline::PipelineError>| {
                r.map(|o| o.source_error.map(|e| e.to_string())).map_err(|e| e.to_string())
            };
            assert_eq!(e(chunked(&c, false, false)), e(one_reader(&cfg(1, MergeMode::Sync), false)), "{threads} shards, {mode:?}");
            // Where records must end with a newline (a socket), the last line cut short is an
            // error on its line, counted with --skip-bad.
            let r = chunked(&c, true, true).unwrap().report;
            assert_eq!((r.rows, r.rows_rejected), (one.rows, one.rows_rejected + 1), "{threads} shards, {mode:?}");
        }
    }
}

/// A source of its own for one shard: `rows` rows (label = row number mod 2), idle every
/// `idle_every` pulls, failing at row `fail_at`; it records what the shard tells it.
struct Own {
    rows: u64,
    at: u64,
    pulls: u64,
    idle_every: u64,
    fail_at: Option<u64>,
    sent: u64,
    learned: Vec<u64>,
}

impl Own {
    fn new(rows: u64, idle_every: u64, fail_at: Option<u64>) -> Self {
        Own { rows, at: 0, pulls: 0, idle_every, fail_at, sent: 0, learned: Vec::new() }
    }
}

impl streamsgd::source::RowSource for Own {
    fn features(&self) -> usize {
        4
    }

    fn has_timestamps(&self) -> bool {
        false
    }

    fn pull(&mut self, feats: &mut [f32], _wait: bool) -> Result<streamsgd::source::Pull, streamsgd::source::ParseError> {
        use streamsgd::source::{ParsedRow, Pull};
        self.pulls += 1;
        if self.pulls % self.idle_every == 0 {
            return Ok(Pull::Idle);
        }
        if self.at == self.rows {
            return Ok(Pull::End);
        }
        self.at += 1;
        if self.fail_at == Some(self.at) {
            return Err(streamsgd::source::ParseError {
                source: "own".into(),
                line: self.at,
                field: None,
                what: "bad".into(),
                fatal: false,
            });
        }
        let y = (self.at % 2) as f32;
        feats.copy_from_slice(&[y, 1.0 - y, 0.5, (self.at % 7) as f32]);
        Ok(Pull::Row(ParsedRow { label: y, weight: 1.0, line: self.at, time: f64::NAN }))
    }

    fn sent(&mut self, seq: u64, held_back: bool) {
        assert!(!held_back && seq == self.sent, "batches are numbered in order");
        self.sent += 1;
    }

    fn learned(&mut self, seq: u64) -> Result<(), streamsgd::source::ParseError> {
        assert!(seq == u64::MAX || seq <= self.sent, "learned {seq} of {} sent", self.sent);
        assert!(self.learned.last().is_none_or(|&l| l != u64::MAX), "nothing after the final commit");
        self.learned.push(seq);
        Ok(())
    }
}

#[test]
fn shards_reading_sources_of_their_own_learn_every_row_and_tell_each_source() {
    for mode in [MergeMode::Sync, MergeMode::Async] {
        // Unequal shares, one empty, idle gaps: every shard still meets the others' merges.
        let mut sources = [Own::new(50_000, 97, None), Own::new(0, 5, None), Own::new(7_321, 3, None)];
        let mut refs: Vec<&mut (dyn streamsgd::source::RowSource + Send)> = Vec::new();
        for s in sources.iter_mut() {
            refs.push(s);
        }
        let c = cfg(3, mode);
        let out = train(&c, &mut Input::Owned { sources: refs, skip_bad: false }, "own", None, shared(), &ProgressBar::hidden()).unwrap();
        let r = out.report;
        assert!(out.source_error.is_none());
        assert_eq!((r.rows, r.rows_learned, r.threads), (57_321, 57_321, 3), "{mode:?}");
        assert!(r.merges >= 2);
        assert!(r.progressive_accuracy.unwrap() > 0.9, "{mode:?}: {r:?}");
        for s in &sources {
            // Every batch made was learned, and the last word is the final commit.
            assert_eq!(s.learned.last(), Some(&u64::MAX), "{mode:?}");
            assert!(s.learned.windows(2).all(|w| w[0] <= w[1]));
        }
        assert!(sources[0].sent > 0 && sources[1].sent == 0);
    }
}

#[test]
fn a_failing_source_of_its_own_ends_the_run_and_commits_nothing_past_it() {
    let mut sources = [Own::new(40_000, 50, Some(30_000)), Own::new(40_000, 50, None)];
    let mut refs: Vec<&mut (dyn streamsgd::source::RowSource + Send)> = Vec::new();
    for s in sources.iter_mut() {
        refs.push(s);
    }
    let out = train(
        &cfg(2, MergeMode::Sync),
        &mut Input::Owned { sources: refs, skip_bad: false },
        "own",
        None,
        shared(),
        &ProgressBar::hidden(),
    )
    .unwrap();
    let e = out.source_error.expect("the bad row ends the run").to_string();
    assert!(e.contains("own:30000") && e.contains("bad"), "{e}");
    // The rows before it were learned; the failing source hears no final commit.
    assert!(out.report.rows_learned >= 29_999 && out.report.rows == out.report.rows_learned, "{:?}", out.report);
    assert!(!sources[0].learned.contains(&u64::MAX));
    assert_eq!(sources[1].learned.last(), Some(&u64::MAX));
    // With --skip-bad it is counted and the run goes on.
    let mut sources = [Own::new(40_000, 50, Some(30_000))];
    let refs: Vec<&mut (dyn streamsgd::source::RowSource + Send)> = sources.iter_mut().map(|s| s as _).collect();
    let out =
        train(&cfg(1, MergeMode::Sync), &mut Input::Owned { sources: refs, skip_bad: true }, "own", None, shared(), &ProgressBar::hidden())
            .unwrap();
    assert_eq!((out.report.rows, out.report.rows_rejected, out.report.rows_learned), (40_000, 1, 39_999));
    assert!(out.report.first_rejected.unwrap().contains("own:30000"));
}

#[test]
fn a_stop_ends_shards_reading_endless_sources_of_their_own_and_commits_what_they_learned() {
    let mut sources = [Own::new(u64::MAX, 1000, None), Own::new(u64::MAX, 2, None)];
    let refs: Vec<&mut (dyn streamsgd::source::RowSource + Send)> = sources.iter_mut().map(|s| s as _).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut c = cfg(2, MergeMode::Sync);
    c.stop = Some(stop.clone());
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Release);
    });
    let out = train(&c, &mut Input::Owned { sources: refs, skip_bad: false }, "own", None, shared(), &ProgressBar::hidden()).unwrap();
    stopper.join().unwrap();
    assert!(out.report.stopped && out.report.rows > 0 && out.report.rows == out.report.rows_learned, "{:?}", out.report);
    for s in &sources {
        assert_eq!(s.learned.last(), Some(&u64::MAX), "a stop is a good end: what was learned is committed");
    }
}
