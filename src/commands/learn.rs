//! `train`, `predict` and `bench`: the learning commands.

use anyhow::{bail, ensure, Context};
use clap::Args;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamsgd::convert::{
    convert_text, count_rows, is_regular_file, open_parser, resolve_format, source_name, write_generated, ConvertOptions,
};
use streamsgd::dataset::Dataset;
use streamsgd::kernel::Columns;
use streamsgd::latency::{Latency, Percentiles};
use streamsgd::learner::{BadRows, LearnerConfig};
use streamsgd::loss::Loss;
use streamsgd::merge::MergeMode;
use streamsgd::metrics::Evaluation;
use streamsgd::model::{ModelFile, Schema, SharedModel};
use streamsgd::optim::{Kind, OptimConfig, Schedule};
use streamsgd::pipeline::{self, Input, OnDrift, PipelineConfig, TrainOutcome, TrainReport, WindowConfig};
use streamsgd::predictor::Predictor;
use streamsgd::source::gen::{GenConfig, Generator, Task};
use streamsgd::source::live::{LiveReader, Patience};
use streamsgd::source::split::SplitText;
use streamsgd::source::text::LabelColumn;
use streamsgd::source::{TextFormat, TextOptions, TextParser};
use streamsgd::transform::{Missing, Scaling, TransformConfig};
use streamsgd::window::{EventTime, WindowKind};

mod cache;
mod sparse;
pub use sparse::{inspect, InspectArgs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LossName {
    Squared,
    Logistic,
    Hinge,
    Huber,
    /// Linear support vector regression: max(0, |p − y| − ε).
    #[value(name = "epsilon-insensitive")]
    EpsilonInsensitive,
    /// The pinball loss: the model predicts the labels' --quantile.
    Quantile,
    /// A smooth hinge, linear for far outliers (scikit-learn's modified_huber).
    #[value(name = "modified-huber")]
    ModifiedHuber,
    /// The squared hinge (L2-SVM).
    #[value(name = "squared-hinge")]
    SquaredHinge,
    /// The perceptron's loss: max(0, −y·p).
    Perceptron,
}

/// Drift alarms, each after the batch whose loss raised it (`alarms`: rows read by then).
fn print_alarms(alarms: &[u64]) {
    for row in alarms {
        println!("DRIFT: Page-Hinkley alarm after row {row}");
    }
}

/// The model and how it learns (`train`, `bench`, `cluster-train`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// Loss function.
    #[arg(long, value_enum, default_value = "logistic")]
    loss: LossName,
    /// Huber threshold δ.
    #[arg(long, default_value_t = 1.0)]
    huber_delta: f32,
    /// The free margin ε of --loss epsilon-insensitive (scikit-learn's default).
    #[arg(long, default_value_t = 0.1)]
    epsilon: f32,
    /// The quantile τ that --loss quantile predicts (0.5: the median).
    #[arg(long, default_value_t = 0.5)]
    quantile: f32,
    /// Optimizer. Default: adagrad on scaled features (the default --scale standard);
    /// normalized on raw ones (--scale none, cluster-train), as its steps need no scaling;
    /// normalized at --lr 0.3 on sparse input.
    #[arg(long, value_enum)]
    optimizer: Option<Kind>,
    /// Learning rate (FTRL: α). Default: 0.1; 0.5 for the normalized update.
    #[arg(long)]
    lr: Option<f32>,
    /// L1 regularisation (proximal).
    #[arg(long, default_value_t = 0.0)]
    l1: f32,
    /// L2 regularisation.
    #[arg(long, default_value_t = 0.0)]
    l2: f32,
    /// SGD learning-rate schedule.
    #[arg(long, value_enum, default_value = "invscaling")]
    schedule: Schedule,
    /// Inverse-scaling power p.
    #[arg(long, default_value_t = 0.5)]
    power: f32,
    /// FTRL β.
    #[arg(long, default_value_t = 1.0)]
    beta: f32,
    /// Mini-batch size (1 = pure online). Default: online at first, then mini-batches that
    /// double as the model learns (t/256 rows after t examples) up to 256.
    #[arg(long)]
    batch: Option<usize>,
    /// Count and skip bad rows (malformed lines, NaN/Inf values, labels out of range)
    /// instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
}

/// Shards, merges and pacing (`train`, `bench`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Shards and pacing")]
pub struct ShardArgs {
    /// Worker threads (shards). Default: the cores, fewer for small inputs (one per 128 K
    /// rows to learn).
    #[arg(long)]
    threads: Option<usize>,
    /// Merge the replicas every K batches per shard.
    #[arg(long, default_value_t = 32)]
    merge_every: usize,
    /// Merge mode.
    #[arg(long, value_enum, default_value = "sync")]
    merge: MergeMode,
    /// Ring capacity per shard, in batches.
    #[arg(long, default_value_t = 8)]
    ring: usize,
    /// Open-loop pacing, rows per second (default: flat out).
    #[arg(long)]
    rate: Option<f64>,
    /// Pin shard i to core i.
    #[arg(long)]
    pin: bool,
}

/// Flags of the feature stage and monitoring (shared by `train` and `bench`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Feature stage and monitoring")]
pub struct FeatureArgs {
    /// Missing values (NaN cells): reject the row (default), drop it (counted), or impute
    /// zero / the running mean.
    #[arg(long, value_enum, default_value = "reject")]
    missing: Missing,
    /// Append a 0/1 missing indicator column per input feature.
    #[arg(long)]
    missing_indicator: bool,
    /// Drop rows identical (features and label, bitwise) to one of the last N rows.
    #[arg(long, default_value_t = 0)]
    dedup_window: usize,
    /// Online scaling: standard (running mean/variance), minmax, or none (raw features:
    /// fastest, for data already on a common scale, or with --optimizer normalized). Default
    /// standard on dense rows; hashed (sparse) features are scaled by the normalized update.
    #[arg(long, value_enum)]
    scale: Option<Scaling>,
    /// Clip standardised values at ±K standard deviations (needs --scale standard).
    #[arg(long)]
    clip: Option<f32>,
    /// Tumbling windows of N rows, reported as JSON lines.
    #[arg(long, conflicts_with = "window_time")]
    window_rows: Option<u64>,
    /// Tumbling event-time windows of this width (10s, 1m, 500ms), over the CSV column named
    /// by --timestamp-col.
    #[arg(long, value_parser = humantime::parse_duration)]
    window_time: Option<Duration>,
    /// How late a row may arrive, behind the largest timestamp seen, and still count in its
    /// event-time window; later rows are learned and counted as late.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    lateness: Duration,
    /// Where window lines and drift alarms go (JSON lines a dashboard can tail).
    #[arg(long)]
    window_report: Option<PathBuf>,
    /// Drift detection (Page-Hinkley on the per-batch loss): warn, or reset the optimizer.
    #[arg(long, value_enum)]
    on_drift: Option<OnDrift>,
    /// Page-Hinkley δ (tolerated increase of the mean loss per batch).
    #[arg(long, default_value_t = 0.005)]
    drift_delta: f64,
    /// Page-Hinkley λ (alarm threshold on the cumulative deviation).
    #[arg(long, default_value_t = 0.5)]
    drift_lambda: f64,
}

