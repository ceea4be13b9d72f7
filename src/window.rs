//! Windows and drift: tumbling windows over rows in stream order, or over event time with a
//! bounded lateness (a watermark trails the largest timestamp seen by the lateness; a row whose
//! window the watermark has already closed is *late*: still learned, counted, and reported with
//! the next window line), each window reporting rows, progressive loss, accuracy or RMSE and
//! throughput as one JSON line; and drift detection on
//! the stream of per-batch losses with the Page-Hinkley test (E. S. Page, "Continuous
//! inspection schemes", Biometrika 41, 1954; D. V. Hinkley, "Inference about the change-point
//! in a sequence of random variables", Biometrika 57, 1970), as used for concept drift by
//! Gama et al. (2014). No `unsafe` here.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// What to do when drift is detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDrift {
    /// Report it.
    Warn,
    /// Report it and reset every shard's optimizer state.
    Reset,
}

/// Tumbling windows (rows or event time) and Page-Hinkley drift detection on the per-batch
/// loss.
#[derive(Clone, Debug)]
pub struct WindowConfig {
    /// How rows are grouped into windows.
    pub kind: WindowKind,
    /// JSON-lines output (windows and alarms).
    pub report: Option<PathBuf>,
    /// Page-Hinkley δ.
    pub delta: f64,
    /// Page-Hinkley λ.
    pub lambda: f64,
    /// What an alarm does.
    pub on_drift: OnDrift,
}

impl WindowConfig {
    /// Its reporter: windows and alarms of a classification (`classification`) or a
    /// regression, written to the report file if there is one (an error names the file).
    pub fn open(&self, classification: bool) -> Result<Windows, String> {
        let out: Option<Box<dyn Write + Send>> = match &self.report {
            Some(p) => Some(Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?))),
            None => None,
        };
        Ok(Windows::new(self.kind, classification, out, self.delta, self.lambda))
    }
}

/// Page-Hinkley test for an increase of the mean: m_t = Σ (x_i − x̄_i − δ), alarm when
/// m_t − min m > λ; the test restarts after an alarm.
#[derive(Clone, Debug)]
pub struct PageHinkley {
    delta: f64,
    lambda: f64,
    n: f64,
    mean: f64,
    m: f64,
    min: f64,
}

impl PageHinkley {
    /// δ: tolerated drift of the mean per observation; λ: alarm threshold.
    pub fn new(delta: f64, lambda: f64) -> Self {
        PageHinkley { delta, lambda, n: 0.0, mean: 0.0, m: 0.0, min: 0.0 }
    }

    /// Adds an observation; true on an alarm.
    pub fn add(&mut self, x: f64) -> bool {
        self.n += 1.0;
        self.mean += (x - self.mean) / self.n;
        self.m += x - self.mean - self.delta;
        self.min = self.min.min(self.m);
        if self.m - self.min > self.lambda {
            *self = PageHinkley::new(self.delta, self.lambda);
            return true;
        }
        false
    }
}

/// Event-time tumbling windows: window k covers `[k·width, (k+1)·width)` seconds since the
/// epoch and closes once the watermark (largest timestamp − lateness) passes its end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventTime {
    /// Window width, seconds.
    pub width: f64,
    /// Allowed lateness, seconds.
    pub lateness: f64,
}

/// Which event-time window every row of a batch falls in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WindowSlot {
    /// No event time (row windows, or none).
    #[default]
    None,
    /// Window k.
    Window(i64),
    /// Rows whose window had closed when they arrived.
    Late,
}

/// A batch's window slot, and the windows the watermark had closed when it was sent (every
/// window below `closed_below`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowTag {
    /// Its rows' window.
    pub slot: WindowSlot,
    /// Windows `< closed_below` are complete.
    pub closed_below: i64,
}

