//! The serving learner: one thread owns the [`OnlineModel`] and is its only writer. It learns
//! the rows `POST /learn` sends it and, when given, replays a `.ssgd` file at a set rate; it
//! publishes a frozen [`Snapshot`] for the HTTP handlers (an `ArcSwap`: predictions take no
//! lock) after each `/learn` batch and every publish interval, checkpoints, reloads the model
//! file when asked or when it changes, and saves on the way out.

use super::metrics::Metrics;
use crate::dataset::sparse::{is_sparse_file, SparseDataset};
use crate::dataset::Dataset;
use crate::online::{OnlineError, OnlineModel, OnlineStats};
use crate::predictor::Predictor;
use crate::source::{Pull, RowSource};
use crate::sparse::parse::Named;
use crate::window::PageHinkley;
use arc_swap::ArcSwap;
use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What the handlers predict from: a frozen model and its version.
pub struct Snapshot {
    /// The model.
    pub predictor: Predictor,
    /// Bumped at every publication that follows learning or a reload.
    pub version: u64,
    /// Rows learned by the model when it was taken.
    pub rows_learned: u64,
    /// When it was taken.
    pub taken: SystemTime,
}

/// Rows sent to the learner by `POST /learn`.
pub enum Rows {
    /// Dense rows, row-major.
    Dense(Vec<f32>),
    /// Rows of named features (a sparse model), as (name, number or category) pairs.
    Named(Vec<Vec<(String, NamedValue)>>),
}

/// A named feature's value, owned (see [`Named`]).
pub enum NamedValue {
    /// A number.
    Number(f32),
    /// A category.
    Category(String),
}

/// A request to the learner; each carries where its answer goes.
pub enum Job {
    /// Learn rows with labels; answers the version published after them.
    Learn {
        /// The rows.
        rows: Rows,
        /// Their labels.
        labels: Vec<f32>,
        /// The answer.
        reply: Sender<Result<u64, String>>,
    },
    /// Load the model file again; answers the new version.
    Reload(Sender<Result<u64, String>>),
}

/// A `.ssgd` file replayed while serving.
#[derive(Clone, Debug)]
pub struct Replay {
    /// The file.
    pub path: PathBuf,
    /// Rows per second (`None`: flat out).
    pub rate: Option<f64>,
    /// Passes over it (0: until stopped).
    pub passes: u64,
}

/// Opens a live source of dense rows (a socket, a text file, stdin, a Kafka topic) on the
/// learner's thread (a text reader need not be `Send`).
pub type OpenStream = Box<dyn FnOnce() -> Result<Box<dyn RowSource>, String> + Send>;

/// The learner's settings.
pub struct LearnerSettings {
    /// The model file loaded at start and by reloads.
    pub model: PathBuf,
    /// Where checkpoints and the final model go (`None`: nowhere).
    pub save: Option<PathBuf>,
    /// Checkpoint interval (`None`: only at the end).
    pub checkpoint_every: Option<Duration>,
    /// Snapshot interval while learning.
    pub publish_every: Duration,
    /// A file to replay.
    pub replay: Option<Replay>,
    /// A stream to learn from, as it arrives.
    pub stream: Option<OpenStream>,
}

/// The learner thread's state.
pub struct Learner {
    settings: LearnerSettings,
    model: OnlineModel,
    current: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    version: u64,
    /// Rows learned since the last publication.
    dirty: bool,
    /// The model file's modification time as last loaded or written by us.
    model_mtime: Option<SystemTime>,
    last_publish: Instant,
    last_checkpoint: Instant,
    /// Progressive sums at the last publication (the window's loss is the difference).
    window_from: OnlineStats,
    drift: PageHinkley,
}