impl FeatureArgs {
    /// The dense path's scaling (standard unless given).
    fn scale(&self) -> Scaling {
        self.scale.unwrap_or(Scaling::Standard)
    }

    fn apply(&self, cfg: &mut PipelineConfig) -> anyhow::Result<()> {
        if let Some(k) = self.clip {
            ensure!(k.is_finite() && k > 0.0, "--clip {k} must be > 0");
            ensure!(self.scale() == Scaling::Standard, "--clip needs --scale standard");
        }
        cfg.transform =
            TransformConfig { missing: self.missing, indicator: self.missing_indicator, scaling: self.scale(), clip: self.clip };
        cfg.dedup_window = self.dedup_window;
        cfg.windows = self.windows()?;
        Ok(())
    }

    /// Windows and drift detection, if any flag of theirs is given.
    fn windows(&self) -> anyhow::Result<Option<WindowConfig>> {
        if !(self.window_rows.is_some() || self.window_time.is_some() || self.window_report.is_some() || self.on_drift.is_some()) {
            return Ok(None);
        }
        ensure!(self.drift_delta >= 0.0 && self.drift_lambda > 0.0, "--drift-delta must be ≥ 0 and --drift-lambda > 0");
        ensure!(self.window_rows != Some(0), "--window-rows must be at least 1");
        let kind = match (self.window_rows, self.window_time) {
            (Some(n), _) => WindowKind::Rows(n),
            (None, Some(w)) => {
                ensure!(!w.is_zero(), "--window-time must be longer than 0");
                WindowKind::Time(EventTime { width: w.as_secs_f64(), lateness: self.lateness.as_secs_f64() })
            }
            (None, None) => WindowKind::Off,
        };
        Ok(Some(WindowConfig {
            kind,
            report: self.window_report.clone(),
            delta: self.drift_delta,
            lambda: self.drift_lambda,
            on_drift: self.on_drift.unwrap_or(OnDrift::Warn),
        }))
    }
}

impl ModelArgs {
    /// The learner; `raw`: the features reach it unscaled (the optimizer's default then is
    /// the normalized one).
    fn learner(&self, raw: bool) -> anyhow::Result<LearnerConfig> {
        let loss = match self.loss {
            LossName::Squared => Loss::Squared,
            LossName::Logistic => Loss::Logistic,
            LossName::Hinge => Loss::Hinge,
            LossName::Huber => {
                ensure!(self.huber_delta.is_finite() && self.huber_delta > 0.0, "--huber-delta {} must be > 0", self.huber_delta);
                Loss::Huber { delta: self.huber_delta }
            }
            LossName::EpsilonInsensitive => {
                ensure!(self.epsilon.is_finite() && self.epsilon >= 0.0, "--epsilon {} must be ≥ 0", self.epsilon);
                Loss::EpsilonInsensitive { epsilon: self.epsilon }
            }
            LossName::Quantile => {
                ensure!(self.quantile > 0.0 && self.quantile < 1.0, "--quantile {} must be in (0, 1)", self.quantile);
                Loss::Quantile { tau: self.quantile }
            }
            LossName::ModifiedHuber => Loss::ModifiedHuber,
            LossName::SquaredHinge => Loss::SquaredHinge,
            LossName::Perceptron => Loss::Perceptron,
        };
        let base = OptimConfig::new(self.optimizer.unwrap_or(if raw { Kind::Normalized } else { Kind::Adagrad }));
        let optim = OptimConfig {
            lr: self.lr.unwrap_or(base.lr),
            l1: self.l1,
            l2: self.l2,
            schedule: self.schedule,
            power: self.power,
            beta: self.beta,
            ..base
        };
        optim.check().map_err(anyhow::Error::msg)?;
        ensure!(self.batch != Some(0), "--batch must be at least 1");
        let bad_rows = if self.skip_bad { BadRows::Skip } else { BadRows::Error };
        let grown = LearnerConfig::new(loss, optim);
        Ok(LearnerConfig { batch: self.batch.unwrap_or(grown.batch), grow: self.batch.is_none(), bad_rows, ..grown })
    }
}

