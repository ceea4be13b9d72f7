//! `serve`: a model answering predictions over HTTP while it learns.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use streamsgd::serve::http::Limits;
use streamsgd::serve::learner::{LearnerSettings, OpenStream, Replay};
use streamsgd::serve::{serve, ServeConfig};
use streamsgd::source::live::Patience;
use streamsgd::source::RowSource;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The model to serve (a file `train --save` wrote); `POST /reload`, or a change to the
    /// file, loads it again.
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Save the model here at checkpoints and when stopped (SIGTERM, Ctrl-C).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Checkpoint interval (30s, 5m), with --save.
    #[arg(long, value_parser = humantime::parse_duration, requires = "save")]
    checkpoint_every: Option<Duration>,
    /// Also learn from this source as the predictions are served: a .ssgd file (dense or
    /// sparse, as the model) replayed, or any stream `train` reads for a dense model — a CSV or
    /// LibSVM file, - (stdin), tcp://HOST:PORT, kafka://BROKER/TOPIC.
    #[arg(long)]
    learn: Option<String>,
    /// Replay a --learn file at this many rows per second (default: flat out).
    #[arg(long, requires = "learn")]
    learn_rate: Option<f64>,
    /// Passes over --learn (0: until stopped).
    #[arg(long, default_value_t = 1, requires = "learn")]
    learn_passes: u64,
    /// A new snapshot for the predictions at most this often while learning (each POST /learn
    /// publishes at once).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    publish_every: Duration,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body: usize,
    /// Requests handled at once (more wait their turn).
    #[arg(long, default_value_t = 256)]
    max_concurrency: usize,
    /// Longest a request may take, its body read included (slow clients get 408).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Threads answering requests (default: the cores).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    text: super::TextArgs,
    #[cfg(feature = "kafka")]
    #[command(flatten)]
    kafka: super::kafka::KafkaArgs,
}

/// Opens `spec` (a stream of dense rows) on the learner's thread.
fn open_stream(spec: String, a: &ServeArgs) -> OpenStream {
    let (format, text) = (a.text.format, a.text.options());
    let patience = Patience::default();
    #[cfg(feature = "kafka")]
    if spec.starts_with("kafka://") {
        let source = super::kafka::open(&spec, &a.kafka, format, &text, &patience, false);
        return Box::new(move || source.map(|s| Box::new(s) as Box<dyn RowSource>).map_err(|e| format!("{e:#}")));
    }
    Box::new(move || match super::learn::open_data(&spec, format, &text, false, &patience) {
        Ok((super::learn::Data::Text { parser, .. }, _)) => Ok(Box::new(parser) as Box<dyn RowSource>),
        Ok(_) => Err(format!("{spec}: not a stream of rows")),
        Err(e) => Err(format!("{e:#}")),
    })
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.max_body > 0 && a.max_concurrency > 0, "--max-body and --max-concurrency must be at least 1");
    if let Some(r) = a.learn_rate {
        anyhow::ensure!(r.is_finite() && r > 0.0, "--learn-rate {r} must be > 0 rows/s");
    }
    anyhow::ensure!(!a.publish_every.is_zero(), "--publish-every must be longer than 0");
    let file = a.learn.as_deref().filter(|s| s.ends_with(".ssgd"));
    anyhow::ensure!(a.learn_rate.is_none() || file.is_some(), "--learn-rate paces a replayed .ssgd file: a stream arrives at its own pace");
    let replay = file.map(|path| Replay { path: PathBuf::from(path), rate: a.learn_rate, passes: a.learn_passes });
    let stream = a.learn.clone().filter(|_| file.is_none()).map(|spec| open_stream(spec, &a));
    let cfg = ServeConfig {
        listen: a.listen,
        learner: LearnerSettings {
            model: a.model,
            save: a.save,
            checkpoint_every: a.checkpoint_every,
            publish_every: a.publish_every,
            replay,
            stream,
        },
        limits: Limits { max_body: a.max_body, max_concurrency: a.max_concurrency, timeout: a.timeout },
        threads: a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let out = serve(cfg, |addr| {
        println!("listening on http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })?;
    println!("stopped: learned {} rows while serving", out.rows_learned);
    Ok(())
}

/// `train --metrics-addr`: the run's metrics server and the thread that feeds it (rows from the
/// progress bar, the model version from the shared model's publications); stopped on drop.
pub struct Watching {
    watch: Option<streamsgd::serve::watch::Watch>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    feeder: Option<std::thread::JoinHandle<()>>,
}

/// Serves the run's `/metrics` and status page on `addr`.
pub fn watch_training(
    addr: SocketAddr,
    bar: indicatif::ProgressBar,
    shared: std::sync::Arc<streamsgd::model::SharedModel>,
) -> anyhow::Result<Watching> {
    use std::sync::atomic::Ordering;
    let metrics = std::sync::Arc::new(streamsgd::serve::metrics::Metrics::default());
    let version = shared.clone();
    let watch = streamsgd::serve::watch::watch(addr, metrics.clone(), move || version.version())?;
    eprintln!("metrics on http://{}/metrics, status page on http://{}/", watch.addr, watch.addr);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let feeder = std::thread::spawn(move || {
        let mut seen = 0;
        loop {
            let rows = bar.position();
            metrics.rows_learned_total.inc_by(rows.saturating_sub(seen));
            seen = seen.max(rows);
            metrics.model_version.set(shared.version() as i64);
            metrics.sample();
            if stopping.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    Ok(Watching { watch: Some(watch), stop, feeder: Some(feeder) })
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
        if let Some(w) = self.watch.take() {
            w.stop();
        }
    }
}
