//! `gen`, `convert` and `info`: the data commands.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use streamsgd::convert::{convert_text, write_generated_until, ConvertError, ConvertOptions};
use streamsgd::dataset::{stats, Dataset};
use streamsgd::source::gen::{GenConfig, Generator, Task};

#[derive(Args, Debug)]
pub struct GenArgs {
    /// classification (labels 0/1, logistic link) or regression (linear + Gaussian noise).
    #[arg(long, value_enum, default_value = "classification")]
    task: Task,
    /// Rows to generate.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Features per row.
    #[arg(long, default_value_t = 32)]
    features: usize,
    /// Seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Regression noise std-dev; for classification, the probability of flipping a label.
    #[arg(long, default_value_t = 0.0)]
    noise: f32,
    /// Probability that a feature cell is missing (NaN).
    #[arg(long, default_value_t = 0.0)]
    missing_rate: f32,
    /// Probability that a row repeats one of the previous 16 rows.
    #[arg(long, default_value_t = 0.0)]
    duplicate_rate: f32,
    /// Row from which the hidden weights change (concept drift).
    #[arg(long)]
    drift_at: Option<u64>,
    /// Rows per block (.ssgd output).
    #[arg(long, default_value_t = 1024)]
    block_rows: u32,
    /// Output file; its extension picks the format.
    #[arg(short, long)]
    output: PathBuf,
    /// Also write the hidden weights and bias as JSON here (`weights`, `bias`, and
    /// `drift_weights`/`drift_bias`/`drift_at` with --drift-at), to score the truth on a holdout.
    #[arg(long)]
    truth: Option<PathBuf>,
}

pub fn gen(a: GenArgs) -> anyhow::Result<()> {
    for (name, v) in [("--missing-rate", a.missing_rate), ("--duplicate-rate", a.duplicate_rate)] {
        anyhow::ensure!((0.0..=1.0).contains(&v), "{name} {v} is not a probability in [0, 1]");
    }
    anyhow::ensure!(a.noise.is_finite() && a.noise >= 0.0, "--noise {} must be finite and ≥ 0", a.noise);
    anyhow::ensure!(a.features > 0, "--features must be at least 1");
    let cfg = GenConfig {
        task: a.task,
        rows: a.rows,
        features: a.features,
        seed: a.seed,
        noise: a.noise,
        missing_rate: a.missing_rate,
        duplicate_rate: a.duplicate_rate,
        drift_at: a.drift_at,
    };
    let start = Instant::now();
    let bar = super::progress(a.rows, "rows");
    let generator = Generator::new(cfg);
    if let Some(p) = &a.truth {
        let (w, b) = generator.truth(0);
        let mut v = serde_json::json!({ "task": a.task, "weights": w, "bias": b });
        if let Some(at) = a.drift_at {
            let (w2, b2) = generator.truth(at);
            v["drift_at"] = at.into();
            v["drift_weights"] = serde_json::json!(w2);
            v["drift_bias"] = b2.into();
        }
        std::fs::write(p, serde_json::to_string_pretty(&v)?).with_context(|| format!("writing {}", p.display()))?;
    }
    let stop = super::signals::install()?;
    let rows = match write_generated_until(&generator, &a.output, a.block_rows, &bar, Some(&stop.flag())) {
        Err(ConvertError::Stopped(_)) => return Err(stopped(&stop)),
        other => other.with_context(|| format!("generating {}", a.output.display()))?,
    };
    let secs = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {rows} rows × {} features to {} ({:.1} MB in {secs:.2} s, {:.0} MB/s)",
        a.features,
        a.output.display(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs.max(1e-9)
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Input text file, or - for stdin.
    input: PathBuf,
    /// Output .ssgd file.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    text: super::TextArgs,
    /// Count and skip malformed lines instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Rows per block of the output.
    #[arg(long, default_value_t = 1024)]
    block_rows: u32,
}

pub fn convert(a: ConvertArgs) -> anyhow::Result<()> {
    let stop = super::signals::install()?;
    let opts = ConvertOptions {
        format: a.text.format,
        text: a.text.options(),
        skip_bad: a.skip_bad,
        block_rows: a.block_rows,
        stop: Some(stop.flag()),
    };
    let size = std::fs::metadata(&a.input).map(|m| m.len()).unwrap_or(0);
    let bar = super::progress(size, "bytes");
    let s = match convert_text(&a.input, &a.output, &opts, &bar) {
        Err(ConvertError::Stopped(_)) => return Err(stopped(&stop)),
        other => other.with_context(|| format!("converting {}", a.input.display()))?,
    };
    println!(
        "{} rows × {} features → {} ({} NaN cells, {} skipped lines; {:.1} MB parsed in {:.2} s = {:.0} MB/s)",
        s.rows,
        s.features,
        a.output.display(),
        s.nan_cells,
        s.skipped,
        s.bytes as f64 / 1e6,
        s.seconds,
        s.mb_per_sec()
    );
    for (line, why) in &s.skipped_examples {
        println!("  skipped line {line}: {why}");
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A .ssgd file.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn info(a: InfoArgs) -> anyhow::Result<()> {
    let ds = Dataset::open(&a.file)?;
    let checked = ds.verify()?;
    let s = stats::scan(&ds)?;
    if a.json {
        let mut v = serde_json::to_value(&s)?;
        v["checksums_verified"] = checked.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("file        {} ({} bytes)", s.path, s.bytes);
    println!("rows        {}", s.rows);
    println!("features    {}", s.features);
    println!("blocks      {} × {} rows ({} layout{})", s.blocks, s.block_rows, s.layout, if s.weights { ", weights" } else { "" });
    println!("labels      {} … {}", s.label_min, s.label_max);
    if let Some(c) = &s.label_counts {
        let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("label count {}", parts.join(", "));
    }
    println!("NaN cells   {}", s.nan_cells);
    println!("checksums   {}", if checked { "every block matches its CRC-32" } else { "none (a file written before block checksums)" });
    Ok(())
}

/// The exit of a command stopped by a signal, its partial output removed.
fn stopped(stop: &super::signals::Stop) -> anyhow::Error {
    eprintln!("stopped by a signal: the partial output is removed");
    super::signals::Interrupted { code: stop.exit_code().unwrap_or(130) }.into()
}