/// The pipeline's settings from the three flag groups, with `threads` shards.
fn pipeline_config(m: &ModelArgs, s: &ShardArgs, f: &FeatureArgs, threads: usize) -> anyhow::Result<PipelineConfig> {
    ensure!(threads >= 1, "--threads must be at least 1");
    ensure!(s.merge_every >= 1, "--merge-every must be at least 1");
    ensure!(s.ring >= 1, "--ring must be at least 1");
    if let Some(r) = s.rate {
        ensure!(r.is_finite() && r > 0.0, "--rate {r} must be > 0 rows/s");
    }
    let mut cfg = PipelineConfig {
        merge_every: s.merge_every,
        merge: s.merge,
        ring_capacity: s.ring,
        rate: s.rate,
        pin: s.pin,
        ..PipelineConfig::new(m.learner(f.scale() == Scaling::None)?, threads)
    };
    f.apply(&mut cfg)?;
    Ok(cfg)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A warning when shards outnumber the cores: they take turns on them (their waits at merges
/// then sleep rather than spin), and each learns a smaller share between merges.
fn warn_oversubscribed(threads: usize) {
    let n = cores();
    if threads > n {
        eprintln!(
            "warning: --threads {threads} is more than the {n} cores: the shards take turns on them (slower than --threads {n}), and each learns a smaller share of the stream between merges"
        );
    }
}

/// `--threads` by default: the cores, but at most one shard per 4·K batches of the rows to
/// learn (`rows`, when known; K = `--merge-every`). Each replica learns only its share between
/// merges: below that, shards would learn a small input as several half-trained replicas,
/// averaged at the end, instead of one model that saw every row.
fn default_threads(rows: Option<u64>, merge_every: usize) -> usize {
    let per_shard = 4 * merge_every.max(1) as u64 * streamsgd::batch::BATCH_ROWS as u64;
    rows.map_or(cores(), |r| ((r / per_shard) as usize).clamp(1, cores()))
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training data: a .ssgd file (mapped), a .csv/.libsvm/.vw file, - for stdin,
    /// tcp://HOST:PORT to read lines from a socket, or kafka://BROKER/TOPIC.
    data: String,
    #[command(flatten)]
    text: super::TextArgs,
    #[cfg(feature = "kafka")]
    #[command(flatten)]
    kafka: super::kafka::KafkaArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    shards: ShardArgs,
    #[command(flatten)]
    features_stage: FeatureArgs,
    #[command(flatten)]
    sparse: sparse::SparseArgs,
    /// A live source (a socket, stdin, a Kafka topic) ends once nothing has come for this long
    /// (10s, 2m; default: wait until it closes, or Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Serve the run's Prometheus metrics (/metrics) and `serve`'s status page (/) at this
    /// address while it trains (dense runs).
    #[cfg(feature = "serve")]
    #[arg(help_heading = "Run and output", long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Check every block of a .ssgd file against its checksum before learning (one more read
    /// of the file: about 10 GB/s).
    #[arg(long)]
    verify: bool,
    /// Passes over the data (a text file is parsed once into a .ssgd cache that the passes
    /// replay).
    #[arg(help_heading = "Run and output", long, default_value_t = 1)]
    passes: usize,
    /// With --passes over a text file: keep its .ssgd cache here, and replay it next time
    /// while the text and options are unchanged (default: a temporary file, removed).
    #[arg(help_heading = "Run and output", long)]
    cache: Option<PathBuf>,
    /// Shuffle the block order of a .ssgd file each pass, with this seed.
    #[arg(help_heading = "Run and output", long)]
    shuffle_seed: Option<u64>,
    /// Keep the last FRACTION of the rows (in stream order) out of training; report on them.
    #[arg(help_heading = "Run and output", long)]
    holdout: Option<f64>,
    /// Evaluate the trained model on this file.
    #[arg(help_heading = "Run and output", long)]
    test: Option<String>,
    /// Save the trained model here (atomically).
    #[arg(help_heading = "Run and output", long)]
    save: Option<PathBuf>,
    /// Continue from this model file (weights and optimizer state).
    #[arg(help_heading = "Run and output", long)]
    resume: Option<PathBuf>,
    /// Write checkpoints (model + optimizer state) to this file.
    #[arg(help_heading = "Run and output", long)]
    checkpoint: Option<PathBuf>,
    /// Checkpoint about every N rows (at the next merge).
    #[arg(help_heading = "Run and output", long, default_value_t = 1_000_000)]
    checkpoint_every: u64,
    /// Print the report as JSON.
    #[arg(help_heading = "Run and output", long)]
    json: bool,
    /// Write the end-to-end latency distribution (HdrHistogram percentile text) here.
    #[arg(help_heading = "Run and output", long)]
    hgrm: Option<PathBuf>,
}

/// An opened data source.
pub(super) enum Data {
    Mapped(Dataset),
    Text {
        parser: TextParser<Box<dyn BufRead>>,
        rows: Option<u64>,
    },
    /// A consumer, or its shards (`per_shard`: each shard reads one, with no producer).
    #[cfg(feature = "kafka")]
    Kafka {
        sources: Vec<streamsgd::source::kafka::KafkaSource>,
        per_shard: bool,
    },
}

/// Opens `spec`; a socket or stdin ends early as `patience` says; `count`: count a text file's
/// rows (for `--holdout`).
pub(super) fn open_data(
    spec: &str,
    format: Option<TextFormat>,
    text: &TextOptions,
    count: bool,
    patience: &Patience,
) -> anyhow::Result<(Data, String)> {
    ensure!(
        !spec.starts_with("kafka://") || cfg!(feature = "kafka"),
        "{spec}: this build has no Kafka support (build with the default `kafka` feature)"
    );
    ensure!(!spec.starts_with("kafka://"), "{spec}: Kafka topics are a source for train only");
    if let Some(addr) = spec.strip_prefix("tcp://") {
        let format = format.context("a socket source needs --format csv|libsvm|vw")?;
        let mut parser = TextParser::new(connect(spec, addr, patience)?, spec.to_string(), format, text)?;
        parser.require_newline();
        return Ok((Data::Text { parser, rows: None }, spec.to_string()));
    }
    let path = Path::new(spec);
    if path.extension().is_some_and(|e| e == "ssgd") {
        return Ok((Data::Mapped(Dataset::open(path)?), spec.to_string()));
    }
    let format = resolve_format(path, format)?;
    let rows = if count && spec != "-" { Some(count_rows(path, format)?) } else { None };
    Ok((Data::Text { parser: open_parser(path, format, text, patience)?, rows }, source_name(path)))
}

/// A buffered reader of the socket `addr` (`spec` names it in errors), read as `patience` says.
fn connect(spec: &str, addr: &str, patience: &Patience) -> anyhow::Result<Box<dyn BufRead>> {
    let sock = addr.parse::<std::net::SocketAddr>().with_context(|| format!("{spec}: not a HOST:PORT address")).and_then(|a| {
        std::net::TcpStream::connect_timeout(&a, Duration::from_secs(10)).with_context(|| format!("{spec}: cannot connect"))
    })?;
    Ok(Box::new(BufReader::with_capacity(1 << 20, LiveReader::new(sock, patience.clone()))))
}

/// Whether `spec` names a regular text file (one the shards can split among them).
fn is_text_file(spec: &str) -> bool {
    !spec.ends_with(".ssgd") && is_regular_file(Path::new(spec))
}

fn input_of(data: &mut Data, holdout: Option<f64>, skip_bad: bool) -> anyhow::Result<Input<'_>> {
    let keep = |rows: u64| rows - ((rows as f64 * holdout.unwrap_or(0.0)).round() as u64).min(rows);
    Ok(match data {
        Data::Mapped(dataset) => {
            let train_rows = keep(dataset.rows());
            Input::Mapped { dataset, train_rows }
        }
        Data::Text { parser, rows } => {
            let train_rows = match (holdout, *rows) {
                (None, _) => None,
                (Some(_), Some(r)) => Some(keep(r)),
                (Some(_), None) => bail!("--holdout needs to know the row count: use a file, or --test FILE for streams"),
            };
            Input::Stream { parser, train_rows, skip_bad }
        }
        #[cfg(feature = "kafka")]
        Data::Kafka { sources, per_shard } => {
            ensure!(holdout.is_none(), "--holdout needs a file: a Kafka stream has no end to hold out (use --test FILE)");
            if *per_shard {
                let sources = sources.iter_mut().map(|s| s as &mut (dyn streamsgd::source::RowSource + Send)).collect();
                Input::Owned { sources, skip_bad }
            } else {
                Input::Stream { parser: &mut sources[0], train_rows: None, skip_bad }
            }
        }
    })
}

pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if sparse::is_sparse(&a.data, a.text.format, a.text.features, &a.sparse) {
        #[cfg(feature = "serve")]
        ensure!(a.metrics_addr.is_none(), "--metrics-addr: for dense runs (a sparse run reports its windows with --window-report)");
        return sparse::train(a, started);
    }
    if let Some(h) = a.holdout {
        ensure!((0.0..1.0).contains(&h), "--holdout {h} must be in [0, 1)");
    }
    ensure!(a.passes >= 1, "--passes must be at least 1");
    let mut text = a.text.options();
    let initial = a.resume.as_deref().map(ModelFile::load).transpose()?;
    // A resumed model's inputs: the data's columns are mapped to them by name, or refused.
    let resumed_schema = initial.as_ref().map(|f| f.schema().map_err(anyhow::Error::msg)).transpose()?.flatten();
    if let Some(s) = &resumed_schema {
        expect_schema(&mut text, s, false);
    }
    let stop = super::signals::install()?;
    let patience = Patience { idle: a.idle_timeout, stop: Some(stop.flag()) };
    let (mut data, name) = match () {
        #[cfg(feature = "kafka")]
        () if a.data.starts_with("kafka://") => {
            ensure!(a.shards.rate.is_none(), "--rate paces replay from files: a Kafka source arrives at its own pace");
            let source = super::kafka::open(&a.data, &a.kafka, a.text.format, &text, &patience, false)?;
            let name = source.name().to_string();
            (Data::Kafka { sources: vec![source], per_shard: false }, name)
        }
        () => open_data(&a.data, a.text.format, &text, a.holdout.is_some() && !is_text_file(&a.data), &patience)?,
    };
    // --passes over a text file: parsed once into a .ssgd cache the passes replay, its schema
    // (CSV names, the label) taken from the text.
    let mut text_schema = None;
    let cache = match &data {
        Data::Text { .. } if a.passes > 1 && is_text_file(&a.data) => {
            text_schema = Some(data_schema(&data));
            let opts = ConvertOptions {
                format: a.text.format,
                text: text.clone(),
                skip_bad: a.model.skip_bad,
                block_rows: streamsgd::dataset::writer::DEFAULT_BLOCK_ROWS,
                stop: Some(stop.flag()),
            };
            let fingerprint = format!("dense {:?} {:?} {}", opts.format, opts.text, opts.skip_bad);
            let c = cache::TextCache::prepare(Path::new(&a.data), a.cache.as_deref(), &fingerprint, |out| {
                Ok(convert_text(Path::new(&a.data), out, &opts, &indicatif::ProgressBar::hidden())?)
            })?;
            data = Data::Mapped(Dataset::open(c.path())?);
            Some(c)
        }
        _ => None,
    };
    ensure!(a.cache.is_none() || cache.is_some(), "--cache keeps the .ssgd cache of a text file read with --passes 2 or more");
    if a.verify {
        let Data::Mapped(ds) = &data else {
            bail!("{name}: --verify checks a .ssgd file's block checksums; text and live sources have none");
        };
        ensure!(ds.verify()?, "{name}: --verify: the file has no block checksums (written before they existed)");
    }
    let total = match &data {
        Data::Mapped(ds) => Some(ds.rows() * a.passes as u64),
        Data::Text { rows, .. } => *rows,
        #[cfg(feature = "kafka")]
        Data::Kafka { .. } => None,
    };
    let threads = a.shards.threads.unwrap_or_else(|| default_threads(total, a.shards.merge_every));
    warn_oversubscribed(threads);
    let mut cfg = pipeline_config(&a.model, &a.shards, &a.features_stage, threads)?;
    // A topic's partitions are dealt to the shards, each reading its own, unless the run needs
    // one stream.
    #[cfg(feature = "kafka")]
    if let (Data::Kafka { sources, per_shard }, false) = (&mut data, cfg.needs_one_stream()) {
        let consumer = sources.pop().expect("a consumer was opened");
        *sources = consumer.into_shards(threads)?;
        *per_shard = true;
    }
    cfg.passes = a.passes;
    cfg.shuffle_seed = a.shuffle_seed;
    cfg.checkpoint = a.checkpoint.clone();
    cfg.checkpoint_every = a.checkpoint_every;
    cfg.stop = Some(stop.flag());
    if let Some(f) = &initial {
        ensure!(
            f.model.loss == cfg.learner.loss,
            "--resume: the model was trained with the {} loss, this run asks for {}",
            f.model.loss,
            cfg.learner.loss
        );
    }
    // A text file is split among the shards, which parse their own ranges; what needs the
    // rows in one stream (duplicate and event windows, pacing, passes) reads it with one thread.
    let split = match &mut data {
        Data::Text { parser, rows } if is_text_file(&a.data) => {
            let (path, format) = (Path::new(&a.data), resolve_format(Path::new(&a.data), a.text.format)?);
            if cfg.needs_one_stream() || parser.has_timestamps() {
                if a.holdout.is_some() {
                    *rows = Some(count_rows(path, format)?);
                }
                None
            } else {
                let text = SplitText::open(path, parser.bytes(), parser.line_no(), a.holdout.unwrap_or(0.0), format)
                    .with_context(|| format!("{name}: cannot map the file"))?;
                Some(text.with_rows_per_range(streamsgd::batch::BATCH_ROWS))
            }
        }
        _ => None,
    };
    let schema = text_schema.unwrap_or_else(|| data_schema(&data));
    if let (None, Some(l)) = (&text.label, &schema.label) {
        if !matches!(l.as_str(), "label" | "target" | "y") {
            eprintln!("note: the label is the last column, '{l}' (no column is named label, target or y; --label NAME picks another)");
        }
    }
    if let (Some(s), Some(p)) = (&resumed_schema, &a.resume) {
        s.check(schema.features, schema.names.as_deref()).map_err(|e| anyhow::anyhow!("--resume {}: {e}", p.display()))?;
    }
    // The test set is opened and checked now, not after training.
    if let Some(t) = &a.test {
        let mut test_text = text.clone();
        expect_schema(&mut test_text, &schema, false);
        let (test_data, _) = open_data(t, a.text.format, &test_text, false, &Patience::default())?;
        let s = data_schema(&test_data);
        schema.check(s.features, s.names.as_deref()).map_err(|e| anyhow::anyhow!("--test {t}: {e}"))?;
    }
    let bar = super::progress(total.unwrap_or(0), "rows");
    let shared = Arc::new(SharedModel::new(streamsgd::model::LinearModel::zeros(cfg.learner.loss, 1)));
    // A stream with more than one shard: this thread deals its lines out in chunks, and the
    // shards parse them (unless the run needs one stream, or counts rows for a holdout).
    let chunked = matches!(&data, Data::Text { parser, .. } if !parser.has_timestamps())
        && split.is_none()
        && !is_text_file(&a.data)
        && threads > 1
        && !cfg.needs_one_stream()
        && a.holdout.is_none();
    let mut input = match (&mut data, &split) {
        (Data::Text { parser, .. }, Some(text)) => {
            Input::Split { text, parser: parser.detached(std::io::empty(), 0), skip_bad: a.model.skip_bad }
        }
        (Data::Text { parser, .. }, None) if chunked => {
            let template = parser.detached(std::io::empty(), 0);
            let (header_lines, require_newline) = (parser.line_no(), parser.requires_newline());
            let reader: &mut dyn BufRead = &mut **parser.reader_mut();
            Input::Chunked { reader, parser: template, header_lines, require_newline, skip_bad: a.model.skip_bad }
        }
        _ => input_of(&mut data, a.holdout, a.model.skip_bad)?,
    };
    #[cfg(feature = "serve")]
    let watching = a.metrics_addr.map(|addr| super::serve::watch_training(addr, bar.clone(), shared.clone())).transpose()?;
    let opened = started.elapsed().as_secs_f64();
    let mut out = pipeline::train(&cfg, &mut input, &name, initial, shared, &bar)?;
    #[cfg(feature = "serve")]
    drop(watching);
    out.model.set_schema(&schema);
    // From the command's start: opening (and prefaulting) the input included.
    let wall = started.elapsed().as_secs_f64();
    let nothing = out.report.rows_learned == 0;
    if nothing {
        if let Some(e) = out.source_error {
            return Err(anyhow::Error::new(e).context("nothing was learned before the input failed"));
        }
        let r = &out.report;
        let why = match &data {
            #[cfg(feature = "kafka")]
            Data::Kafka { .. } => {
                // A topic with nothing new for the group is not a mistake: said, and no model.
                eprintln!(
                    "warning: nothing was learned, so no model is saved: no record came from {name}; consumer group '{}' had committed offsets at the topic's end (another --group learns the topic again)",
                    a.kafka.group
                );
                None
            }
            _ if r.rows == 0 => Some(format!("{name} has no rows to learn (after the header and the holdout)")),
            _ => Some(
                format!(
                    "all {} rows of {name} were rejected ({}), dropped as missing ({}) or as duplicates ({})",
                    r.rows, r.rows_rejected, r.rows_dropped_missing, r.rows_dropped_duplicate
                ) + &r.first_rejected.as_ref().map(|w| format!("; the first rejected: {w}")).unwrap_or_default(),
            ),
        };
        if let Some(why) = why {
            bail!("nothing was learned, so no model is saved: {why}");
        }
    }
    // Saved before the test set is read: a bad test file does not lose the model.
    if let (Some(p), false) = (&a.save, nothing) {
        out.model.save(p)?;
    }
    // A stop also leaves a checkpoint to resume from, as a run's end does not.
    if let (true, Some(p)) = (out.report.stopped, &a.checkpoint) {
        out.model.save(p)?;
    }
    let test = match &a.test {
        Some(t) if !out.report.stopped => Some(evaluate_file(t, a.text.format, &text, &out.model, cfg.learner.bad_rows)?),
        _ => None,
    };
    if let Some(p) = &a.hgrm {
        std::fs::write(p, out.latency.end_to_end.hgrm()).with_context(|| format!("writing {}", p.display()))?;
    }
    let source = match &data {
        #[cfg(feature = "kafka")]
        Data::Kafka { sources, .. } => {
            let s = super::kafka::stats(sources);
            Some((super::kafka::summary(&s), serde_json::to_value(&s)?))
        }
        _ => None,
    };
    report(&out, (wall, opened), test.as_ref(), source, a.json)?;
    #[cfg(feature = "kafka")]
    if let Data::Kafka { sources, .. } = data {
        super::kafka::close(sources);
    }
    warn_if_unlearned(&out.report, test.as_ref(), &cfg);
    let kept = match (&a.save, &a.checkpoint) {
        (Some(p), _) => format!("the model of the {} rows before it is saved in {}", out.report.rows, p.display()),
        (None, Some(p)) if out.report.stopped => format!("the model of the {} rows before it is saved in {}", out.report.rows, p.display()),
        _ => format!("the model of the {} rows before it is reported above (--save keeps it)", out.report.rows),
    };
    if let Some(e) = out.source_error {
        return Err(anyhow::Error::new(e).context(format!("the input failed; {kept}")));
    }
    if let Some(code) = stop.exit_code() {
        eprintln!("stopped by signal {}: {kept}", code - 128);
        return Err(super::signals::Interrupted { code }.into());
    }
    Ok(())
}

