//! Synthetic sparse streams with a hidden logistic model (`gen --task ctr|eat-rate`):
//!
//! - **ctr** (click logs): VW namespaces `a`..`h` with cardinalities 10^6, 10^5, 10^4, 10^3,
//!   300, 100, 30, 10 and values `v{rank}` drawn from Zipf(n, 1.1), two numeric features `x`, `y`
//!   in namespace `n`; every value has a hidden weight, and the cross of `c` and `d` (10^7
//!   possible pairs) one more — so a model without that cross cannot reach the oracle's loss.
//! - **eat-rate** (in the spirit of fwumious_wabbit's benchmark): does animal `A` (1000,
//!   uniform) eat food `B` (100, uniform)? Ten more namespaces `C`..`L` (1000 values each) are
//!   noise. The label depends on the pair only (a hidden bit per pair: probability 0.9 or 0.1),
//!   so without `--interactions AB` nothing can be learned.
//! - **text** (bags of words): 10 to 60 words per row from a vocabulary of 10^5 drawn from
//!   Zipf(n, 1.05), namespace `w`, each word with a hidden weight (spam, sentiment).
//!
//! Hidden weights are normal draws keyed by a hash of (seed, field, value): no table is stored.
//! Deterministic: the same seed gives the same rows. No `unsafe` here.

use crate::source::hash::{feature_id, fmix64, namespace_hash};
use crate::sparse::SparseRows;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Zipf};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Which stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseTask {
    /// Click logs: Zipf fields, numeric features, a hidden cross.
    Ctr,
    /// Animals and foods: only their cross carries the label.
    EatRate,
    /// Bags of Zipf words.
    Text,
}

impl SparseTask {
    /// The name `gen --task` takes.
    pub fn name(self) -> &'static str {
        match self {
            SparseTask::Ctr => "ctr",
            SparseTask::EatRate => "eat-rate",
            SparseTask::Text => "text",
        }
    }
}

/// A task's shape: its categorical fields (namespace, cardinality), whether values are Zipf
/// (else uniform), the spread of per-value weights, the crossed fields, and numeric features.
struct Spec {
    fields: &'static [(&'static str, u32)],
    zipf: bool,
    field_sd: f32,
    crossed: Option<(usize, usize)>,
    numeric: bool,
    bias: f32,
    /// A bag: this many values (a range) of the first field per row, instead of one per field.
    bag: Option<(u32, u32)>,
}

const CTR: Spec = Spec {
    fields: &[("a", 1_000_000), ("b", 100_000), ("c", 10_000), ("d", 1_000), ("e", 300), ("f", 100), ("g", 30), ("h", 10)],
    zipf: true,
    field_sd: 0.5,
    crossed: Some((2, 3)),
    numeric: true,
    bias: -1.2,
    bag: None,
};

const EAT_RATE: Spec = Spec {
    fields: &[
        ("A", 1000),
        ("B", 100),
        ("C", 1000),
        ("D", 1000),
        ("E", 1000),
        ("F", 1000),
        ("G", 1000),
        ("H", 1000),
        ("I", 1000),
        ("J", 1000),
        ("K", 1000),
        ("L", 1000),
    ],
    zipf: false,
    field_sd: 0.0,
    crossed: Some((0, 1)),
    numeric: false,
    bias: 0.0,
    bag: None,
};

const TEXT: Spec =
    Spec { fields: &[("w", 100_000)], zipf: true, field_sd: 0.4, crossed: None, numeric: false, bias: -0.3, bag: Some((10, 60)) };

const NUMERIC_NS: &str = "n";
const NUMERIC_W: [f32; 2] = [0.4, -0.3];
/// ctr: spread of the cross's weights; eat-rate: the margin of an eaten (or not) pair.
const CROSS_SD: f32 = 1.0;
const EAT_MARGIN: f32 = 2.197; // ln 9: probability 0.9 or 0.1

/// One generated row: its field values (1-based), numeric values, label and true probability.
#[derive(Clone, Debug, PartialEq)]
pub struct CtrRow {
    /// (field, value) pairs: one per field, or a bag of the first field's (ctr, text: the
    /// value's rank, 1 = the most frequent).
    pub values: Vec<(usize, u32)>,
    /// The numeric features (ctr), else empty.
    pub numeric: Vec<f32>,
    /// Positive (1) or not (0).
    pub label: f32,
    /// The hidden model's probability of a positive.
    pub p: f32,
}

/// The generator.
pub struct CtrGenerator {
    spec: &'static Spec,
    seed: u64,
    rng: Xoshiro256PlusPlus,
    zipf: Vec<Zipf<f64>>,
    ns: Vec<u64>,
}

