//! `gen`, `convert` and `info`: the data commands.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use streamsgd::convert::{convert_sparse, convert_text, write_generated_until, ConvertError, ConvertOptions, ConvertSummary};
use streamsgd::dataset::{stats, Dataset};
use streamsgd::source::gen::{GenConfig, Generator, Task};
use streamsgd::source::TextFormat;

#[derive(Args, Debug)]
pub struct GenArgs {
    /// classification (labels 0/1, logistic link), regression (linear + Gaussian noise), or
    /// ctr (sparse click logs: Zipf categorical fields and a hidden cross), eat-rate (only a
    /// cross carries the label) or text (bags of Zipf words); these write .vw, .libsvm or
    /// sparse .ssgd.
    #[arg(long, value_enum, default_value = "classification")]
    task: GenTask,
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

/// What `gen` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum GenTask {
    /// Labels in {0, 1} drawn from a logistic link.
    Classification,
    /// Real labels: linear function plus Gaussian noise.
    Regression,
    /// Sparse click logs (see `streamsgd::source::ctr`).
    Ctr,
    /// Sparse: does an animal eat a food? Only their cross carries the label.
    #[value(name = "eat-rate")]
    EatRate,
    /// Sparse: bags of Zipf words.
    Text,
}

/// `gen --task ctr|eat-rate`: writes rows in the format the extension names and reports the
/// hidden model's log loss (the oracle's: no model can do better in expectation).
fn gen_sparse(a: &GenArgs, task: streamsgd::source::ctr::SparseTask) -> anyhow::Result<()> {
    use std::io::Write;
    use streamsgd::source::ctr::CtrGenerator;
    let start = Instant::now();
    let stop = super::signals::install()?;
    let mut g = CtrGenerator::new(task, a.seed, 0);
    let ext = a.output.extension().and_then(|e| e.to_str()).unwrap_or("");
    anyhow::ensure!(
        matches!(ext, "vw" | "libsvm" | "ssgd"),
        "{}: {} rows are sparse: write .vw, .libsvm or .ssgd",
        a.output.display(),
        task.name()
    );
    let mut sparse = (ext == "ssgd").then(|| streamsgd::dataset::SparseWriter::create(&a.output, a.block_rows)).transpose()?;
    let mut text = if sparse.is_none() {
        Some(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&a.output).with_context(|| format!("creating {}", a.output.display()))?,
        ))
    } else {
        None
    };
    let (mut line, mut rows, mut scratch) = (Vec::new(), streamsgd::sparse::SparseRows::new(), streamsgd::sparse::SparseRows::new());
    let holdout_from = a.rows - a.rows / 10;
    let (mut oracle, mut oracle_held) = (0.0f64, 0.0f64);
    for i in 0..a.rows {
        let row = g.next_row();
        let p = f64::from(row.p).clamp(1e-7, 1.0 - 1e-7);
        let l = if row.label > 0.0 { -p.ln() } else { -(1.0 - p).ln() };
        oracle += l;
        if i >= holdout_from {
            oracle_held += l;
        }
        match (&mut sparse, &mut text) {
            (Some(w), _) => {
                rows.clear();
                g.push_sparse(&row, &mut rows);
                w.push(&rows.as_ref(), 0)?;
            }
            (None, Some(out)) => {
                line.clear();
                if ext == "vw" {
                    g.push_vw(&row, &mut line);
                } else {
                    g.push_libsvm(&row, &mut line, &mut scratch);
                }
                out.write_all(&line).with_context(|| format!("writing {}", a.output.display()))?;
            }
            _ => unreachable!("one output"),
        }
        if i % 65_536 == 0 && stop.flag().load(std::sync::atomic::Ordering::Relaxed) {
            drop(text);
            let _ = std::fs::remove_file(&a.output);
            return Err(stopped(&stop));
        }
    }
    if let Some(w) = sparse {
        w.finish()?;
    }
    if let Some(mut out) = text {
        out.flush().with_context(|| format!("writing {}", a.output.display()))?;
    }
    let held = a.rows - holdout_from;
    let v = serde_json::json!({
        "task": task.name(),
        "rows": a.rows,
        "oracle_log_loss": oracle / a.rows.max(1) as f64,
        "oracle_holdout_log_loss": oracle_held / held.max(1) as f64,
        "holdout_rows": held,
    });
    if let Some(p) = &a.truth {
        std::fs::write(p, serde_json::to_string_pretty(&v)?).with_context(|| format!("writing {}", p.display()))?;
    }
    println!(
        "wrote {} {} rows to {} in {:.2} s; the hidden model's log loss: {:.4} on all rows, {:.4} on the last 10 %",
        a.rows,
        task.name(),
        a.output.display(),
        start.elapsed().as_secs_f64(),
        v["oracle_log_loss"].as_f64().unwrap_or(f64::NAN),
        v["oracle_holdout_log_loss"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(())
}

pub fn gen(a: GenArgs) -> anyhow::Result<()> {
    let task = match a.task {
        GenTask::Ctr => return gen_sparse(&a, streamsgd::source::ctr::SparseTask::Ctr),
        GenTask::EatRate => return gen_sparse(&a, streamsgd::source::ctr::SparseTask::EatRate),
        GenTask::Text => return gen_sparse(&a, streamsgd::source::ctr::SparseTask::Text),
        GenTask::Classification => Task::Classification,
        GenTask::Regression => Task::Regression,
    };
    for (name, v) in [("--missing-rate", a.missing_rate), ("--duplicate-rate", a.duplicate_rate)] {
        anyhow::ensure!((0.0..=1.0).contains(&v), "{name} {v} is not a probability in [0, 1]");
    }
    anyhow::ensure!(a.noise.is_finite() && a.noise >= 0.0, "--noise {} must be finite and ≥ 0", a.noise);
    anyhow::ensure!(a.features > 0, "--features must be at least 1");
    let cfg = GenConfig {
        task,
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
        let mut v = serde_json::json!({ "task": task, "weights": w, "bias": b });
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
    /// Seed of the feature hash of VW names (sparse output; train takes the same).
    #[arg(long, default_value_t = 0)]
    hash_seed: u64,
    /// CSV columns whose cells are categories: the output is then sparse (as train reads it).
    #[arg(long, value_delimiter = ',')]
    categorical: Vec<String>,
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
    let format = a.text.format.or_else(|| streamsgd::source::TextFormat::from_path(&a.input));
    if !a.categorical.is_empty() || (matches!(format, Some(TextFormat::Vw | TextFormat::Libsvm)) && a.text.features.is_none()) {
        let s = match convert_sparse(&a.input, &a.output, &opts, a.hash_seed, &a.categorical, &bar) {
            Err(ConvertError::Stopped(_)) => return Err(stopped(&stop)),
            other => other.with_context(|| format!("converting {}", a.input.display()))?,
        };
        println!(
            "{} sparse rows ({} features, {:.1} per row) → {} ({} skipped lines; {:.1} MB parsed in {:.2} s = {:.0} MB/s)",
            s.rows,
            s.features,
            s.features as f64 / s.rows.max(1) as f64,
            a.output.display(),
            s.skipped,
            s.bytes as f64 / 1e6,
            s.seconds,
            s.mb_per_sec()
        );
        return skipped_lines(&s);
    }
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
    skipped_lines(&s)
}

fn skipped_lines(s: &ConvertSummary) -> anyhow::Result<()> {
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

/// `info` on a sparse file: every block checked, counted and verified.
fn info_sparse(a: &InfoArgs, ds: streamsgd::dataset::SparseDataset) -> anyhow::Result<()> {
    ds.verify()?;
    let (mut nnz, mut max_row, mut pos, mut stored_values) = (0u64, 0usize, 0u64, 0u64);
    let (mut min_id, mut max_id) = (u32::MAX, 0u32);
    let mut tags = std::collections::BTreeSet::new();
    for b in 0..ds.blocks() {
        let rows = ds.block(b)?;
        nnz += rows.ids.len() as u64;
        (min_id, max_id) = rows.ids.iter().fold((min_id, max_id), |(lo, hi), &id| (lo.min(id), hi.max(id)));
        stored_values += rows.values.map_or(0, |v| v.len() as u64);
        max_row = rows.offsets.windows(2).map(|w| (w[1] - w[0]) as usize).fold(max_row, usize::max);
        pos += rows.labels.iter().filter(|&&y| y > 0.0).count() as u64;
        tags.extend(rows.ns.iter().copied());
    }
    let bytes = std::fs::metadata(&a.file)?.len();
    let namespaces: String = tags.iter().map(|&t| t as char).collect();
    // Density: the share of (row, id) cells of the index range that hold a feature.
    let range = if nnz > 0 { u64::from(max_id - min_id) + 1 } else { 0 };
    let density = nnz as f64 / (ds.rows() as f64 * range as f64).max(1.0);
    let v = serde_json::json!({
        "path": a.file.display().to_string(), "bytes": bytes, "layout": "sparse", "rows": ds.rows(),
        "blocks": ds.blocks(), "block_rows": ds.block_rows(), "id_bits": ds.id_bits(), "features": nnz,
        "max_features_per_row": max_row, "stored_values": stored_values, "positive_labels": pos,
        "min_id": (nnz > 0).then_some(min_id), "max_id": (nnz > 0).then_some(max_id), "density": density,
        "namespaces": namespaces, "checksums_verified": true,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("file        {} ({bytes} bytes)", a.file.display());
    println!("rows        {} (sparse: {nnz} features, {:.1} per row, at most {max_row})", ds.rows(), nnz as f64 / ds.rows().max(1) as f64);
    match nnz {
        0 => println!("ids         none; namespaces '{namespaces}'"),
        _ => println!(
            "ids         {min_id} … {max_id} (below 2^{}); density {density:.3e} of rows × that range; namespaces '{namespaces}'",
            ds.id_bits()
        ),
    }
    println!("blocks      {} × {} rows ({} of the {nnz} values stored, the rest 1.0)", ds.blocks(), ds.block_rows(), stored_values);
    println!("labels      {pos} of {} positive", ds.rows());
    println!("checksums   every block matches its CRC-32");
    Ok(())
}

pub fn info(a: InfoArgs) -> anyhow::Result<()> {
    if streamsgd::dataset::sparse::is_sparse_file(&a.file) {
        return info_sparse(&a, streamsgd::dataset::SparseDataset::open(&a.file)?);
    }
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