/// A warning on stderr when the model ends no better than a constant prediction of the labels
/// (on the test set, else the holdout, else progressively), naming the flags that may help.
fn warn_if_unlearned(r: &TrainReport, test: Option<&Evaluation>, cfg: &PipelineConfig) {
    let mut advice = Vec::new();
    if cfg.transform.scaling == Scaling::None {
        advice.push("scale the features (--scale standard)".to_string());
    }
    advice.push(format!("try another learning rate (--lr, now {})", cfg.learner.optim.lr));
    if cfg.passes < 10 {
        advice.push("learn more passes (--passes)".into());
    }
    warn_unlearned(test, r.holdout.as_ref(), (r.progressive_loss, r.progressive_baseline), &advice);
}

/// A warning when the model's loss — on the test set, else the holdout, else progressive
/// (loss, constant prediction's) — is no better than a constant prediction's; `advice` says
/// what may help.
fn warn_unlearned(test: Option<&Evaluation>, holdout: Option<&Evaluation>, progressive: (f64, f64), advice: &[String]) {
    let (what, loss, baseline) = match test.or(holdout) {
        Some(e) => (if test.is_some() { "test" } else { "holdout" }, e.loss, e.baseline),
        None => ("progressive", progressive.0, progressive.1),
    };
    if !(loss.is_finite() && baseline.is_finite()) || loss < baseline {
        return;
    }
    eprintln!(
        "warning: the model's {what} loss {loss:.4} is no better than always predicting the same value ({baseline:.4}): {}",
        advice.join(", or ")
    );
}