/// A standard normal keyed by `key` (the hidden weights, stored nowhere).
fn keyed_normal(key: u64) -> f32 {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(fmix64(key));
    r.sample::<f32, _>(StandardNormal)
}

impl CtrGenerator {
    /// A generator of `task` with `seed`; feature ids are hashed with `hash_seed` (as `train`
    /// hashes VW).
    pub fn new(task: SparseTask, seed: u64, hash_seed: u64) -> Self {
        let spec = match task {
            SparseTask::Ctr => &CTR,
            SparseTask::EatRate => &EAT_RATE,
            SparseTask::Text => &TEXT,
        };
        let zipf = spec.fields.iter().map(|&(_, n)| Zipf::new(n as f64, 1.1).expect("valid Zipf")).collect();
        let ns = spec
            .fields
            .iter()
            .map(|(name, _)| namespace_hash(name.as_bytes(), hash_seed))
            .chain([namespace_hash(NUMERIC_NS.as_bytes(), hash_seed)])
            .collect();
        CtrGenerator { spec, seed, rng: Xoshiro256PlusPlus::seed_from_u64(seed), zipf, ns }
    }

    fn weight(&self, field: u64, value: u64) -> f32 {
        keyed_normal(self.seed ^ field.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ value.wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
    }

    /// The next row.
    pub fn next_row(&mut self) -> CtrRow {
        let spec = self.spec;
        let mut margin = spec.bias;
        let mut values = Vec::with_capacity(spec.fields.len());
        let draw = |g: &mut Self, k: usize| {
            if spec.zipf {
                g.zipf[k].sample(&mut g.rng) as u32
            } else {
                g.rng.random_range(1..=spec.fields[k].1)
            }
        };
        match spec.bag {
            Some((lo, hi)) => {
                let n = self.rng.random_range(lo..=hi);
                for _ in 0..n {
                    let v = draw(self, 0);
                    values.push((0, v));
                }
            }
            None => {
                for k in 0..spec.fields.len() {
                    let v = draw(self, k);
                    values.push((k, v));
                }
            }
        }
        if spec.field_sd > 0.0 {
            margin += values.iter().map(|&(k, v)| spec.field_sd * self.weight(k as u64, v as u64)).sum::<f32>();
        }
        if let Some((i, j)) = spec.crossed {
            let pair = self.weight(100, (values[i].1 as u64) << 32 | values[j].1 as u64);
            margin += if spec.zipf { CROSS_SD * pair } else { EAT_MARGIN * pair.signum() };
        }
        let mut numeric = Vec::new();
        if spec.numeric {
            numeric = vec![self.rng.sample::<f32, _>(StandardNormal), self.rng.sample::<f32, _>(StandardNormal)];
            margin += NUMERIC_W[0] * numeric[0] + NUMERIC_W[1] * numeric[1];
        }
        let p = 1.0 / (1.0 + (-margin).exp());
        let label = if self.rng.random::<f32>() < p { 1.0 } else { 0.0 };
        CtrRow { values, numeric, label, p }
    }

    /// Appends `row` as sparse features (ids as `train` hashes the VW line) to `out`.
    pub fn push_sparse(&self, row: &CtrRow, out: &mut SparseRows) {
        let mut name = itoa::Buffer::new();
        let fields = self.spec.fields;
        for &(k, v) in &row.values {
            let text = [b"v", name.format(v).as_bytes()].concat();
            out.push_feature(feature_id(self.ns[k], &text), 1.0, fields[k].0.as_bytes()[0]);
        }
        let n = self.ns[fields.len()];
        for (name, &x) in [&b"x"[..], b"y"].iter().zip(&row.numeric) {
            out.push_feature(feature_id(n, name), x, b'n');
        }
        out.end_row(row.label, 1.0);
    }

    /// Appends `row` as a VW line (labels −1/+1).
    pub fn push_vw(&self, row: &CtrRow, out: &mut Vec<u8>) {
        let mut num = ryu::Buffer::new();
        let mut int = itoa::Buffer::new();
        out.extend_from_slice(if row.label > 0.0 { b"1" } else { b"-1" });
        let mut last = usize::MAX;
        for &(k, v) in &row.values {
            if k != last {
                out.extend_from_slice(b" |");
                out.extend_from_slice(self.spec.fields[k].0.as_bytes());
                last = k;
            }
            out.extend_from_slice(b" v");
            out.extend_from_slice(int.format(v).as_bytes());
        }
        if let [x, y] = row.numeric[..] {
            out.extend_from_slice(b" |n x:");
            out.extend_from_slice(num.format(x).as_bytes());
            out.extend_from_slice(b" y:");
            out.extend_from_slice(num.format(y).as_bytes());
        }
        out.push(b'\n');
    }

    /// Appends `row` as a LibSVM line whose indices are the rows' sparse ids (labels 0/1).
    pub fn push_libsvm(&self, row: &CtrRow, out: &mut Vec<u8>, scratch: &mut SparseRows) {
        scratch.clear();
        self.push_sparse(row, scratch);
        let mut num = ryu::Buffer::new();
        let mut int = itoa::Buffer::new();
        out.extend_from_slice(if row.label > 0.0 { b"1" } else { b"0" });
        let mut feats: Vec<(u32, f32)> = scratch.ids.iter().copied().zip(scratch.values.iter().copied()).collect();
        // LibSVM names an index once: a word twice in a bag is one index of value 2.
        feats.sort_unstable_by_key(|f| f.0);
        let mut merged: Vec<(u32, f32)> = Vec::with_capacity(feats.len());
        for (id, v) in feats {
            match merged.last_mut() {
                Some(last) if last.0 == id => last.1 += v,
                _ => merged.push((id, v)),
            }
        }
        for (id, v) in merged {
            out.push(b' ');
            out.extend_from_slice(int.format(id).as_bytes());
            out.push(b':');
            out.extend_from_slice(num.format(v).as_bytes());
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `row` written as VW text and parsed gives the features `push_sparse` writes.
    fn vw_text_parses_to_the_same_row(g: &CtrGenerator, row: &CtrRow) {
        let mut line = Vec::new();
        g.push_vw(row, &mut line);
        let mut parsed = SparseRows::new();
        let mut p = crate::sparse::SparseParser::new(&line[..], "t", crate::source::TextFormat::Vw, 0).unwrap();
        assert!(p.next_row(&mut parsed).unwrap());
        let mut direct = SparseRows::new();
        g.push_sparse(row, &mut direct);
        parsed.labels[0] = parsed.labels[0].max(0.0);
        assert_eq!(parsed, direct);
    }

    #[test]
    fn deterministic_zipf_and_clicks() {
        let (mut a, mut b) = (CtrGenerator::new(SparseTask::Ctr, 7, 0), CtrGenerator::new(SparseTask::Ctr, 7, 0));
        let rows: Vec<CtrRow> = (0..20_000).map(|_| a.next_row()).collect();
        assert!(rows.iter().all(|r| r == &b.next_row()));
        // Zipf: the top value of the largest field is common, and most values are rare.
        let top = rows.iter().filter(|r| r.values[0].1 == 1).count();
        assert!((1_000..6_000).contains(&top), "{top}");
        let rate = rows.iter().map(|r| r.label).sum::<f32>() / rows.len() as f32;
        assert!((0.15..0.45).contains(&rate), "{rate}");
        // The same row as VW text parses to the same sparse features.
        vw_text_parses_to_the_same_row(&a, &rows[0]);
    }

    #[test]
    fn text_rows_are_bags_of_zipf_words() {
        let mut g = CtrGenerator::new(SparseTask::Text, 5, 0);
        let rows: Vec<CtrRow> = (0..2000).map(|_| g.next_row()).collect();
        assert!(rows.iter().all(|r| (10..=60).contains(&r.values.len()) && r.values.iter().all(|&(k, _)| k == 0)));
        let the = rows.iter().flat_map(|r| &r.values).filter(|&&(_, v)| v == 1).count();
        assert!(the > 2000, "the commonest word is in most rows: {the}");
        // VW text of a bag parses to the same features (a word twice is two features).
        vw_text_parses_to_the_same_row(&g, &rows[0]);
    }

    #[test]
    fn eat_rate_labels_come_from_the_pair_alone() {
        let mut g = CtrGenerator::new(SparseTask::EatRate, 3, 0);
        let rows: Vec<CtrRow> = (0..5000).map(|_| g.next_row()).collect();
        assert!(rows.iter().all(|r| r.values.len() == 12 && r.numeric.is_empty()));
        assert!(rows.iter().all(|r| (r.p - 0.9).abs() < 1e-3 || (r.p - 0.1).abs() < 1e-3));
        // The same pair, the same probability, whatever the noise namespaces.
        let same: Vec<&CtrRow> = rows.iter().filter(|r| r.values[..2] == rows[0].values[..2]).collect();
        assert!(same.iter().all(|r| r.p == rows[0].p));
    }
}
