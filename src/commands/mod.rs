//! Command-line flags (clap) and the glue from each command to the library.

mod data;
#[cfg(feature = "kafka")]
pub(crate) mod kafka;
mod learn;
#[cfg(feature = "serve")]
mod serve;
pub mod signals;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// streamsgd: streaming linear learning at memory speed.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate deterministic synthetic data (.ssgd, .csv, .libsvm or .vw by extension).
    #[command(after_help = "Examples:
  streamsgd gen --task classification --rows 1000000 --features 32 -o c.ssgd
  streamsgd gen --task regression --rows 100000 --missing-rate 0.05 --drift-at 50000 -o r.csv")]
    Gen(data::GenArgs),
    /// Convert CSV / LibSVM / VW text into the native .ssgd format.
    #[command(after_help = "Examples:
  streamsgd convert data/diabetes.csv -o diabetes.ssgd --label target
  streamsgd convert x.libsvm -o x.ssgd --features 1000
  streamsgd convert - --format csv -o y.ssgd < y.csv")]
    Convert(data::ConvertArgs),
    /// Validate a .ssgd file fully and describe what it holds.
    #[command(after_help = "Example:
  streamsgd info c.ssgd --json")]
    Info(data::InfoArgs),
    /// Train a linear model on a stream (mapped .ssgd, text file, stdin or socket).
    #[command(after_help = "Examples:
  streamsgd train data/breast_cancer.csv --holdout 0.2 --save bc.model
  streamsgd train diabetes.ssgd --loss squared --passes 10 --holdout 0.2
  streamsgd train c.ssgd --threads 2 --save c.model --json
  streamsgd train - --format libsvm --features 1000 --loss hinge < x.libsvm")]
    Train(Box<learn::TrainArgs>),
    /// Stream predictions of a saved model, one per line.
    #[command(after_help = "Example:
  streamsgd predict --model bc.model data/breast_cancer.csv > p.txt")]
    Predict(learn::PredictArgs),
    /// Show a sparse model's heaviest weights, named by the features of a data file.
    #[command(after_help = "Example:
  streamsgd inspect ctr.model --data ctr.vw --top 20")]
    Inspect(learn::InspectArgs),
    /// Run the pipeline per thread count and print throughput, latency and holdout loss.
    #[command(after_help = "Examples:
  streamsgd bench --rows 10000000 --thread-counts 1,2
  streamsgd bench --data c.ssgd --scale none --repeat 5")]
    Bench(Box<learn::BenchArgs>),
    /// Train across processes and hosts on timely dataflow (timely's -w -n -p -h after --).
    #[command(after_help = "Examples:
  streamsgd cluster-train c.ssgd --holdout 0.1 --save m.model -- -w 2
  streamsgd cluster-train c.ssgd -- -n 2 -p 0 -h hosts.txt     # on host 0 (and -p 1 on host 1)")]
    ClusterTrain(Box<learn::ClusterArgs>),
    /// Write a dataset into a Kafka topic, a record per row, at a given rate.
    #[cfg(feature = "kafka")]
    #[command(after_help = "Example:
  streamsgd produce c.ssgd kafka://localhost:9092/rows --partitions 4 --rate 100000")]
    Produce(kafka::ProduceArgs),
    /// Serve predictions over HTTP while the model learns (POST /predict, /learn, /reload;
    /// GET /metrics for Prometheus, /model, /healthz, and a status page at /).
    #[cfg(feature = "serve")]
    #[command(after_help = "Examples:
  streamsgd serve --model c.model --listen 127.0.0.1:8080 --save c.model --checkpoint-every 1m
  streamsgd serve --model c.model --learn c.ssgd --learn-rate 1000000 --learn-passes 0
  curl -s localhost:8080/predict -d '{\"rows\": [[0.1, 2.0, 3.5, 1.0]]}'")]
    Serve(Box<serve::ServeArgs>),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Gen(a) => data::gen(a),
        Command::Convert(a) => data::convert(a),
        Command::Info(a) => data::info(a),
        Command::Train(a) => learn::train(*a),
        Command::Predict(a) => learn::predict(a),
        Command::Inspect(a) => learn::inspect(a),
        Command::Bench(a) => learn::bench(*a),
        Command::ClusterTrain(a) => learn::cluster_train(*a),
        #[cfg(feature = "kafka")]
        Command::Produce(a) => kafka::produce(a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => serve::run(*a),
    }
}

/// How text input maps to columns (convert, train, predict).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Text input")]
pub struct TextArgs {
    /// Text format (default: from the extension; required for stdin and sockets).
    #[arg(long, value_enum)]
    format: Option<streamsgd::source::TextFormat>,
    /// CSV label column, by name or 0-based index (default: label/target/y, else the last);
    /// `none` for data without labels (predict).
    #[arg(long)]
    label: Option<String>,
    /// LibSVM: number of features (default: the largest index). VW: hash names into D
    /// columns (default: one column per distinct name).
    #[arg(long)]
    features: Option<usize>,
    /// CSV event-time column, by name or 0-based index (not a feature): seconds since the Unix
    /// epoch, or an RFC 3339 UTC date-time such as 2026-11-24T10:00:00.250Z.
    #[arg(long)]
    timestamp_col: Option<String>,
}

impl TextArgs {
    /// The parser options these flags ask for.
    pub fn options(&self) -> streamsgd::source::TextOptions {
        use streamsgd::source::text::LabelColumn;
        streamsgd::source::TextOptions {
            label: self.label.as_deref().map(LabelColumn::parse),
            features: self.features,
            vw_names: None,
            timestamp: self.timestamp_col.as_deref().map(LabelColumn::parse),
            feature_order: None,
        }
    }
}

/// A progress bar on stderr when it is a terminal (indicatif hides it otherwise).
pub fn progress(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}})");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}