fn evaluate_file(
    spec: &str,
    format: Option<TextFormat>,
    text: &TextOptions,
    model: &ModelFile,
    bad: BadRows,
) -> anyhow::Result<Evaluation> {
    let mut text = text.clone();
    let schema = model.schema().map_err(anyhow::Error::msg)?;
    if let Some(s) = &schema {
        expect_schema(&mut text, s, false);
    }
    let (mut data, _) = open_data(spec, format, &text, false, &Patience::default())?;
    if let Some(s) = &schema {
        let d = data_schema(&data);
        s.check(d.features, d.names.as_deref()).map_err(|e| anyhow::anyhow!("{spec}: {e}"))?;
    }
    let mut input = match &mut data {
        Data::Mapped(dataset) => Input::Mapped { dataset, train_rows: 0 },
        Data::Text { parser, .. } => Input::Stream { parser, train_rows: Some(0), skip_bad: bad == BadRows::Skip },
        #[cfg(feature = "kafka")]
        Data::Kafka { sources, .. } => bail!("{}: the test set must be a file", sources[0].name()),
    };
    let transform = pipeline::saved_transform(&model.extra)?;
    pipeline::evaluate_holdout(&mut input, &model.model, transform.as_ref(), bad)?.with_context(|| format!("{spec}: no rows to evaluate"))
}

/// What an opened input's rows hold: their feature count, names and label column.
fn data_schema(data: &Data) -> Schema {
    match data {
        Data::Mapped(ds) => Schema { features: ds.features(), names: None, label: None },
        Data::Text { parser, .. } => Schema { features: parser.features(), names: parser.feature_names(), label: parser.label_name() },
        #[cfg(feature = "kafka")]
        Data::Kafka { sources, .. } => Schema { features: streamsgd::source::RowSource::features(&sources[0]), names: None, label: None },
    }
}

