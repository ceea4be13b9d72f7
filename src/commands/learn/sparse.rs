//! `train` and `predict` on sparse input: VW text, LibSVM without `--features`, a sparse
//! `.ssgd` file, or any of them with `--bits`.

use super::{cores, eval_line, warn_unlearned, PredictArgs, TrainArgs};
use anyhow::{bail, ensure, Context};
use clap::Args;
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::time::Instant;
use streamsgd::convert::{convert_sparse, count_rows, is_regular_file, open_input, resolve_format, source_name, ConvertOptions};
use streamsgd::dataset::writer::DEFAULT_BLOCK_ROWS;
use streamsgd::dataset::SparseDataset;
use streamsgd::kernel::sparse::{Table, MAX_BITS};
use streamsgd::learner::BadRows;
use streamsgd::metrics::Evaluation;
use streamsgd::model::ModelFile;
use streamsgd::optim::{Kind, OptimConfig};
use streamsgd::predictor::Predictor;
use streamsgd::source::live::Patience;
use streamsgd::source::split::SplitText;
use streamsgd::source::text::LabelColumn;
use streamsgd::source::{TextFormat, TextOptions};
use streamsgd::sparse::file::{self, to_file, SparseMeta};
use streamsgd::sparse::train::{evaluate_rows, Checkpoints, SparseError, SparseState};
use streamsgd::sparse::{SparseConfig, SparseInput, SparseModel, SparseOutcome, SparseParser, SparseRows};
use streamsgd::transform::{Missing, Scaling};

/// How sparse features reach the weights.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Sparse input (VW, LibSVM without --features, sparse .ssgd)")]
pub struct SparseArgs {
    /// Learn into a table of 2^B weights (feature ids mod 2^B). Default 18; up to 30.
    #[arg(long)]
    pub bits: Option<u32>,
    /// Crosses of namespaces, learned without being stored (as VW's -q/--cubic): `ab` crosses
    /// every feature of the namespaces whose names start with a and b; `abc` is cubic.
    #[arg(long, value_delimiter = ',')]
    pub interactions: Vec<String>,
    /// Seed of the feature hash of VW names (convert and train must agree; saved in the model).
    #[arg(long, default_value_t = 0)]
    pub hash_seed: u64,
    /// CSV columns whose cells are categories (hashed as `column=value`): the CSV is then read
    /// as sparse rows, its other columns as numeric features.
    #[arg(long, value_delimiter = ',')]
    pub categorical: Vec<String>,
}

/// The default `--bits`.
const DEFAULT_BITS: u32 = 18;
/// The default optimizer and rate for sparse rows: the normalized update (numeric columns of
/// any scale beside 0/1 categories) at 0.3 (chosen on `gen --task ctr` and data/adult.csv:
/// docs/sparse.md).
const DEFAULT_LR: f32 = 0.3;

/// How text becomes sparse rows: the hash seed, for a CSV its categorical columns, label and
/// event-time column, and what a NaN value is.
struct Hashing {
    seed: u64,
    categorical: Vec<String>,
    label: Option<LabelColumn>,
    timestamp: Option<LabelColumn>,
    missing: Missing,
}

/// True when `spec` is read as sparse rows.
pub fn is_sparse(spec: &str, format: Option<TextFormat>, features: Option<usize>, s: &SparseArgs) -> bool {
    if !s.categorical.is_empty() {
        return true;
    }
    let bits = s.bits;
    if spec.ends_with(".ssgd") {
        return streamsgd::dataset::sparse::is_sparse_file(Path::new(spec));
    }
    let format = format.or_else(|| TextFormat::from_path(Path::new(spec)));
    bits.is_some() || (matches!(format, Some(TextFormat::Vw | TextFormat::Libsvm)) && features.is_none())
}

fn interactions(spec: &[String]) -> anyhow::Result<Vec<Vec<u8>>> {
    file::interactions(spec).map_err(anyhow::Error::msg)
}

/// An opened sparse source.
enum Source {
    Mapped(SparseDataset),
    Text {
        parser: SparseParser<Box<dyn BufRead>>,
        rows: Option<u64>,
    },
    /// A topic's records of VW or LibSVM lines (the parser of their lines) or of native sparse
    /// rows, and the consumer's shards.
    #[cfg(feature = "kafka")]
    Kafka {
        parser: SparseParser<Box<dyn BufRead>>,
        native: bool,
        shards: Vec<streamsgd::source::kafka::KafkaSource>,
    },
}

