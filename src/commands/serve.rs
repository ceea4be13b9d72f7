//! `serve`: a model answering predictions over HTTP while it learns.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use streamsgd::serve::http::Limits;
use streamsgd::serve::learner::{LearnerSettings, Replay};
use streamsgd::serve::{serve, ServeConfig};

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
    /// Also learn from this .ssgd file (dense or sparse, as the model), replayed.
    #[arg(long)]
    learn: Option<PathBuf>,
    /// Replay --learn at this many rows per second (default: flat out).
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
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.max_body > 0 && a.max_concurrency > 0, "--max-body and --max-concurrency must be at least 1");
    if let Some(r) = a.learn_rate {
        anyhow::ensure!(r.is_finite() && r > 0.0, "--learn-rate {r} must be > 0 rows/s");
    }
    anyhow::ensure!(!a.publish_every.is_zero(), "--publish-every must be longer than 0");
    let cfg = ServeConfig {
        listen: a.listen,
        learner: LearnerSettings {
            model: a.model,
            save: a.save,
            checkpoint_every: a.checkpoint_every,
            publish_every: a.publish_every,
            replay: a.learn.map(|path| Replay { path, rate: a.learn_rate, passes: a.learn_passes }),
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