/// Text options that read data as a model with `schema` expects it: CSV columns by the
/// model's names (any order), VW names as the model's columns, LibSVM/hashed VW in its
/// dimension, its label column (`optional_label`: when the header has one — data to predict
/// on).
fn expect_schema(text: &mut TextOptions, schema: &Schema, optional_label: bool) {
    text.feature_order = schema.names.clone();
    text.vw_names = schema.names.clone();
    text.features = Some(text.features.unwrap_or(schema.features));
    if let (None, Some(l)) = (&text.label, &schema.label) {
        text.label = Some(if optional_label { LabelColumn::IfPresent(l.clone()) } else { LabelColumn::Name(l.clone()) });
    }
}

fn pct_line(name: &str, p: &Percentiles) -> String {
    let us = |v: u64| format!("{:.1}", v as f64 / 1e3);
    format!("  {name:<12} {:>9} {:>9} {:>9} {:>9} {:>9}", us(p.p50), us(p.p90), us(p.p99), us(p.p999), us(p.max))
}

fn eval_line(e: &Evaluation) -> String {
    let mut s = format!("loss {:.4}", e.loss);
    if let Some(a) = e.accuracy {
        s += &format!("  accuracy {a:.4}");
    }
    if let Some(a) = e.auc {
        s += &format!("  auc {a:.4}");
    }
    if let Some(r) = e.rmse {
        s += &format!("  rmse {r:.4}");
    }
    s
}