/// Joins the consumer group of `a.data` for sparse rows, read by `threads` shards.
#[cfg(feature = "kafka")]
fn open_kafka(a: &TrainArgs, h: &Hashing, patience: &Patience, threads: usize) -> anyhow::Result<(Source, String)> {
    use streamsgd::source::kafka::Encoding;
    let native = a.kafka.encoding == Encoding::Row;
    ensure!(!native || a.text.format.is_none(), "--encoding row: native sparse rows have no --format");
    let format = match native {
        true => TextFormat::Vw, // (unused: the records are not text)
        false => a
            .text
            .format
            .context("a Kafka topic read as sparse rows needs --format vw|libsvm|csv (text lines) or --encoding row (native rows)")?,
    };
    ensure!(a.kafka.columns.is_none() || format == TextFormat::Csv, "--columns is the header of CSV records");
    ensure!(
        (format == TextFormat::Csv) != h.categorical.is_empty(),
        "{}: CSV records are read as sparse rows with --categorical COLUMNS (and --columns for their header)",
        a.data
    );
    ensure!(a.holdout.is_none(), "--holdout needs a file: a Kafka stream has no end to hold out (use --test FILE)");
    let consumer = crate::commands::kafka::open(&a.data, &a.kafka, Some(format), &TextOptions::default(), patience, true)?;
    let name = consumer.name().to_string();
    let mut parser = match format {
        TextFormat::Csv => {
            // Records carry data lines only: the header is --columns.
            let columns = a.kafka.columns.as_deref().context("CSV records carry no header: pass it as --columns a,b,...,label")?;
            let header = Box::new(std::io::Cursor::new(format!("{columns}\n").into_bytes())) as Box<dyn BufRead>;
            let mut p = SparseParser::csv(header, name.clone(), h.seed, h.label.as_ref(), &h.categorical)?;
            if let Some(t) = &h.timestamp {
                p.set_timestamp(t)?;
            }
            p
        }
        _ => SparseParser::new(Box::new(std::io::empty()) as Box<dyn BufRead>, name.clone(), format, h.seed)?,
    };
    parser.set_missing(h.missing);
    Ok((Source::Kafka { parser, native, shards: consumer.into_shards(threads)? }, name))
}

fn open(spec: &str, format: Option<TextFormat>, h: &Hashing, count: bool, patience: &Patience) -> anyhow::Result<(Source, String)> {
    ensure!(!spec.starts_with("kafka://"), "{spec}: Kafka topics are a source for train only");
    let seed = h.seed;
    let parser = |reader: Box<dyn BufRead>, name: &str, format: TextFormat| -> anyhow::Result<SparseParser<Box<dyn BufRead>>> {
        let mut p = match format {
            TextFormat::Csv => {
                ensure!(!h.categorical.is_empty(), "{name}: a CSV is read as sparse rows with --categorical COLUMNS");
                let mut p = SparseParser::csv(reader, name, seed, h.label.as_ref(), &h.categorical)?;
                if let Some(t) = &h.timestamp {
                    p.set_timestamp(t)?;
                }
                p
            }
            _ => {
                ensure!(h.timestamp.is_none(), "{name}: --timestamp-col names a CSV column: VW and LibSVM lines have none");
                SparseParser::new(reader, name, format, seed)?
            }
        };
        p.set_missing(h.missing);
        Ok(p)
    };
    if spec.ends_with(".ssgd") {
        return Ok((Source::Mapped(SparseDataset::open(spec)?), spec.to_string()));
    }
    if let Some(addr) = spec.strip_prefix("tcp://") {
        let format = format.context("a socket source needs --format libsvm|vw")?;
        let mut parser = parser(super::connect(spec, addr, patience)?, spec, format)?;
        parser.require_newline();
        return Ok((Source::Text { parser, rows: None }, spec.to_string()));
    }
    let path = Path::new(spec);
    let format = resolve_format(path, format)?;
    let rows = if count { Some(count_rows(path, format)?) } else { None };
    let name = source_name(path);
    let parser = parser(open_input(path, patience)?, &name, format)?;
    Ok((Source::Text { parser, rows }, name))
}

/// The run's settings from the model and sparse flags, with `threads` shards.
fn config(m: &super::ModelArgs, s: &SparseArgs, threads: usize) -> anyhow::Result<SparseConfig> {
    let bits = s.bits.unwrap_or(DEFAULT_BITS);
    ensure!((1..=MAX_BITS).contains(&bits), "--bits {bits} must be from 1 to {MAX_BITS}");
    let mut learner = m.learner(true)?;
    if m.optimizer.is_none() {
        learner.optim = OptimConfig { kind: Kind::Normalized, lr: m.lr.unwrap_or(DEFAULT_LR), ..learner.optim };
    }
    Ok(SparseConfig {
        bad_rows: learner.bad_rows,
        ..SparseConfig::new(learner.loss, learner.optim, bits, interactions(&s.interactions)?, threads)
    })
}

/// `cluster-train` on a sparse `.ssgd` file: how its rows are learned (the workers, not this
/// config, count the shards).
pub fn cluster_config(m: &super::ModelArgs, s: &SparseArgs) -> anyhow::Result<SparseConfig> {
    ensure!(s.categorical.is_empty(), "--categorical reads a CSV: cluster-train reads a .ssgd file (streamsgd convert writes one)");
    config(m, s, 1)
}