/// The producer's event-time clock: assigns rows to windows and advances the watermark.
#[derive(Clone, Debug)]
pub struct EventClock {
    cfg: EventTime,
    max_time: f64,
    closed_below: i64,
    /// Rows that arrived after their window closed.
    pub late: u64,
}

impl EventClock {
    /// A clock for `cfg` (width > 0, lateness ≥ 0).
    pub fn new(cfg: EventTime) -> Self {
        EventClock { cfg, max_time: f64::NEG_INFINITY, closed_below: i64::MIN, late: 0 }
    }

    /// The slot of a row with event time `t` (seconds); advances the watermark.
    pub fn assign(&mut self, t: f64) -> WindowSlot {
        let k = (t / self.cfg.width).floor() as i64;
        if k < self.closed_below {
            self.late += 1;
            return WindowSlot::Late;
        }
        if t > self.max_time {
            self.max_time = t;
            // floor((t − L)/W) ≤ k: a row never closes its own window.
            self.closed_below = self.closed_below.max(((t - self.cfg.lateness) / self.cfg.width).floor() as i64);
        }
        WindowSlot::Window(k)
    }

    /// The tag of a batch whose rows are in `slot`, sent now.
    pub fn tag(&self, slot: WindowSlot) -> WindowTag {
        WindowTag { slot, closed_below: self.closed_below }
    }
}

/// One data batch's learning outcome, sent by a shard to the window reporter.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchStat {
    /// The batch's position in the stream.
    pub seq: u64,
    /// Rows of the batch that entered the pipeline.
    pub rows: u64,
    /// Σ weight·loss of the rows learned.
    pub loss: f64,
    /// Σ weight of the rows learned.
    pub weight: f64,
    /// Σ weight of correctly classified rows.
    pub correct: f64,
    /// Σ weight·(p − y)².
    pub sq_err: f64,
    /// Its event-time window.
    pub tag: WindowTag,
}

impl BatchStat {
    fn add(&mut self, s: &BatchStat) {
        self.rows += s.rows;
        self.loss += s.loss;
        self.weight += s.weight;
        self.correct += s.correct;
        self.sq_err += s.sq_err;
    }
}

/// How rows are grouped into windows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WindowKind {
    /// No window lines (drift detection only).
    Off,
    /// Tumbling windows of N rows in stream order.
    Rows(u64),
    /// Tumbling event-time windows.
    Time(EventTime),
}

/// A window being filled.
struct Open {
    stat: BatchStat,
    first_row: u64,
    started: Instant,
}

/// Where windows and drift alarms go.
pub struct Windows {
    kind: WindowKind,
    classification: bool,
    out: Option<Box<dyn Write + Send>>,
    pending: BTreeMap<u64, BatchStat>,
    next_seq: u64,
    row: u64,
    /// Open windows by key (row windows: one, key 0; event time: the window index).
    open: BTreeMap<i64, Open>,
    /// Late rows since the last window line.
    late: u64,
    ph: PageHinkley,
    /// Rows (stream position) at which drift alarms fired.
    pub alarms: Vec<u64>,
    /// Windows emitted.
    pub windows: u64,
}

impl Windows {
    /// Windows of `kind`, JSON lines to `out`, drift detection with Page-Hinkley(δ, λ).
    pub fn new(kind: WindowKind, classification: bool, out: Option<Box<dyn Write + Send>>, delta: f64, lambda: f64) -> Self {
        Windows {
            kind,
            classification,
            out,
            pending: BTreeMap::new(),
            next_seq: 0,
            row: 0,
            open: BTreeMap::new(),
            late: 0,
            ph: PageHinkley::new(delta, lambda),
            alarms: Vec::new(),
            windows: 0,
        }
    }

    /// Takes one batch's stats (in any order); processes every batch now in stream order.
    /// Returns true when a drift alarm fired.
    pub fn add(&mut self, s: BatchStat) -> std::io::Result<bool> {
        self.pending.insert(s.seq, s);
        let mut alarm = false;
        while let Some(s) = self.pending.remove(&self.next_seq) {
            self.next_seq += 1;
            alarm |= self.consume(s)?;
        }
        Ok(alarm)
    }