/// Prints the report; `wall`: seconds from the command's start (opening the input included),
/// and to the input opened; `source` is a line and a JSON value on what a live source did.
fn report(
    out: &TrainOutcome,
    (wall, opened): (f64, f64),
    test: Option<&Evaluation>,
    source: Option<(String, serde_json::Value)>,
    json: bool,
) -> anyhow::Result<()> {
    let r: &TrainReport = &out.report;
    if json {
        let mut v = serde_json::to_value(r)?;
        v["wall_seconds"] = wall.into();
        v["first_batch_wall_seconds"] = r.first_batch_seconds.map(|f| opened + f).into();
        v["test"] = serde_json::to_value(test)?;
        if let Some((_, s)) = &source {
            v["source"] = s.clone();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "trained on {} rows ({} learned, {} rejected) in {:.3} s: {:.2} M rows/s (whole command, opening the input and the holdout included: {:.3} s, {:.2} M rows/s), {} thread(s), {} merges ({:?} every {}), batch {}{}, {:?} kernels",
        r.rows,
        r.rows_learned,
        r.rows_rejected,
        r.seconds,
        r.rows_per_sec / 1e6,
        wall,
        r.rows as f64 / wall.max(1e-9) / 1e6,
        r.threads,
        r.merges,
        r.merge,
        r.merge_every,
        r.batch,
        if r.batch_grows { " (growing from 1)" } else { "" },
        r.isa
    );
    if let Some(f) = r.first_batch_seconds {
        println!("first batch learned {:.3} s after the command started (the input opened in {opened:.3} s)", opened + f);
    }
    if let Some(why) = &r.first_rejected {
        println!("first rejected: {why}");
    }
    if r.rows_dropped_missing + r.rows_dropped_duplicate + r.cells_imputed > 0 {
        println!(
            "feature stage: {} rows dropped for missing values, {} duplicate rows dropped, {} cells imputed",
            r.rows_dropped_missing, r.rows_dropped_duplicate, r.cells_imputed
        );
    }
    if r.dedup_windows > 1 {
        println!("duplicate windows: {:.1} MB of memory (one per shard)", r.dedup_bytes as f64 / 1e6);
    } else if r.dedup_windows == 1 {
        println!("duplicate window: {:.1} MB of memory", r.dedup_bytes as f64 / 1e6);
    }
    if r.rows_late > 0 {
        println!("event time: {} rows arrived after their window closed (learned, counted as late)", r.rows_late);
    }
    print_alarms(&r.drift_alarms);
    if r.stopped {
        println!("stopped early: these are the rows read until the stop, each learned");
    }
    let mut prog = format!("progressive  loss {:.4}", r.progressive_loss);
    if let Some(a) = r.progressive_accuracy {
        prog += &format!("  accuracy {a:.4}");
    }
    if let Some(e) = r.progressive_rmse {
        prog += &format!("  rmse {e:.4}");
    }
    println!("{prog}  (constant prediction: loss {:.4})", r.progressive_baseline);
    if let Some(h) = &r.holdout {
        println!("holdout      {} ({} rows; constant prediction: loss {:.4})", eval_line(h), h.rows, h.baseline);
    }
    if let Some(t) = test {
        println!("test         {} ({} rows; constant prediction: loss {:.4})", eval_line(t), t.rows, t.baseline);
    }
    if let Some((line, _)) = &source {
        println!("{line}");
    }
    println!("latency per batch, µs:  {:>9} {:>9} {:>9} {:>9} {:>9}", "p50", "p90", "p99", "p99.9", "max");
    println!("{}", pct_line("queue", &r.stages_ns.queue));
    println!("{}", pct_line("compute", &r.stages_ns.compute));
    println!("{}", pct_line("end-to-end", &r.latency_ns));
    Ok(())
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// The model file.
    #[arg(long)]
    model: PathBuf,
    /// Data: .ssgd, .csv/.libsvm/.vw, - for stdin, or tcp://HOST:PORT (a CSV label column is
    /// read and ignored; LibSVM/VW feature count defaults to the model's).
    data: String,
    #[command(flatten)]
    text: super::TextArgs,
}

pub fn predict(a: PredictArgs) -> anyhow::Result<()> {
    let file = ModelFile::load(&a.model)?;
    if sparse::predict(&a, &file)? {
        return Ok(());
    }
    let schema = file.schema().map_err(anyhow::Error::msg)?;
    // Inputs are raw rows; the model's feature stage (frozen statistics) maps them to the
    // model's columns exactly as in training: the library's `Predictor`.
    let predictor = Predictor::from_file(file)?;
    let Predictor::Dense { model: m, transform } = &predictor else { unreachable!("a sparse model is predicted above") };
    let d = predictor.features().unwrap_or(0);
    let mut text = a.text.options();
    text.features = Some(text.features.unwrap_or(d));
    if let Some(s) = &schema {
        expect_schema(&mut text, s, true);
    }
    let (mut data, mut name) = open_data(&a.data, a.text.format, &text, false, &Patience::default())?;
    match (&schema, &data) {
        (Some(s), _) => {
            let got = data_schema(&data);
            s.check(got.features, got.names.as_deref()).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        }
        // A model without a schema: a CSV file whose header has exactly its inputs has no label column.
        (None, Data::Text { parser, .. })
            if text.label.is_none() && parser.features() + 1 == d && a.data != "-" && !a.data.starts_with("tcp://") =>
        {
            text.label = Some(LabelColumn::Absent);
            (data, name) = open_data(&a.data, a.text.format, &text, false, &Patience::default())?;
        }
        _ => {}
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut lat = Latency::default();
    let mut num = ryu::Buffer::new();
    let start = Instant::now();
    let mut rows = 0u64;
    // One output (a probability, a value) per row.
    let mut emit = |out: &mut BufWriter<_>, p: f32| -> std::io::Result<()> {
        out.write_all(num.format(p).as_bytes())?;
        out.write_all(b"\n")
    };
    let mut outputs = Vec::new();
    match &mut data {
        Data::Mapped(ds) => {
            ensure!(ds.features() == d, "{name} has {} features, the model {d}", ds.features());
            let mut row = vec![0.0f32; d];
            for b in ds.iter() {
                let t = Instant::now();
                outputs.clear();
                if transform.is_some() {
                    for r in 0..b.rows {
                        b.row_into(r, &mut row);
                        predictor.predict_batch(&row, &mut outputs)?;
                    }
                } else {
                    outputs.resize(b.rows, 0.0);
                    m.predict_block(&Columns::new(b.data, b.stride, d, 0, b.rows), &mut outputs);
                    outputs.iter_mut().for_each(|p| *p = m.loss.output(*p));
                }
                let per_row = t.elapsed().as_nanos() as u64 / b.rows.max(1) as u64;
                for &v in &outputs {
                    lat.record(per_row);
                    emit(&mut out, v)?;
                }
                rows += b.rows as u64;
            }
        }
        Data::Text { parser, .. } => {
            ensure!(
                parser.features() == d,
                "{name} has {} features, the model {d} (a CSV without a label column needs --label none on stdin)",
                parser.features()
            );
            let mut row = vec![0.0f32; d];
            loop {
                let t = Instant::now();
                let Some(_) = parser.next_row(&mut row)? else { break };
                outputs.clear();
                predictor.predict_batch(&row, &mut outputs)?;
                lat.record(t.elapsed().as_nanos() as u64);
                emit(&mut out, outputs[0])?;
                rows += 1;
            }
        }
        #[cfg(feature = "kafka")]
        Data::Kafka { sources, .. } => bail!("{}: predict reads files, stdin and sockets", sources[0].name()),
    }
    out.flush()?;
    let secs = start.elapsed().as_secs_f64();
    let p = lat.percentiles();
    eprintln!(
        "predicted {rows} rows in {secs:.3} s ({:.2} M rows/s); per-row latency (parse + predict) p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        rows as f64 / secs.max(1e-9) / 1e6,
        p.p50,
        p.p99,
        p.p999,
        p.max
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Rows to generate (ignored with --data).
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Features.
    #[arg(long, default_value_t = 32)]
    features: usize,
    /// Task of the generated data.
    #[arg(long, value_enum, default_value = "classification")]
    task: Task,
    /// Use this .ssgd file instead of generating one.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Thread counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    thread_counts: Vec<usize>,
    /// Fraction of rows held out for the holdout loss.
    #[arg(long, default_value_t = 0.1)]
    holdout: f64,
    /// Runs per configuration (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    shards: ShardArgs,
    #[command(flatten)]
    features_stage: FeatureArgs,
    #[command(flatten)]
    sparse: sparse::SparseArgs,
    /// Print JSON instead of a table.
    #[arg(help_heading = "Run and output", long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct BenchRow {
    threads: usize,
    rows_per_sec: f64,
    rows_per_sec_min: f64,
    rows_per_sec_max: f64,
    speedup: f64,
    roofline_fraction: f64,
    latency_ns: Percentiles,
    holdout_loss: Option<f64>,
    rate: Option<f64>,
    /// With a feature stage: the plain pipeline's median, from runs interleaved with these.
    plain_rows_per_sec: Option<f64>,
    /// rows_per_sec / plain_rows_per_sec.
    ratio_to_plain: Option<f64>,
}

/// Streams every byte of `bytes` with `threads` threads; GB/s (median of 5).
fn bandwidth(bytes: &[u8], threads: usize) -> f64 {
    use rayon::prelude::*;
    let words: &[u64] = bytemuck::cast_slice(&bytes[..bytes.len() / 64 * 64]);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let x = pool.install(|| words.par_chunks(1 << 16).map(|c| c.iter().fold(0u64, |a, &w| a ^ w)).reduce(|| 0, |a, b| a ^ b));
            std::hint::black_box(x);
            bytes.len() as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[2]
}

pub fn bench(a: BenchArgs) -> anyhow::Result<()> {
    ensure!(a.repeat >= 1 && !a.thread_counts.is_empty(), "--repeat and --thread-counts must be non-empty");
    if let Some(p) = a.data.as_deref().filter(|p| sparse::is_sparse(&p.to_string_lossy(), None, None, &a.sparse)) {
        return sparse::bench(p, &a.thread_counts, a.repeat, a.holdout, &a.model, &a.sparse, a.json);
    }
    let path = match &a.data {
        Some(p) => p.clone(),
        None => {
            let p = std::env::temp_dir().join(format!("streamsgd-bench-{:?}-{}x{}.ssgd", a.task, a.rows, a.features).to_lowercase());
            if Dataset::open(&p).map(|d| d.rows() != a.rows).unwrap_or(true) {
                let cfg = GenConfig {
                    task: a.task,
                    rows: a.rows,
                    features: a.features,
                    seed: 1,
                    noise: 0.0,
                    missing_rate: 0.0,
                    duplicate_rate: 0.0,
                    drift_at: None,
                };
                eprintln!("generating {} ...", p.display());
                write_generated(&Generator::new(cfg), &p, 1024, &indicatif::ProgressBar::hidden())?;
            }
            p
        }
    };
    let ds = Dataset::open(&path)?;
    if a.data.is_none() {
        eprintln!(
            "data: {} ({:.1} GB, kept for the next bench run: delete it to free the space)",
            path.display(),
            std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / 1e9
        );
    }
    let bytes_per_row = ds.bytes().len() as f64 / ds.rows().max(1) as f64;
    let max_threads = *a.thread_counts.iter().max().unwrap_or(&1);
    let bw1 = bandwidth(ds.bytes(), 1);
    let bwn = bandwidth(ds.bytes(), max_threads);
    let mut rows = Vec::new();
    let mut base = None;
    let run = |cfg: &pipeline::PipelineConfig| -> anyhow::Result<pipeline::TrainReport> {
        let shared = Arc::new(SharedModel::new(streamsgd::model::LinearModel::zeros(cfg.learner.loss, 1)));
        let train_rows = ds.rows() - (ds.rows() as f64 * a.holdout).round() as u64;
        let mut input = Input::Mapped { dataset: &ds, train_rows };
        Ok(pipeline::train(cfg, &mut input, &path.display().to_string(), None, shared, &indicatif::ProgressBar::hidden())?.report)
    };
    for &t in &a.thread_counts {
        let cfg = pipeline_config(&a.model, &a.shards, &a.features_stage, t)?;
        // The same learner without the feature stage.
        let plain = PipelineConfig { transform: TransformConfig::default(), dedup_window: 0, windows: None, ..cfg.clone() };
        // A feature stage is measured against the plain pipeline, runs interleaved, so that the
        // ratio comes from one run on a noisy machine.
        let staged = !cfg.transform.is_identity() || cfg.dedup_window > 0;
        let (mut runs, mut plain_runs) = (Vec::new(), Vec::new());
        for _ in 0..a.repeat {
            if staged {
                plain_runs.push(run(&plain)?.rows_per_sec);
            }
            runs.push(run(&cfg)?);
        }
        runs.sort_by(|x, y| x.rows_per_sec.total_cmp(&y.rows_per_sec));
        plain_runs.sort_by(f64::total_cmp);
        let plain_speed = plain_runs.get(plain_runs.len() / 2).copied();
        let med = &runs[runs.len() / 2];
        let speed = med.rows_per_sec;
        let base_speed = *base.get_or_insert(speed);
        let bw = if t == 1 { bw1 } else { bwn };
        rows.push(BenchRow {
            threads: t,
            rows_per_sec: speed,
            rows_per_sec_min: runs[0].rows_per_sec,
            rows_per_sec_max: runs[runs.len() - 1].rows_per_sec,
            speedup: speed / base_speed,
            roofline_fraction: speed / (bw * 1e9 / bytes_per_row),
            latency_ns: med.latency_ns,
            holdout_loss: med.holdout.map(|h| h.loss),
            rate: a.shards.rate,
            plain_rows_per_sec: plain_speed,
            ratio_to_plain: plain_speed.map(|p| speed / p),
        });
    }
    if a.json {
        let v = serde_json::json!({
            "file": path.display().to_string(), "rows": ds.rows(), "features": ds.features(),
            "bytes_per_row": bytes_per_row, "bandwidth_gbps_1_thread": bw1, "bandwidth_gbps_max_threads": bwn,
            "runs": rows,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{} rows × {} features ({:.0} bytes/row) from {}", ds.rows(), ds.features(), bytes_per_row, path.display());
    println!(
        "memory bandwidth (streaming the mapped file): {bw1:.1} GB/s with 1 thread, {bwn:.1} GB/s with {max_threads} → roofline {:.0} / {:.0} M rows/s",
        bw1 * 1e9 / bytes_per_row / 1e6,
        bwn * 1e9 / bytes_per_row / 1e6
    );
    println!("median of {} runs{}", a.repeat, a.shards.rate.map(|r| format!(", paced at {r:.0} rows/s")).unwrap_or_default());
    println!(
        "{:>7} {:>12} {:>16} {:>8} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "threads", "M rows/s", "(min–max)", "speedup", "roofline", "p50 µs", "p99 µs", "p99.9 µs", "holdout loss"
    );
    for r in &rows {
        println!(
            "{:>7} {:>12.2} {:>16} {:>7.2}× {:>8.0}% {:>9.1} {:>9.1} {:>9.1} {:>12}",
            r.threads,
            r.rows_per_sec / 1e6,
            format!("{:.1}–{:.1}", r.rows_per_sec_min / 1e6, r.rows_per_sec_max / 1e6),
            r.speedup,
            r.roofline_fraction * 100.0,
            r.latency_ns.p50 as f64 / 1e3,
            r.latency_ns.p99 as f64 / 1e3,
            r.latency_ns.p999 as f64 / 1e3,
            r.holdout_loss.map_or("-".into(), |l| format!("{l:.4}"))
        );
    }
    for r in &rows {
        if let (Some(p), Some(q)) = (r.plain_rows_per_sec, r.ratio_to_plain) {
            println!(
                "{} threads: feature stage {:.2} M rows/s vs plain pipeline {:.2} M rows/s (medians of interleaved runs): {:.0}% of plain",
                r.threads,
                r.rows_per_sec / 1e6,
                p / 1e6,
                q * 100.0
            );
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Training data: a .ssgd file (dense or sparse), at the same path on every host.
    data: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sparse: sparse::SparseArgs,
    /// Merge the workers' replicas every K batches per worker.
    #[arg(long, default_value_t = 32)]
    merge_every: usize,
    /// Keep the last FRACTION of the rows out of training; worker 0 reports on them.
    #[arg(long, default_value_t = 0.0)]
    holdout: f64,
    /// Where worker 0 saves the merged model (atomically).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Fail when no merge completes for this long: a peer died, is unreachable, or never
    /// started (10s, 2m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    peer_timeout: Duration,
    /// Print the report as JSON, on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Timely's own arguments, after `--`: -w WORKERS (per process), -n PROCESSES, -p INDEX,
    /// -h HOSTFILE (one host:port line per process).
    #[arg(last = true)]
    timely: Vec<String>,
}

pub fn cluster_train(a: ClusterArgs) -> anyhow::Result<()> {
    ensure!((0.0..1.0).contains(&a.holdout), "--holdout {} must be in [0, 1)", a.holdout);
    ensure!(a.merge_every >= 1, "--merge-every must be at least 1");
    let is_sparse = streamsgd::dataset::sparse::is_sparse_file(&a.data);
    let cfg = streamsgd::cluster::ClusterConfig {
        data: a.data.clone(),
        // No feature stage here: the features reach the learner raw.
        learner: a.model.learner(true)?,
        merge_every: a.merge_every,
        holdout: a.holdout,
        save: a.save.clone(),
        peer_timeout: a.peer_timeout,
        sparse: is_sparse.then(|| sparse::cluster_config(&a.model, &a.sparse)).transpose()?,
    };
    ensure!(
        is_sparse || (a.sparse.bits.is_none() && a.sparse.interactions.is_empty()),
        "{}: a dense file: --bits and --interactions are for sparse rows",
        a.data.display()
    );
    let Some(outcome) = streamsgd::cluster::run(cfg.clone(), a.timely).with_context(|| format!("cluster-train {}", a.data.display()))?
    else {
        return Ok(());
    };
    if let (Some(model), Some(path), Some(sc)) = (&outcome.sparse, &a.save, &cfg.sparse) {
        sparse::save_cluster_model(model, sc, &a.sparse, path)?;
    }
    let r = outcome.report;
    if a.json {
        // One line, the last on stdout: timely prints its connection progress there too.
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    if let Some(table) = r.table_bytes_per_worker {
        println!(
            "merges send the slots that changed: {} bytes per worker per merge, against {table} for the whole table",
            r.merge_bytes_per_worker
        );
    }
    println!(
        "trained on {} rows ({} learned, {} rejected) by {} workers in {:.3} s: {:.2} M rows/s, {} merges of {} bytes per worker ({:.1} µs each at worker 0)",
        r.rows,
        r.rows_learned,
        r.rows_rejected,
        r.workers,
        r.seconds,
        r.rows_per_sec / 1e6,
        r.merges,
        r.merge_bytes_per_worker,
        r.merge_us_mean
    );
    let mut prog = format!("progressive  loss {:.4}", r.progressive_loss);
    if let Some(acc) = r.progressive_accuracy {
        prog += &format!("  accuracy {acc:.4}");
    }
    println!("{prog}");
    if let Some(h) = &r.holdout {
        println!("holdout      {} ({} rows)", eval_line(h), h.rows);
    }
    println!("learning time per batch, µs:  {:>9} {:>9} {:>9} {:>9} {:>9}", "p50", "p90", "p99", "p99.9", "max");
    println!("{}", pct_line("all workers", &r.latency_ns));
    Ok(())
}