/// Saves the model a sparse `cluster-train` merged.
pub fn save_cluster_model(model: &SparseModel, cfg: &SparseConfig, s: &SparseArgs, path: &Path) -> anyhow::Result<()> {
    let meta = SparseMeta {
        bits: cfg.bits,
        hash_seed: s.hash_seed,
        interactions: s.interactions.clone(),
        categorical: Vec::new(),
        label: None,
        missing: Missing::Reject,
        timestamp: None,
    };
    to_file(&model.state(), cfg.loss, cfg.optim, &meta).save(path).with_context(|| format!("saving {}", path.display()))
}

/// `bench` on a sparse `.ssgd` file: per thread count, the median (min, max) of `repeat` runs.
pub fn bench(
    path: &Path,
    thread_counts: &[usize],
    repeat: usize,
    holdout: f64,
    m: &super::ModelArgs,
    s: &SparseArgs,
    json: bool,
) -> anyhow::Result<()> {
    ensure!((0.0..1.0).contains(&holdout), "--holdout {holdout} must be in [0, 1)");
    let ds = SparseDataset::open(path)?;
    let train_rows = ds.rows() - (ds.rows() as f64 * holdout).round() as u64;
    let mut table = Vec::new();
    for &threads in thread_counts {
        ensure!(threads >= 1, "--thread-counts: at least 1 thread");
        let cfg = config(m, s, threads)?;
        let mut runs: Vec<streamsgd::sparse::SparseReport> = (0..repeat)
            .map(|_| run::<Box<dyn BufRead>>(&cfg, SparseInput::Mapped { dataset: &ds, train_rows }, None, None).map(|o| o.report))
            .collect::<anyhow::Result<_>>()?;
        runs.sort_by(|a, b| a.rows_per_sec.total_cmp(&b.rows_per_sec));
        let (lo, mid, hi) = (&runs[0], &runs[runs.len() / 2], &runs[runs.len() - 1]);
        table.push(serde_json::json!({
            "threads": threads, "rows_per_sec": mid.rows_per_sec, "rows_per_sec_min": lo.rows_per_sec,
            "rows_per_sec_max": hi.rows_per_sec, "features_per_sec": mid.features_per_sec,
            "holdout_loss": mid.holdout.as_ref().map(|h| h.loss), "table_bytes": Table::bytes(cfg.bits, cfg.optim.kind),
        }));
    }
    let base = table[0]["rows_per_sec"].as_f64().unwrap_or(f64::NAN);
    let rss = peak_rss();
    if json {
        println!("{}", serde_json::json!({ "data": path.display().to_string(), "rows": ds.rows(), "peak_rss_bytes": rss, "runs": table }));
        return Ok(());
    }
    println!(
        "{} ({} sparse rows, {:.1} MB mapped), {repeat} run(s) each, median (min–max):",
        path.display(),
        ds.rows(),
        std::fs::metadata(path)?.len() as f64 / 1e6
    );
    println!("{:>7} {:>22} {:>12} {:>8} {:>12}", "threads", "M rows/s", "M features/s", "speedup", "holdout loss");
    for r in &table {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>7} {:>8.2} ({:.2}–{:.2}) {:>12.1} {:>7.2}× {:>12.4}",
            r["threads"],
            f("rows_per_sec") / 1e6,
            f("rows_per_sec_min") / 1e6,
            f("rows_per_sec_max") / 1e6,
            f("features_per_sec") / 1e6,
            f("rows_per_sec") / base,
            f("holdout_loss")
        );
    }
    if let Some(b) = rss {
        println!(
            "peak memory (RSS) {:.1} MB: the table is {:.1} MB, the file {:.1} MB (mapped)",
            b as f64 / 1e6,
            table[0]["table_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            std::fs::metadata(path)?.len() as f64 / 1e6
        );
    }
    Ok(())
}

/// The process's peak resident memory (Linux: VmHWM), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Flags of the dense path that sparse runs do not take yet: an error naming them.
fn refuse_dense_only(a: &TrainArgs) -> anyhow::Result<()> {
    let f = &a.features_stage;
    let used = [
        ("--batch", a.model.batch.is_some()),
        ("--missing-indicator", f.missing_indicator),
        ("--clip", f.clip.is_some()),
        ("--shuffle-seed", a.shuffle_seed.is_some()),
        ("--hgrm", a.hgrm.is_some()),
    ];
    let named: Vec<&str> = used.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
    if let Some(s @ (Scaling::Standard | Scaling::Minmax)) = f.scale {
        let s = if s == Scaling::Standard { "standard" } else { "minmax" };
        bail!(
            "{}: --scale {s} is for dense columns; hashed features are scaled one by one by the normalized update (--optimizer normalized, the default here), whose scales the model keeps",
            a.data
        );
    }
    ensure!(
        named.is_empty(),
        "{}: sparse input (hashed features) does not take {} yet; they apply to dense rows (CSV, .ssgd, LibSVM with --features D)",
        a.data,
        named.join(", ")
    );
    Ok(())
}