    fn consume(&mut self, s: BatchStat) -> std::io::Result<bool> {
        let first_row = self.row;
        self.row += s.rows;
        let mut alarm = false;
        if s.weight > 0.0 && self.ph.add(s.loss / s.weight) {
            alarm = true;
            self.alarms.push(self.row);
            if let Some(o) = self.out.as_mut() {
                writeln!(o, "{{\"drift\":true,\"row\":{},\"detector\":\"page-hinkley\"}}", self.row)?;
            }
        }
        let key = match (self.kind, s.tag.slot) {
            (WindowKind::Off, _) => return Ok(alarm),
            (WindowKind::Time(_), WindowSlot::Late) => {
                self.late += s.rows;
                None
            }
            (WindowKind::Time(_), WindowSlot::Window(k)) => Some(k),
            _ => Some(0),
        };
        if let Some(k) = key {
            let open = self.open.entry(k).or_insert_with(|| Open { stat: BatchStat::default(), first_row, started: Instant::now() });
            open.stat.add(&s);
        }
        match self.kind {
            WindowKind::Rows(n) if self.open.get(&0).is_some_and(|w| w.stat.rows >= n) => self.emit(0)?,
            WindowKind::Time(_) => {
                while let Some((&k, _)) = self.open.first_key_value().filter(|(&k, _)| k < s.tag.closed_below) {
                    self.emit(k)?;
                }
            }
            _ => {}
        }
        Ok(alarm)
    }

    /// Writes window `key`'s line and forgets it.
    fn emit(&mut self, key: i64) -> std::io::Result<()> {
        let Some(w) = self.open.remove(&key) else { return Ok(()) };
        let c = w.stat;
        let secs = w.started.elapsed().as_secs_f64();
        let weight = c.weight.max(f64::MIN_POSITIVE);
        let metric = if self.classification {
            format!("\"accuracy\":{}", c.correct / weight)
        } else {
            format!("\"rmse\":{}", (c.sq_err / weight).sqrt())
        };
        let place = match self.kind {
            WindowKind::Time(t) => format!(
                "\"window\":{key},\"start\":{},\"end\":{},\"late_rows\":{}",
                key as f64 * t.width,
                (key + 1) as f64 * t.width,
                std::mem::take(&mut self.late)
            ),
            _ => format!("\"window\":{},\"first_row\":{}", self.windows, w.first_row),
        };
        if let Some(o) = self.out.as_mut() {
            writeln!(
                o,
                "{{{place},\"rows\":{},\"learned_weight\":{},\"loss\":{},{metric},\"rows_per_sec\":{}}}",
                c.rows,
                c.weight,
                c.loss / weight,
                c.rows as f64 / secs.max(1e-9)
            )?;
            o.flush()?;
        }
        self.windows += 1;
        Ok(())
    }

    /// Emits the windows still open (the end of the stream closes them all).
    pub fn finish(&mut self) -> std::io::Result<()> {
        while let Some((&k, _)) = self.open.first_key_value() {
            self.emit(k)?;
        }
        if let Some(o) = self.out.as_mut() {
            if self.late > 0 {
                writeln!(o, "{{\"late_rows\":{},\"after_last_window\":true}}", std::mem::take(&mut self.late))?;
            }
            o.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_hinkley_fires_on_a_shift_and_not_before() {
        let mut ph = PageHinkley::new(0.01, 1.0);
        let mut s = 7u64;
        let mut noise = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.05
        };
        for i in 0..2000 {
            assert!(!ph.add(0.45 + noise()), "false alarm at {i}");
        }
        let fired = (0..50).position(|_| ph.add(0.8 + noise()));
        assert!(matches!(fired, Some(i) if i < 5), "{fired:?}");
    }

    /// Window lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn json(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        }
    }

