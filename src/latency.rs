//! Latency distributions: per-shard HdrHistograms of queueing (ingest → dequeued), compute
//! (dequeued → applied) and end-to-end (ingest → applied) time in nanoseconds, merged at the
//! end; percentile summaries and HdrHistogram's standard percentile-distribution text.
//! No `unsafe` here.

use hdrhistogram::Histogram;

/// Largest latency recorded exactly (10 minutes, ns); larger values saturate.
const MAX_NS: u64 = 600_000_000_000;

/// One stage's latency distribution.
#[derive(Clone, Debug)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { hist: Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds") }
    }
}

/// Percentiles of a distribution, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
    /// Number of samples.
    pub count: u64,
}

impl Latency {
    /// Records one sample (saturating: never fails).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.max(1));
    }

    /// Adds another distribution.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// The summary.
    pub fn percentiles(&self) -> Percentiles {
        let h = &self.hist;
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            count: h.len(),
        }
    }

    /// The distribution in HdrHistogram's V2 serialization (to send it to another process).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ =
            hdrhistogram::serialization::Serializer::serialize(&mut hdrhistogram::serialization::V2Serializer::new(), &self.hist, &mut out);
        out
    }

    /// A distribution from [`Latency::to_bytes`]; `None` when the bytes are not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Latency> {
        let h: Histogram<u64> = hdrhistogram::serialization::Deserializer::new().deserialize(&mut &bytes[..]).ok()?;
        let mut l = Latency::default();
        l.hist.add(&h).ok()?;
        Some(l)
    }

    /// HdrHistogram's percentile-distribution text (values in microseconds), the format its
    /// plotting tools read.
    pub fn hgrm(&self) -> String {
        let h = &self.hist;
        let mut out = format!("{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
        for v in h.iter_quantiles(1) {
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 { format!("{:>14.2}", 1.0 / (1.0 - q)) } else { String::new() };
            out +=
                &format!("{:>12.3} {:>14.12} {:>10} {}\n", v.value_iterated_to() as f64 / 1000.0, q, v.count_since_last_iteration(), inv);
        }
        out += &format!(
            "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]\n#[Max     = {:>12.3}, Total count    = {:>12}]\n#[Buckets = {:>12}, SubBuckets     = {:>12}]\n",
            h.mean() / 1000.0,
            h.stdev() / 1000.0,
            h.max() as f64 / 1000.0,
            h.len(),
            h.buckets(),
            h.distinct_values()
        );
        out
    }
}

/// The three stage distributions of one shard (or of all, merged).
#[derive(Clone, Debug, Default)]
pub struct StageLatency {
    /// Ingest → dequeued by a shard.
    pub queue: Latency,
    /// Dequeued → update applied.
    pub compute: Latency,
    /// Ingest → update applied.
    pub end_to_end: Latency,
}

impl StageLatency {
    /// Adds another shard's distributions.
    pub fn merge(&mut self, o: &StageLatency) {
        self.queue.merge(&o.queue);
        self.compute.merge(&o.compute);
        self.end_to_end.merge(&o.end_to_end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge() {
        let (mut a, mut b) = (Latency::default(), Latency::default());
        for v in 1..=1000u64 {
            a.record(v * 1000);
        }
        b.record(5_000_000);
        a.merge(&b);
        let p = a.percentiles();
        assert_eq!(p.count, 1001);
        assert!((499_000..=502_000).contains(&p.p50), "{p:?}"); // 3 significant digits
        assert!(p.max >= 4_990_000);
        let text = a.hgrm();
        assert!(text.contains("Percentile") && text.contains("#[Max"), "{text}");
    }
}
