//! Learn from your own rows in one thread while another serves predictions from the latest
//! snapshot, without locks; then save the model and load it back as `streamsgd predict` would.
//!
//! ```sh
//! cargo run --release --example serve_while_learning
//! ```

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use streamsgd::loss::Loss;
use streamsgd::online::{OnlineConfig, OnlineModel};
use streamsgd::predictor::Predictor;

/// Features per row.
const D: usize = 8;

/// Row `i` of a stream whose label is the sign of a fixed linear function (deterministic).
fn row(i: u64, x: &mut [f32]) -> f32 {
    let mut s = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for v in x.iter_mut() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *v = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
    }
    let score: f32 = x.iter().enumerate().map(|(j, v)| v * (j as f32 - 3.5)).sum();
    f32::from(score > 0.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logistic regression with the CLI's defaults (features standardised online).
    let mut model = OnlineModel::new(OnlineConfig::dense(Loss::Logistic, D))?;
    let current = Arc::new(ArcSwap::from_pointee(model.snapshot()));
    let done = Arc::new(AtomicBool::new(false));
    // The learner: predict-then-learn on every row, a new snapshot every 20 000 rows.
    let learner = {
        let (current, done) = (current.clone(), done.clone());
        std::thread::spawn(move || -> Result<OnlineModel, streamsgd::online::OnlineError> {
            let mut x = [0.0f32; D];
            for i in 0..400_000u64 {
                let y = row(i, &mut x);
                model.learn(&x, y)?;
                if i % 20_000 == 19_999 {
                    current.store(Arc::new(model.snapshot()));
                }
            }
            done.store(true, Ordering::Release);
            Ok(model)
        })
    };
    // The server: scores held-out rows with whatever snapshot is current.
    let mut x = [0.0f32; D];
    let mut served = 0u64;
    while !done.load(Ordering::Acquire) {
        let snapshot = current.load_full();
        let mut correct = 0;
        for k in 0..1000 {
            // Rows the learner never sees (another part of the stream).
            let y = row(1 << 40 | (served + k), &mut x);
            if (snapshot.predict(&x)? > 0.5) == (y > 0.5) {
                correct += 1;
            }
        }
        served += 1000;
        println!("served {served:>7} predictions; this snapshot's accuracy {:.3}", correct as f64 / 1000.0);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let model = learner.join().expect("the learner thread")?;
    let stats = model_stats(model)?;
    println!("{stats}");
    Ok(())
}

/// Saves the model, loads it back as `streamsgd predict` loads it, and says what it learned.
fn model_stats(mut model: OnlineModel) -> Result<String, Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("serve_while_learning.{}.model", std::process::id()));
    model.save(&path)?;
    let p = Predictor::load(&path)?;
    std::fs::remove_file(&path)?;
    let mut x = [0.0f32; D];
    let y = row(7, &mut x);
    let s = model.stats();
    Ok(format!(
        "learned {} rows (progressive log loss {:.4}); saved and loaded back: row 7 (label {y}) has probability {:.3}",
        s.rows_learned,
        s.progress.mean_loss(),
        p.predict(&x)?
    ))
}