    fn stat(seq: u64, rows: u64, tag: WindowTag) -> BatchStat {
        BatchStat { seq, rows, loss: 0.5 * rows as f64, weight: rows as f64, correct: 0.8 * rows as f64, sq_err: 0.0, tag }
    }

    #[test]
    fn windows_reorder_and_tumble() {
        let out = Lines::default();
        let mut w = Windows::new(WindowKind::Rows(20), true, Some(Box::new(out.clone())), 0.01, 100.0);
        for seq in [1u64, 0, 3, 2] {
            w.add(stat(seq, 10, WindowTag::default())).unwrap();
        }
        w.finish().unwrap();
        let lines = out.json();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[1]["first_row"].as_u64(), lines[1]["rows"].as_u64()), (Some(20), Some(20)));
        assert_eq!(lines[0]["accuracy"].as_f64(), Some(0.8));
    }

    #[test]
    fn event_clock_assigns_windows_and_counts_late_rows() {
        // Width 10 s, lateness 5 s: the watermark trails the largest time by 5 s.
        let mut c = EventClock::new(EventTime { width: 10.0, lateness: 5.0 });
        let w = WindowSlot::Window;
        let got: Vec<(WindowSlot, i64)> = [1.0, 2.0, 11.0, 3.0, 16.0, 4.0, 12.0, 9.9, 25.0, 19.0, -0.5]
            .iter()
            .map(|&t| (c.assign(t), c.tag(WindowSlot::None).closed_below))
            .collect();
        let want = [
            (w(0), -1), // wm −4: nothing at or after 0 closed
            (w(0), -1), // wm −3
            (w(1), 0),  // wm 6
            (w(0), 0),  // 3 is within the lateness: window 0 still open
            (w(1), 1),  // wm 11 closes window 0
            (WindowSlot::Late, 1),
            (w(1), 1),
            (WindowSlot::Late, 1), // 9.9 is in window 0, closed
            (w(2), 2),             // wm 20 closes window 1
            (WindowSlot::Late, 2),
            (WindowSlot::Late, 2), // before the epoch, window −1
        ];
        assert_eq!(got, want);
        assert_eq!(c.late, 4);
    }

    #[test]
    fn event_time_windows_close_at_the_watermark_and_report_late_rows() {
        let out = Lines::default();
        let kind = WindowKind::Time(EventTime { width: 10.0, lateness: 0.0 });
        let mut w = Windows::new(kind, true, Some(Box::new(out.clone())), 0.01, 100.0);
        let tag = |slot, closed_below| WindowTag { slot, closed_below };
        // Batches arrive out of order; window 1 opens before window 0 closes.
        w.add(stat(1, 4, tag(WindowSlot::Window(1), 0))).unwrap();
        w.add(stat(0, 6, tag(WindowSlot::Window(0), 0))).unwrap();
        assert!(out.json().is_empty(), "nothing is closed yet");
        w.add(stat(2, 3, tag(WindowSlot::Window(1), 1))).unwrap();
        assert_eq!(out.json().len(), 1, "window 0 closes with batch 2");
        w.add(stat(3, 2, tag(WindowSlot::Late, 1))).unwrap();
        w.add(stat(4, 5, tag(WindowSlot::Window(3), 3))).unwrap();
        w.finish().unwrap();
        let lines = out.json();
        let get = |i: usize, k: &str| lines[i][k].as_f64().unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!((get(0, "window"), get(0, "start"), get(0, "end"), get(0, "rows"), get(0, "late_rows")), (0.0, 0.0, 10.0, 6.0, 0.0));
        assert_eq!((get(1, "window"), get(1, "rows"), get(1, "late_rows")), (1.0, 7.0, 2.0));
        assert_eq!((get(2, "window"), get(2, "start"), get(2, "rows")), (3.0, 30.0, 5.0));
        assert_eq!(get(1, "accuracy"), 0.8);
        assert_eq!(w.windows, 3);
    }
}