/// `train` on sparse input.
pub fn train(mut a: TrainArgs, started: Instant) -> anyhow::Result<()> {
    refuse_dense_only(&a)?;
    let resume = a.resume.as_deref().map(|p| resumed(p, &mut a.sparse)).transpose()?;
    let threads = a.shards.threads.unwrap_or_else(cores);
    ensure!(threads >= 1, "--threads must be at least 1");
    super::warn_oversubscribed(threads);
    let stop = crate::commands::signals::install()?;
    let patience = Patience { idle: a.idle_timeout, stop: Some(stop.flag()) };
    if let Some(r) = a.shards.rate {
        ensure!(r.is_finite() && r > 0.0, "--rate {r} must be > 0 rows/s");
    }
    let dedup_window = a.features_stage.dedup_window;
    if dedup_window > 0 {
        // Checked once here (its table must fit): each reader of the stream allocates one.
        streamsgd::dedup::Dedup::try_new(dedup_window).map_err(|e| anyhow::anyhow!("--dedup-window {dedup_window}: {e}"))?;
    }
    let cfg = SparseConfig {
        passes: a.passes,
        stop: Some(stop.flag()),
        rate: a.shards.rate,
        dedup_window,
        windows: a.features_stage.windows()?,
        ..config(&a.model, &a.sparse, threads)?
    };
    let (learner, bits) = (a.model.learner(true)?, cfg.bits);
    let start = match &resume {
        Some((file, meta)) => {
            ensure!(
                file.model.loss == cfg.loss,
                "--resume: the model was trained with the {} loss, this run asks for {}",
                file.model.loss,
                cfg.loss
            );
            ensure!(
                file.optimizer.cfg.kind == cfg.optim.kind,
                "--resume: the model's optimizer state is {:?}'s, this run asks for {:?} (--optimizer)",
                file.optimizer.cfg.kind,
                cfg.optim.kind
            );
            Some(file::from_file(file, meta)?)
        }
        None => None,
    };
    let missing = a.features_stage.missing;
    ensure!(
        missing != Missing::Mean,
        "--missing mean: a hashed feature has no column to average; sparse rows take --missing zero (a NaN value is left out, as an absent feature is zero) or drop"
    );
    let hashing = Hashing {
        seed: a.sparse.hash_seed,
        categorical: a.sparse.categorical.clone(),
        label: a.text.label.as_deref().map(LabelColumn::parse),
        timestamp: a.text.timestamp_col.as_deref().map(LabelColumn::parse),
        missing,
    };
    // A text file is mapped and split among the shards; a stream is read by one thread.
    let path = Path::new(&a.data);
    // (A duplicate window or windows read a text file as one stream: they see the rows in order.)
    let splittable = !a.data.ends_with(".ssgd") && is_regular_file(path) && cfg.dedup_window == 0 && cfg.windows.is_none();
    let (mut source, name) = match () {
        #[cfg(feature = "kafka")]
        () if a.data.starts_with("kafka://") => open_kafka(&a, &hashing, &patience, threads)?,
        () => open(&a.data, a.text.format, &hashing, a.holdout.is_some() && !splittable, &patience)?,
    };
    // A CSV's label and event-time columns, saved for predict.
    let columns = |p: &SparseParser<_>| (p.label_name().map(str::to_string), p.timestamp_name().map(str::to_string));
    let (label, timestamp) = match &source {
        Source::Text { parser, .. } => columns(parser),
        #[cfg(feature = "kafka")]
        Source::Kafka { parser, native: false, .. } => columns(parser),
        _ => resume.as_ref().map_or((None, None), |(_, m)| (m.label.clone(), m.timestamp.clone())),
    };
    ensure!(
        timestamp.is_none() || a.passes == 1,
        "--timestamp-col with --passes: the passes replay a .ssgd cache, which keeps no event time"
    );
    let meta = SparseMeta {
        bits,
        hash_seed: a.sparse.hash_seed,
        interactions: a.sparse.interactions.clone(),
        categorical: a.sparse.categorical.clone(),
        label,
        missing,
        timestamp,
    };
    ensure!(
        missing == Missing::Reject || a.passes == 1 || !splittable,
        "--missing with --passes over sparse text: the passes replay a .ssgd cache, which `convert` writes without NaN values; convert the text first"
    );
    let cache = match &source {
        Source::Text { .. } if a.passes > 1 && splittable => {
            let opts = ConvertOptions {
                format: a.text.format,
                text: TextOptions { label: hashing.label.clone(), ..TextOptions::default() },
                skip_bad: a.model.skip_bad,
                block_rows: DEFAULT_BLOCK_ROWS,
                stop: Some(stop.flag()),
            };
            let fingerprint =
                format!("sparse {:?} {:?} {} {:?} {}", opts.format, hashing.label, hashing.seed, hashing.categorical, opts.skip_bad);
            let c = super::cache::TextCache::prepare(path, a.cache.as_deref(), &fingerprint, |out| {
                Ok(convert_sparse(path, out, &opts, hashing.seed, &hashing.categorical, &indicatif::ProgressBar::hidden())?)
            })?;
            source = Source::Mapped(SparseDataset::open(c.path())?);
            Some(c)
        }
        _ => None,
    };
    ensure!(a.cache.is_none() || cache.is_some(), "--cache keeps the .ssgd cache of a text file read with --passes 2 or more");
    let split = match &source {
        Source::Text { parser, .. } if splittable => Some(
            SplitText::open(path, parser.bytes(), parser.line_no(), a.holdout.unwrap_or(0.0), resolve_format(path, a.text.format)?)
                .with_context(|| format!("{name}: cannot map the file"))?,
        ),
        _ => None,
    };
    let keep = |rows: u64| rows - ((rows as f64 * a.holdout.unwrap_or(0.0)).round() as u64).min(rows);
    if a.passes > 1 {
        ensure!(matches!(source, Source::Mapped(_)), "--passes replays a file: {name} is a stream (save it to a file first)");
    }
    ensure!(
        cfg.dedup_window == 0 || threads == 1 || matches!(source, Source::Text { .. }),
        "--dedup-window over {name} takes --threads 1: its shards read their own blocks or partitions, and a window must see the stream in order (text is read as one stream)"
    );
    ensure!(
        cfg.rate.is_none() || matches!(source, Source::Mapped(_)),
        "--rate paces the replay of a sparse .ssgd file: {name} is text (streamsgd convert writes one)"
    );
    if a.verify {
        let Source::Mapped(ds) = &source else { bail!("{name}: --verify checks a .ssgd file's block checksums; text has none") };
        ds.verify()?;
    }
    // The test set is opened now, not after training.
    let test = a.test.as_deref().map(|t| open(t, a.text.format, &hashing, false, &Patience::default())).transpose()?;
    let save_checkpoint = |state: &SparseState<'_>| {
        let path = a.checkpoint.as_deref().expect("checkpoints have a file");
        to_file(state, cfg.loss, cfg.optim, &meta).save(path).map_err(|e| e.to_string())
    };
    let checkpoints = a.checkpoint.as_ref().map(|_| Checkpoints { every: a.checkpoint_every, save: &save_checkpoint });
    let mut start = start;
    let outcome = match &mut source {
        Source::Mapped(ds) => {
            // Hashed ids (32 bits) fold by design; small ids (LibSVM indices) are worth a note.
            if let Some(b) = a.sparse.bits.filter(|&b| b < ds.id_bits() && ds.id_bits() < 32) {
                eprintln!("note: {name}'s ids have {} bits; --bits {b} folds them into 2^{b} slots (id mod 2^{b})", ds.id_bits());
            }
            let train_rows = keep(ds.rows());
            run::<Box<dyn BufRead>>(&cfg, SparseInput::Mapped { dataset: ds, train_rows }, start.take(), checkpoints)?
        }
        Source::Text { parser, rows } => {
            let skip_bad = learner.bad_rows == BadRows::Skip;
            match &split {
                Some(text) => run(&cfg, SparseInput::Split { text, parser, skip_bad }, start.take(), checkpoints)?,
                None => run(&cfg, SparseInput::Stream { parser, train_rows: rows.map(keep), skip_bad }, start.take(), checkpoints)?,
            }
        }
        #[cfg(feature = "kafka")]
        Source::Kafka { parser, native, shards } => {
            let skip_bad = learner.bad_rows == BadRows::Skip;
            let sources = shards.iter_mut().map(|s| s as &mut dyn streamsgd::source::RecordSource).collect();
            run(&cfg, SparseInput::Records { sources, parser, native: *native, skip_bad }, start.take(), checkpoints)?
        }
    };
    if let Source::Text { parser, .. } = &source {
        if parser.max_index >> bits != 0 {
            eprintln!(
                "note: LibSVM indices reach {}; with --bits {bits} those past 2^{bits} share weights (index mod 2^{bits}); --bits {} keeps them apart",
                parser.max_index,
                64 - parser.max_index.leading_zeros()
            );
        }
    }
    let SparseOutcome { model, report, source_error } = outcome;
    let wall = started.elapsed().as_secs_f64();
    // What the consumer did: its line of the report, `source` in the JSON, and what to say
    // when nothing came.
    let consumer: Option<(String, serde_json::Value, String)> = match &source {
        #[cfg(feature = "kafka")]
        Source::Kafka { shards, .. } => {
            let s = crate::commands::kafka::stats(shards);
            let why = format!(
                "no record came from {name}; consumer group '{}' had committed offsets at the topic's end (another --group learns the topic again)",
                a.kafka.group
            );
            Some((crate::commands::kafka::summary(&s), serde_json::to_value(&s)?, why))
        }
        _ => None,
    };
    if report.rows_learned == 0 {
        if let Some(e) = source_error {
            return Err(anyhow::Error::new(e).context("nothing was learned before the input failed"));
        }
        if let (Some((_, _, why)), 0) = (&consumer, report.rows_rejected) {
            // A topic with nothing new for the group is not a mistake: said, and no model.
            eprintln!("warning: nothing was learned, so no model is saved: {why}");
            return Ok(());
        }
        let why = report.first_rejected.as_ref().map(|w| format!("; the first rejected: {w}")).unwrap_or_default();
        bail!("nothing was learned, so no model is saved: {name} has no rows to learn ({} rejected){why}", report.rows_rejected);
    }
    if let Some(p) = &a.save {
        to_file(&model.state(), cfg.loss, cfg.optim, &meta).save(p)?;
    }
    // A stop also leaves a checkpoint to resume from, as a run's end does not.
    if let (true, Some(p)) = (report.stopped, &a.checkpoint) {
        to_file(&model.state(), cfg.loss, cfg.optim, &meta).save(p)?;
    }
    let test = match test {
        Some((src, test_name)) if !report.stopped => Some((test_name, evaluate_source(&model, cfg.optim, src)?)),
        _ => None,
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["wall_seconds"] = wall.into();
        v["table_bytes"] = Table::bytes(bits, cfg.optim.kind).into();
        if let Some((_, e)) = &test {
            v["test"] = serde_json::to_value(e)?;
        }
        if let Some((_, c, _)) = &consumer {
            v["source"] = c.clone();
        }
        println!("{v}");
    } else {
        print_report(&report, wall, &cfg, test.as_ref());
        if let Some((line, _, _)) = &consumer {
            println!("{line}");
        }
    }
    #[cfg(feature = "kafka")]
    if let Source::Kafka { shards, .. } = source {
        crate::commands::kafka::close(shards);
    }
    let mut advice = vec![format!("try another learning rate (--lr, now {})", cfg.optim.lr)];
    if cfg.optim.kind != Kind::Normalized {
        advice.push("the normalized update for numeric features of different scales (--optimizer normalized)".into());
    }
    if cfg.interactions.is_empty() {
        advice.push("crosses of namespaces (--interactions)".into());
    }
    warn_unlearned(test.as_ref().map(|t| &t.1), report.holdout.as_ref(), (report.progressive_loss, report.progressive_baseline), &advice);
    let kept = match &a.save {
        Some(p) => format!("the model of the {} rows before it is saved in {}", report.rows_learned, p.display()),
        None => format!("the model of the {} rows before it is reported above (--save keeps it)", report.rows_learned),
    };
    if let Some(e) = source_error {
        return Err(anyhow::Error::new(e).context(format!("the input failed; {kept}")));
    }
    if let Some(code) = stop.exit_code() {
        eprintln!("stopped by signal {}: {kept}", code - 128);
        return Err(crate::commands::signals::Interrupted { code }.into());
    }
    Ok(())
}