/// The first snapshot of `model`.
pub fn first_snapshot(model: &OnlineModel) -> Snapshot {
    Snapshot { predictor: model.snapshot(), version: 1, rows_learned: 0, taken: SystemTime::now() }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Learner {
    /// A learner of `model` (already loaded from `settings.model`) publishing to `current`.
    pub fn new(settings: LearnerSettings, mut model: OnlineModel, current: Arc<ArcSwap<Snapshot>>, metrics: Arc<Metrics>) -> Self {
        let model_mtime = mtime(&settings.model);
        let window_from = model.stats();
        Learner {
            settings,
            model,
            current,
            metrics,
            version: 1,
            dirty: false,
            model_mtime,
            last_publish: Instant::now(),
            last_checkpoint: Instant::now(),
            window_from,
            drift: PageHinkley::new(0.005, 0.5),
        }
    }

    /// Serves jobs (and replays the file, when given) until `jobs` closes; then saves to
    /// `--save`. Returns the rows learned in all.
    pub fn run(mut self, jobs: Receiver<Job>) -> Result<u64, String> {
        let replay = match &self.settings.replay {
            Some(r) => Some(ReplayState::open(r)?),
            None => None,
        };
        let mut replay = replay;
        let mut stream = match self.settings.stream.take() {
            Some(open) => Some(StreamState::new(open()?, self.model.features())?),
            None => None,
        };
        let tick = self.settings.publish_every.min(Duration::from_millis(250));
        loop {
            // Jobs first: a client waits on each.
            let busy = replay.as_ref().is_some_and(|r| !r.done()) || stream.as_ref().is_some_and(|s| !s.ended);
            let wait = if busy { Duration::ZERO } else { tick };
            match jobs.recv_timeout(wait) {
                Ok(job) => self.job(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(job) = jobs.try_recv() {
                self.job(job);
            }
            if let Some(r) = replay.as_mut().filter(|r| !r.done()) {
                if let Err(e) = r.learn_next(&mut self.model) {
                    eprintln!("warning: replaying {}: {e}; the replay stops", r.name);
                    r.stop();
                }
                self.dirty = true;
                self.metrics.rows_learned_total.inc_by(r.last_rows);
            }
            if let Some(st) = stream.as_mut().filter(|s| !s.ended) {
                match st.learn_next(&mut self.model) {
                    Ok(n) => {
                        self.dirty |= n > 0;
                        self.metrics.rows_learned_total.inc_by(n);
                        if st.ended {
                            // The stream's last rows are served at once.
                            self.publish();
                        }
                    }
                    Err(e) => {
                        eprintln!("warning: {e}; learning from the stream stops");
                        st.ended = true;
                    }
                }
            }
            self.housekeeping();
        }
        self.publish();
        let learned = self.model.stats().rows_learned;
        let saved = self.save("final model");
        if let Some(st) = stream.as_mut() {
            // Everything pulled was learned: a Kafka source commits its final offsets.
            st.source.learned(u64::MAX).map_err(|e| e.to_string())?;
        }
        saved?;
        Ok(learned)
    }

    fn job(&mut self, job: Job) {
        match job {
            Job::Learn { rows, labels, reply } => {
                let t = Instant::now();
                let res = self.learn(rows, &labels);
                self.metrics.learn_seconds.observe(t.elapsed().as_secs_f64());
                let res = res.map(|n| {
                    self.metrics.rows_learned_total.inc_by(n);
                    self.dirty = true;
                    self.publish();
                    self.version
                });
                let _ = reply.send(res.map_err(|e| e.to_string()));
            }
            Job::Reload(reply) => {
                let _ = reply.send(self.reload());
            }
        }
    }

    /// Learns `/learn`'s rows; the rows learned.
    fn learn(&mut self, rows: Rows, labels: &[f32]) -> Result<u64, OnlineError> {
        let before = self.model.stats();
        match rows {
            Rows::Dense(x) => self.model.learn_batch(&x, labels, None)?,
            Rows::Named(rows) => {
                for (row, &y) in rows.iter().zip(labels) {
                    let named = row.iter().map(|(k, v)| {
                        let v = match v {
                            NamedValue::Number(x) => Named::Number(*x),
                            NamedValue::Category(c) => Named::Category(c),
                        };
                        (k.as_str(), v)
                    });
                    self.model.learn_named(named, y)?;
                }
            }
        }
        let after = self.model.stats();
        self.metrics.rows_rejected_total.inc_by(after.rows_rejected - before.rows_rejected);
        self.metrics.rows_dropped_total.inc_by(after.rows_dropped - before.rows_dropped);
        Ok(after.rows_learned - before.rows_learned)
    }

    /// Publishes, checkpoints and reloads as their intervals say; samples the metrics for the
    /// status page.
    fn housekeeping(&mut self) {
        self.metrics.sample();
        if self.dirty && self.last_publish.elapsed() >= self.settings.publish_every {
            self.publish();
        }
        if let Some(every) = self.settings.checkpoint_every {
            if self.last_checkpoint.elapsed() >= every {
                self.last_checkpoint = Instant::now();
                if let Err(e) = self.save("checkpoint") {
                    eprintln!("warning: {e}");
                }
            }
        }
        let now = mtime(&self.settings.model);
        if now.is_some() && now != self.model_mtime {
            match self.reload() {
                Ok(v) => eprintln!("reloaded {} (it changed): version {v}", self.settings.model.display()),
                Err(e) => {
                    eprintln!("warning: {} changed but cannot be loaded: {e}; serving the model as it was", self.settings.model.display());
                    self.model_mtime = now;
                }
            }
        }
    }

    /// A new snapshot for the handlers (and the window's metrics).
    fn publish(&mut self) {
        self.last_publish = Instant::now();
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.version += 1;
        let stats = self.model.stats();
        let (p, q) = (&stats.progress, &self.window_from.progress);
        let weight = p.weight_sum - q.weight_sum;
        if weight > 0.0 {
            let loss = (p.loss_sum - q.loss_sum) / weight;
            self.metrics.window_loss.set(loss);
            self.metrics.window_accuracy.set((p.correct - q.correct) / weight);
            if self.drift.add(loss) {
                self.metrics.drift_alarms_total.inc();
            }
        }
        self.metrics.progressive_loss.set(stats.progress.mean_loss());
        self.window_from = stats;
        let snapshot = Snapshot {
            predictor: self.model.snapshot(),
            version: self.version,
            rows_learned: stats.rows_learned,
            taken: SystemTime::now(),
        };
        self.current.store(Arc::new(snapshot));
        self.metrics.model_version.set(self.version as i64);
    }

    fn reload(&mut self) -> Result<u64, String> {
        let path = &self.settings.model;
        let model = OnlineModel::load(path).map_err(|e| e.to_string())?;
        let kind = |m: &OnlineModel| m.features();
        if kind(&model) != kind(&self.model) {
            return Err(format!("{}: the new model's rows ({:?} features) are not the served one's", path.display(), model.features()));
        }
        self.model = model;
        self.model_mtime = mtime(path);
        self.window_from = self.model.stats();
        self.dirty = true;
        self.publish();
        Ok(self.version)
    }

    fn save(&mut self, what: &str) -> Result<(), String> {
        let Some(path) = &self.settings.save else { return Ok(()) };
        self.model.save(path).map_err(|e| format!("{what}: {e}"))?;
        if path == &self.settings.model {
            self.model_mtime = mtime(path);
        }
        Ok(())
    }
}

/// A live source of dense rows, learned a batch at a time as rows arrive.
struct StreamState {
    source: Box<dyn RowSource>,
    d: usize,
    x: Vec<f32>,
    y: Vec<f32>,
    w: Vec<f32>,
    seq: u64,
    ended: bool,
}

impl StreamState {
    fn new(source: Box<dyn RowSource>, features: Option<usize>) -> Result<Self, String> {
        let d = source.features();
        match features {
            Some(f) if f == d => {}
            Some(f) => return Err(format!("the stream's rows have {d} features, the model takes {f}")),
            None => return Err("a stream of dense rows cannot teach a sparse model (serve its .ssgd file with --learn FILE)".into()),
        }
        Ok(StreamState { source, d, x: Vec::new(), y: Vec::new(), w: Vec::new(), seq: 0, ended: false })
    }

    /// Learns the rows that have arrived (up to a batch; waits a little when none has); the
    /// rows learned. A malformed row is reported and skipped; a failing stream is an error.
    fn learn_next(&mut self, model: &mut OnlineModel) -> Result<u64, String> {
        let (d, mut row) = (self.d, vec![0.0f32; self.d]);
        self.x.clear();
        self.y.clear();
        self.w.clear();
        while self.y.len() < crate::batch::BATCH_ROWS {
            match self.source.pull(&mut row, self.y.is_empty()) {
                Ok(Pull::Row(r)) => {
                    self.x.extend_from_slice(&row[..d]);
                    self.y.push(r.label);
                    self.w.push(r.weight);
                }
                Ok(Pull::Idle) => break,
                Ok(Pull::End) => {
                    self.ended = true;
                    break;
                }
                Err(e) if e.fatal => return Err(e.to_string()),
                Err(e) => eprintln!("warning: {e} (skipped)"),
            }
        }
        if self.y.is_empty() {
            return Ok(0);
        }
        let before = model.stats().rows_learned;
        model.learn_batch(&self.x, &self.y, Some(&self.w)).map_err(|e| e.to_string())?;
        self.source.sent(self.seq, false);
        self.seq += 1;
        self.source.learned(self.seq).map_err(|e| e.to_string())?;
        Ok(model.stats().rows_learned - before)
    }
}

/// A file being replayed: its blocks in turn, paced.
struct ReplayState {
    name: String,
    file: ReplayFile,
    rate: Option<f64>,
    passes: u64,
    pass: u64,
    block: u64,
    start: Instant,
    sent: u64,
    last_rows: u64,
    stopped: bool,
}

enum ReplayFile {
    Dense(Dataset),
    Sparse(SparseDataset),
}

impl ReplayState {
    fn open(r: &Replay) -> Result<Self, String> {
        let name = r.path.display().to_string();
        let file = if is_sparse_file(&r.path) {
            ReplayFile::Sparse(SparseDataset::open(&r.path).map_err(|e| e.to_string())?)
        } else {
            ReplayFile::Dense(Dataset::open(&r.path).map_err(|e| e.to_string())?)
        };
        Ok(ReplayState {
            name,
            file,
            rate: r.rate,
            passes: r.passes,
            pass: 0,
            block: 0,
            start: Instant::now(),
            sent: 0,
            last_rows: 0,
            stopped: false,
        })
    }

    fn done(&self) -> bool {
        self.stopped || (self.passes > 0 && self.pass >= self.passes)
    }

    fn stop(&mut self) {
        self.stopped = true;
    }

    /// Learns the next block when its time has come (paced by the rate).
    fn learn_next(&mut self, model: &mut OnlineModel) -> Result<(), String> {
        self.last_rows = 0;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.sent as f64 / rate);
            let now = self.start.elapsed();
            if due > now {
                std::thread::sleep((due - now).min(Duration::from_millis(5)));
                return Ok(());
            }
        }
        let blocks = match &self.file {
            ReplayFile::Dense(d) => d.blocks(),
            ReplayFile::Sparse(d) => d.blocks(),
        };
        let rows = match &self.file {
            ReplayFile::Dense(d) => {
                let b = d.block(self.block);
                model.learn_columns(b.data, b.stride, b.labels, b.weights).map_err(|e| e.to_string())?;
                b.rows as u64
            }
            ReplayFile::Sparse(d) => {
                let rows = d.block(self.block).map_err(|e| e.to_string())?;
                model.learn_rows(&rows).map_err(|e| e.to_string())?;
                rows.len() as u64
            }
        };
        self.sent += rows;
        self.last_rows = rows;
        self.block += 1;
        if self.block >= blocks {
            self.block = 0;
            self.pass += 1;
        }
        Ok(())
    }
}
