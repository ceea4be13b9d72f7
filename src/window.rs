//! Windows and drift: tumbling windows over rows in stream order, each reporting rows,
//! progressive loss, accuracy or RMSE and throughput as one JSON line; and drift detection on
//! the stream of per-batch losses with the Page-Hinkley test (E. S. Page, "Continuous
//! inspection schemes", Biometrika 41, 1954; D. V. Hinkley, "Inference about the change-point
//! in a sequence of random variables", Biometrika 57, 1970), as used for concept drift by
//! Gama et al. (2014). No `unsafe` here.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

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
}

/// Where windows and drift alarms go.
pub struct Windows {
    rows_per_window: u64,
    classification: bool,
    out: Option<Box<dyn Write + Send>>,
    pending: BTreeMap<u64, BatchStat>,
    next_seq: u64,
    row: u64,
    cur: BatchStat,
    cur_first: u64,
    started: Instant,
    ph: PageHinkley,
    /// Rows (stream position) at which drift alarms fired.
    pub alarms: Vec<u64>,
    /// Windows emitted.
    pub windows: u64,
}

impl Windows {
    /// Windows of `rows_per_window` rows (0: no windows, drift detection only), JSON lines to
    /// `out`, drift detection with Page-Hinkley(δ, λ).
    pub fn new(rows_per_window: u64, classification: bool, out: Option<Box<dyn Write + Send>>, delta: f64, lambda: f64) -> Self {
        Windows {
            rows_per_window,
            classification,
            out,
            pending: BTreeMap::new(),
            next_seq: 0,
            row: 0,
            cur: BatchStat::default(),
            cur_first: 0,
            started: Instant::now(),
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
        self.row += s.rows;
        let mut alarm = false;
        if s.weight > 0.0 && self.ph.add(s.loss / s.weight) {
            alarm = true;
            self.alarms.push(self.row);
            if let Some(o) = self.out.as_mut() {
                writeln!(o, "{{\"drift\":true,\"row\":{},\"detector\":\"page-hinkley\"}}", self.row)?;
            }
        }
        self.cur.rows += s.rows;
        self.cur.loss += s.loss;
        self.cur.weight += s.weight;
        self.cur.correct += s.correct;
        self.cur.sq_err += s.sq_err;
        if self.rows_per_window > 0 && self.cur.rows >= self.rows_per_window {
            self.emit()?;
        }
        Ok(alarm)
    }

    fn emit(&mut self) -> std::io::Result<()> {
        let c = self.cur;
        if c.rows == 0 {
            return Ok(());
        }
        let secs = self.started.elapsed().as_secs_f64();
        let metric = if self.classification {
            format!("\"accuracy\":{}", c.correct / c.weight.max(f64::MIN_POSITIVE))
        } else {
            format!("\"rmse\":{}", (c.sq_err / c.weight.max(f64::MIN_POSITIVE)).sqrt())
        };
        if let Some(o) = self.out.as_mut() {
            writeln!(
                o,
                "{{\"window\":{},\"first_row\":{},\"rows\":{},\"learned_weight\":{},\"loss\":{},{metric},\"rows_per_sec\":{}}}",
                self.windows,
                self.cur_first,
                c.rows,
                c.weight,
                c.loss / c.weight.max(f64::MIN_POSITIVE),
                c.rows as f64 / secs.max(1e-9)
            )?;
            o.flush()?;
        }
        self.windows += 1;
        self.cur_first = self.row;
        self.cur = BatchStat::default();
        self.started = Instant::now();
        Ok(())
    }

    /// Emits the last, partial window.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if self.rows_per_window > 0 {
            self.emit()?;
        }
        if let Some(o) = self.out.as_mut() {
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

    #[test]
    fn windows_reorder_and_tumble() {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct W(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = Windows::new(20, true, Some(Box::new(W(buf.clone()))), 0.01, 100.0);
        for seq in [1u64, 0, 3, 2] {
            w.add(BatchStat { seq, rows: 10, loss: 5.0, weight: 10.0, correct: 8.0, sq_err: 0.0 }).unwrap();
        }
        w.finish().unwrap();
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[1]["first_row"].as_u64(), lines[1]["rows"].as_u64()), (Some(20), Some(20)));
        assert_eq!(lines[0]["accuracy"].as_f64(), Some(0.8));
    }
}