fn run<R: BufRead>(
    cfg: &SparseConfig,
    input: SparseInput<'_, R>,
    start: Option<SparseModel>,
    checkpoints: Option<Checkpoints<'_>>,
) -> anyhow::Result<SparseOutcome> {
    streamsgd::sparse::train(cfg, input, start, checkpoints).map_err(|e| match e {
        SparseError::Learn(e) => anyhow::Error::new(e),
        e => anyhow::Error::new(e),
    })
}

fn print_report(r: &streamsgd::sparse::SparseReport, wall: f64, cfg: &SparseConfig, test: Option<&(String, Evaluation)>) {
    let mb = Table::bytes(cfg.bits, cfg.optim.kind) as f64 / 1e6;
    println!(
        "trained on {} rows ({} rejected) in {:.3} s: {:.2} M rows/s, {:.1} M features/s (whole command: {wall:.3} s), {} thread(s) sharing a table of 2^{} weights ({mb:.0} MB), {:.1} features per row{}",
        r.rows_learned,
        r.rows_rejected,
        r.seconds,
        r.rows_per_sec / 1e6,
        r.features_per_sec / 1e6,
        r.threads,
        r.bits,
        r.features as f64 / r.rows_learned.max(1) as f64,
        if r.stopped { ", stopped early" } else { "" }
    );
    let acc = r.progressive_accuracy.map(|a| format!("  accuracy {a:.4}")).unwrap_or_default();
    println!("progressive  loss {:.4}{acc}  (a constant prediction: {:.4})", r.progressive_loss, r.progressive_baseline);
    if let Some(h) = &r.holdout {
        println!("holdout      {}  ({} rows; a constant prediction: {:.4})", eval_line(h), h.rows, h.baseline);
    }
    if let Some((name, e)) = test {
        println!("test         {}  ({name}, {} rows)", eval_line(e), e.rows);
    }
    if let Some(w) = &r.first_rejected {
        println!("first rejected: {w}");
    }
    if r.rows_dropped_missing + r.cells_missing > 0 {
        println!("missing      {} NaN values left out, {} rows dropped for one (--missing)", r.cells_missing, r.rows_dropped_missing);
    }
    if r.windows > 0 {
        println!("windows      {} reported (--window-report)", r.windows);
    }
    if r.rows_late > 0 {
        println!("event time: {} rows arrived after their window closed (learned, counted as late)", r.rows_late);
    }
    super::print_alarms(&r.drift_alarms);
    if r.rows_dropped_duplicate > 0 {
        println!("duplicates   {} rows dropped (equal to one of the --dedup-window rows before them)", r.rows_dropped_duplicate);
    }
    if let Some(l) = &r.latency_ns {
        // Per block, from the time it was due to learned.
        println!("{:<14} {:>9} {:>9} {:>9} {:>9} {:>9}", "latency µs", "p50", "p90", "p99", "p99.9", "max");
        println!("{}", super::pct_line("block", l));
    }
    if r.checkpoints > 0 {
        println!("checkpoints  {} written while learning, the longest in {:.3} s", r.checkpoints, r.checkpoint_seconds_max);
    }
}

