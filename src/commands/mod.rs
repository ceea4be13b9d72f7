//! Command-line flags (clap) and the glue from each command to the library.

mod data;
#[cfg(feature = "kafka")]
mod kafka;
mod learn;

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
    Gen(data::GenArgs),
    /// Convert CSV / LibSVM / VW text into the native .ssgd format.
    Convert(data::ConvertArgs),
    /// Validate a .ssgd file fully and describe what it holds.
    Info(data::InfoArgs),
    /// Train a linear model on a stream (mapped .ssgd, text file, stdin or socket).
    Train(Box<learn::TrainArgs>),
    /// Stream predictions of a saved model, one per line.
    Predict(learn::PredictArgs),
    /// Run the pipeline per thread count and print throughput, latency and holdout loss.
    Bench(Box<learn::BenchArgs>),
    /// Train across processes and hosts on timely dataflow (timely's -w -n -p -h after --).
    ClusterTrain(Box<learn::ClusterArgs>),
    /// Write a dataset into a Kafka topic, a record per row, at a given rate.
    #[cfg(feature = "kafka")]
    Produce(kafka::ProduceArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Gen(a) => data::gen(a),
        Command::Convert(a) => data::convert(a),
        Command::Info(a) => data::info(a),
        Command::Train(a) => learn::train(*a),
        Command::Predict(a) => learn::predict(a),
        Command::Bench(a) => learn::bench(*a),
        Command::ClusterTrain(a) => learn::cluster_train(*a),
        #[cfg(feature = "kafka")]
        Command::Produce(a) => kafka::produce(a),
    }
}

/// How text input maps to columns (convert, train, predict).
#[derive(clap::Args, Debug, Clone)]
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
