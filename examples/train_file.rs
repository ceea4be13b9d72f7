//! Runs the sharded pipeline on a `.ssgd` file from your program, with a progress line, and
//! prints the report's headline numbers; the model is saved for `streamsgd predict`.
//!
//! ```sh
//! streamsgd gen --rows 2000000 --features 32 -o c.ssgd
//! cargo run --release --example train_file -- c.ssgd c.model
//! ```

use std::io::Write;
use streamsgd::dataset::Dataset;
use streamsgd::loss::Loss;
use streamsgd::online::OnlineConfig;
use streamsgd::train_file::{train_file, FileTraining};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(data), Some(model)) = (args.next(), args.next()) else {
        return Err("usage: train_file DATA.ssgd MODEL".into());
    };
    // A dense file: the model's width is the file's.
    let features = Dataset::open(&data)?.features();
    let job = FileTraining { holdout: 0.1, ..FileTraining::new(OnlineConfig::dense(Loss::Logistic, features)) };
    let progress = |done: u64, total: u64| {
        eprint!("\rrows {:>12} / {total}", done);
        let _ = std::io::stderr().flush();
    };
    let out = train_file(data.as_ref(), &job, &progress)?;
    eprintln!();
    let r = &out.report;
    println!(
        "learned {} rows at {:.1} M rows/s on {} shards; progressive log loss {:.4}, holdout accuracy {:.4}",
        r["rows_learned"],
        r["rows_per_sec"].as_f64().unwrap_or(0.0) / 1e6,
        r["threads"],
        r["progressive_loss"].as_f64().unwrap_or(f64::NAN),
        r["holdout"]["accuracy"].as_f64().unwrap_or(f64::NAN),
    );
    out.model.save(model.as_ref())?;
    println!("saved {model}");
    Ok(())
}