/// How a saved model's input is hashed; a CSV's label column is the model's, if the data has it
/// (`--label` overrides).
fn hashing_of(meta: &SparseMeta, label: Option<&str>) -> Hashing {
    let label = label.map(LabelColumn::parse).or_else(|| meta.label.clone().map(LabelColumn::IfPresent));
    let timestamp = meta.timestamp.clone().map(LabelColumn::IfPresent);
    Hashing { seed: meta.hash_seed, categorical: meta.categorical.clone(), label, timestamp, missing: meta.missing }
}

/// The model `--resume` names, and how its features reach its weights: flags left out take
/// the model's values, flags that differ are refused.
fn resumed(path: &Path, s: &mut SparseArgs) -> anyhow::Result<(ModelFile, SparseMeta)> {
    let file = ModelFile::load(path)?;
    let at = path.display();
    let Some(meta) = SparseMeta::of(&file)? else {
        bail!("--resume {at}: a dense model (a weight per column, not a hashed table): continue it on dense rows")
    };
    let given = |flag: &str, ours: String, theirs: String| {
        ensure!(ours == theirs, "--resume {at}: the model was trained with {flag} {theirs}, this run asks for {ours}");
        Ok(())
    };
    match s.bits {
        Some(b) => given("--bits", b.to_string(), meta.bits.to_string())?,
        None => s.bits = Some(meta.bits),
    }
    match s.interactions.is_empty() {
        false => given("--interactions", s.interactions.join(","), meta.interactions.join(","))?,
        true => s.interactions = meta.interactions.clone(),
    }
    match s.hash_seed {
        0 => s.hash_seed = meta.hash_seed,
        seed => given("--hash-seed", seed.to_string(), meta.hash_seed.to_string())?,
    }
    match s.categorical.is_empty() {
        false => given("--categorical", s.categorical.join(","), meta.categorical.join(","))?,
        true => s.categorical = meta.categorical.clone(),
    }
    Ok((file, meta))
}

