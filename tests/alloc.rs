//! The pipeline's steady state allocates nothing: a counting global allocator, and runs of
//! 20k and 80k rows that must allocate exactly as often. In its own test binary, one test at a
//! time, so no other test's allocations are counted.

use indicatif::ProgressBar;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use streamsgd::convert::{open_parser, write_generated};
use streamsgd::dataset::Dataset;
use streamsgd::learner::LearnerConfig;
use streamsgd::loss::Loss;
use streamsgd::model::{LinearModel, SharedModel};
use streamsgd::optim::{Kind, OptimConfig};
use streamsgd::pipeline::{train, Input, PipelineConfig, TrainOutcome};
use streamsgd::source::gen::{GenConfig, Generator, Task};
use streamsgd::source::{TextFormat, TextOptions};

/// One counting test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Counts allocations (all threads).
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

fn gen_file(dir: &Path, name: &str, rows: u64, missing: f32, duplicates: f32) -> PathBuf {
    let p = dir.join(name);
    let cfg = GenConfig {
        task: Task::Classification,
        rows,
        features: 16,
        seed: 21,
        noise: 0.0,
        missing_rate: missing,
        duplicate_rate: duplicates,
        drift_at: None,
    };
    write_generated(&Generator::new(cfg), &p, 1024, &ProgressBar::hidden()).unwrap();
    p
}

fn cfg() -> PipelineConfig {
    let learner = LearnerConfig { batch: 256, grow: false, ..LearnerConfig::new(Loss::Logistic, OptimConfig::new(Kind::Normalized)) };
    // Merges publish a snapshot (one allocation each): none mid-run.
    PipelineConfig { merge_every: 1_000_000, ..PipelineConfig::new(learner, 1) }
}

fn shared() -> Arc<SharedModel> {
    Arc::new(SharedModel::new(LinearModel::zeros(Loss::Logistic, 1)))
}

fn run_mapped(c: &PipelineConfig, path: &Path) -> TrainOutcome {
    let ds = Dataset::open(path).unwrap();
    let rows = ds.rows();
    train(c, &mut Input::Mapped { dataset: &ds, train_rows: rows }, "t", None, shared(), &ProgressBar::hidden()).unwrap()
}

fn run_text(c: &PipelineConfig, path: &Path) -> TrainOutcome {
    let mut parser = open_parser(path, TextFormat::Csv, &TextOptions::default(), &Default::default()).unwrap();
    train(c, &mut Input::Stream { parser: &mut parser, train_rows: None, skip_bad: false }, "t", None, shared(), &ProgressBar::hidden())
        .unwrap()
}

fn count<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCS.load(Ordering::Relaxed);
    let r = f();
    (ALLOCS.load(Ordering::Relaxed) - before, r)
}

#[test]
fn steady_state_allocates_nothing() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (gen_file(dir.path(), "s.csv", 20_000, 0.0, 0.0), gen_file(dir.path(), "l.csv", 80_000, 0.0, 0.0));
    let (small_m, large_m) = (gen_file(dir.path(), "s.ssgd", 20_000, 0.0, 0.0), gen_file(dir.path(), "l.ssgd", 80_000, 0.0, 0.0));
    let c = cfg();
    run_text(&c, &small); // warm-up: one-time lazy initialisation is not per-row cost
    let ((a, _), (b, _)) = (count(|| run_text(&c, &small)), count(|| run_text(&c, &large)));
    assert_eq!(a, b, "text source: {a} allocations for 20k rows, {b} for 80k");
    let ((a, _), (b, _)) = (count(|| run_mapped(&c, &small_m)), count(|| run_mapped(&c, &large_m)));
    assert_eq!(a, b, "mapped source: {a} allocations for 20k rows, {b} for 80k");
}

#[test]
fn steady_state_allocates_nothing_with_the_feature_stage_on() {
    use streamsgd::transform::{Missing, Scaling, TransformConfig};
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (gen_file(dir.path(), "s.ssgd", 20_000, 0.05, 0.05), gen_file(dir.path(), "l.ssgd", 80_000, 0.05, 0.05));
    // Indicator columns (the stage writes transformed columns), and without (the one-read
    // path, the stage folded into the learner's predict pass).
    for indicator in [true, false] {
        let mut c = cfg();
        c.transform = TransformConfig { missing: Missing::Mean, indicator, scaling: Scaling::Standard, clip: Some(4.0) };
        c.dedup_window = 256;
        run_mapped(&c, &small); // warm-up
        let ((a, ra), (b, rb)) = (count(|| run_mapped(&c, &small).report), count(|| run_mapped(&c, &large).report));
        assert!(ra.cells_imputed > 0 && rb.cells_imputed > ra.cells_imputed, "the stage ran");
        assert!(rb.rows_dropped_duplicate > ra.rows_dropped_duplicate, "dedup ran");
        assert_eq!(a, b, "indicator {indicator}: {a} allocations for 20k rows, {b} for 80k");
    }
}