fn evaluate_source(model: &SparseModel, optim: OptimConfig, src: Source) -> anyhow::Result<Evaluation> {
    let rows = read_all(src)?;
    Ok(evaluate_rows(model, optim, &rows.as_ref()))
}

/// Every row of a source (a test set).
fn read_all(src: Source) -> anyhow::Result<SparseRows> {
    let mut rows = SparseRows::new();
    match src {
        Source::Mapped(ds) => {
            for b in 0..ds.blocks() {
                let block = ds.block(b)?;
                for r in 0..block.len() {
                    rows.push_row(&block, r);
                }
            }
        }
        Source::Text { mut parser, .. } => while parser.next_row(&mut rows)? {},
        #[cfg(feature = "kafka")]
        Source::Kafka { .. } => bail!("a test set must be a file"),
    }
    Ok(rows)
}

/// `predict` with a sparse model: `Ok(false)` when the model is dense.
pub fn predict(a: &PredictArgs, file: &ModelFile) -> anyhow::Result<bool> {
    let Some(meta) = SparseMeta::of(file)? else { return Ok(false) };
    let predictor = Predictor::from_file(file.clone())?;
    let (source, _) = open(&a.data, a.text.format, &hashing_of(&meta, a.text.label.as_deref()), false, &Patience::default())?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut num = ryu::Buffer::new();
    let mut p = Vec::new();
    let mut emit = |out: &mut BufWriter<_>, p: &[f32]| -> std::io::Result<()> {
        for &v in p {
            out.write_all(num.format(v).as_bytes())?;
            out.write_all(b"\n")?;
        }
        Ok(())
    };
    match source {
        Source::Mapped(ds) => {
            for b in 0..ds.blocks() {
                p.clear();
                predictor.predict_rows(&ds.block(b)?, &mut p)?;
                emit(&mut out, &p)?;
            }
        }
        Source::Text { mut parser, .. } => {
            // A row the model's `--missing drop` drops has no prediction: NaN in its place.
            let (mut rows, mut dropped, mut all) = (SparseRows::new(), Vec::new(), Vec::new());
            loop {
                rows.clear();
                dropped.clear();
                let mut more = true;
                while more && rows.len() < 1024 {
                    let before = parser.missing_rows;
                    more = parser.next_row(&mut rows)?;
                    dropped.push(parser.missing_rows - before);
                }
                p.clear();
                predictor.predict_rows(&rows.as_ref(), &mut p)?;
                all.clear();
                for (i, &d) in dropped.iter().enumerate() {
                    all.extend((0..d).map(|_| f32::NAN));
                    all.extend(p.get(i));
                }
                emit(&mut out, &all)?;
                if !more {
                    break;
                }
            }
        }
        #[cfg(feature = "kafka")]
        Source::Kafka { .. } => bail!("predict reads files, stdin and sockets"),
    }
    out.flush()?;
    Ok(true)
}

/// `inspect`: a sparse model's heaviest weights, named by the features of a data file that
/// reach them (as VW's `--invert_hash`, without storing names in the model).
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The model file (sparse).
    model: std::path::PathBuf,
    /// Data whose features name the slots (VW or LibSVM text, hashed as in training).
    #[arg(long)]
    data: String,
    /// How many weights to show, heaviest (|w|) first.
    #[arg(long, default_value_t = 20)]
    top: usize,
    #[command(flatten)]
    text: super::super::TextArgs,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// Most distinct (slot, name) pairs counted.
const MAX_NAMES: usize = 4_000_000;
/// Names kept per slot.
const NAMES_PER_SLOT: usize = 3;

pub fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    use std::collections::HashMap;
    let file = ModelFile::load(&a.model)?;
    let meta =
        SparseMeta::of(&file)?.with_context(|| format!("{}: a dense model: its weights are its columns, in order", a.model.display()))?;
    let model = file::from_file(&file, &meta)?;
    let (source, name) = open(&a.data, a.text.format, &hashing_of(&meta, a.text.label.as_deref()), false, &Patience::default())?;
    let Source::Text { mut parser, .. } = source else {
        bail!("{name}: inspect reads feature names from VW or LibSVM text, not a .ssgd file")
    };
    parser.keep_names();
    // slot → (the first names that reach it, how many distinct names do); distinct by the
    // names' hashes, up to MAX_NAMES of them (then the counts are lower bounds).
    let mut names: HashMap<u32, (Vec<String>, u64)> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut note = |slot: u32, n: &dyn Fn() -> String| {
        let n = n();
        let key = (slot, streamsgd::source::hash::fnv1a(&[n.as_bytes()]));
        if seen.len() < MAX_NAMES && seen.insert(key) {
            let e = names.entry(slot).or_default();
            e.1 += 1;
            if e.0.len() < NAMES_PER_SLOT {
                e.0.push(n);
            }
        }
    };
    let mut rows = SparseRows::new();
    while parser.next_row(&mut rows)? {
        let row = rows.as_ref().row(rows.len() - 1);
        let row_names = parser.names();
        for (k, &id) in row.ids.iter().enumerate() {
            note(model.table.slot(id), &|| row_names[k].clone());
        }
        for inter in &model.interactions {
            streamsgd::kernel::sparse::for_each_cross(&row, inter, |id, _, members| {
                note(model.table.slot(id), &|| members.iter().map(|&m| row_names[m].as_str()).collect::<Vec<_>>().join(" * "));
            });
        }
        rows.clear();
    }
    let w = model.table.weights();
    let mut order: Vec<u32> = (0..w.len() as u32).filter(|&s| w[s as usize] != 0.0).collect();
    order.sort_by(|&x, &y| w[y as usize].abs().total_cmp(&w[x as usize].abs()));
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if !a.json {
        writeln!(
            out,
            "{} of 2^{} weights are non-zero; bias {:.6}; the heaviest {} (names from {name}):",
            order.len(),
            meta.bits,
            model.bias,
            a.top.min(order.len())
        )?;
        writeln!(out, "{:>10}  {:>11}  feature(s)", "slot", "weight")?;
    }
    for &s in order.iter().take(a.top) {
        let (n, count) = names.get(&s).cloned().unwrap_or_default();
        let more = count.saturating_sub(n.len() as u64);
        if a.json {
            writeln!(out, "{}", serde_json::json!({ "slot": s, "weight": w[s as usize], "names": n, "names_in_slot": count }))?;
        } else {
            let shown = if n.is_empty() { "(no feature of the data reaches it)".to_string() } else { n.join(", ") };
            let more = if more > 0 { format!(" and {more} more sharing the slot") } else { String::new() };
            writeln!(out, "{s:>10}  {:>11.6}  {shown}{more}", w[s as usize])?;
        }
    }
    out.flush()?;
    Ok(())
}
