//! Synthetic click logs (`gen --task ctr`): categorical fields with Zipf-distributed values,
//! two numeric fields, and a click drawn from a hidden sparse logistic model that includes one
//! pairwise cross — so a model without that cross cannot reach the oracle's log loss.
//!
//! Fields are VW namespaces `a`..`h` (cardinalities 10^6, 10^5, 10^4, 10^3, 300, 100, 30, 10;
//! values `v{rank}` drawn from Zipf(n, 1.1)) and `n` (`x` and `y`, standard normal). The
//! hidden weight of each value is a normal draw keyed by a hash of (seed, field, value), so no
//! table is stored; the cross is of fields `c` and `d` (10^7 possible pairs). Deterministic:
//! the same seed gives the same rows. No `unsafe` here.

use crate::source::hash::{feature_id, fmix64, namespace_hash};
use crate::sparse::SparseRows;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Zipf};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The categorical fields: namespace name and cardinality.
pub const FIELDS: [(&str, u32); 8] =
    [("a", 1_000_000), ("b", 100_000), ("c", 10_000), ("d", 1_000), ("e", 300), ("f", 100), ("g", 30), ("h", 10)];
/// The crossed fields (indices into [`FIELDS`]).
pub const CROSSED: (usize, usize) = (2, 3);
const NUMERIC_NS: &str = "n";
/// Spread of the hidden weights: per field, of the cross, of the numeric fields.
const FIELD_SD: f32 = 0.5;
const CROSS_SD: f32 = 1.0;
const NUMERIC_W: [f32; 2] = [0.4, -0.3];
const BIAS: f32 = -1.2;

/// One generated row: its field values (ranks), numeric values, label and true probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CtrRow {
    /// Rank of each categorical field's value (1 = the most frequent).
    pub values: [u32; FIELDS.len()],
    /// The numeric fields.
    pub numeric: [f32; 2],
    /// Clicked (1) or not (0).
    pub label: f32,
    /// The hidden model's click probability.
    pub p: f32,
}

/// The generator.
pub struct CtrGenerator {
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
    /// A generator with `seed`; feature ids are hashed with `hash_seed` (as `train` hashes VW).
    pub fn new(seed: u64, hash_seed: u64) -> Self {
        let zipf = FIELDS.iter().map(|&(_, n)| Zipf::new(n as f64, 1.1).expect("valid Zipf")).collect();
        let ns = FIELDS
            .iter()
            .map(|(name, _)| namespace_hash(name.as_bytes(), hash_seed))
            .chain([namespace_hash(NUMERIC_NS.as_bytes(), hash_seed)])
            .collect();
        CtrGenerator { seed, rng: Xoshiro256PlusPlus::seed_from_u64(seed), zipf, ns }
    }

    fn weight(&self, field: u64, value: u64) -> f32 {
        keyed_normal(self.seed ^ field.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ value.wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
    }

    /// The next row.
    pub fn next_row(&mut self) -> CtrRow {
        let mut values = [0u32; FIELDS.len()];
        let mut margin = BIAS;
        for (k, v) in values.iter_mut().enumerate() {
            *v = self.zipf[k].sample(&mut self.rng) as u32;
            margin += FIELD_SD * self.weight(k as u64, *v as u64);
        }
        let (i, j) = CROSSED;
        margin += CROSS_SD * self.weight(100, (values[i] as u64) << 32 | values[j] as u64);
        let numeric = [self.rng.sample::<f32, _>(StandardNormal), self.rng.sample::<f32, _>(StandardNormal)];
        margin += NUMERIC_W[0] * numeric[0] + NUMERIC_W[1] * numeric[1];
        let p = 1.0 / (1.0 + (-margin).exp());
        let label = if self.rng.random::<f32>() < p { 1.0 } else { 0.0 };
        CtrRow { values, numeric, label, p }
    }

    /// Appends `row` as sparse features (ids as `train` hashes the VW line) to `out`.
    pub fn push_sparse(&self, row: &CtrRow, out: &mut SparseRows) {
        let mut name = itoa::Buffer::new();
        for (k, &v) in row.values.iter().enumerate() {
            let text = [b"v", name.format(v).as_bytes()].concat();
            out.push_feature(feature_id(self.ns[k], &text), 1.0, FIELDS[k].0.as_bytes()[0]);
        }
        let n = self.ns[FIELDS.len()];
        out.push_feature(feature_id(n, b"x"), row.numeric[0], b'n');
        out.push_feature(feature_id(n, b"y"), row.numeric[1], b'n');
        out.end_row(row.label, 1.0);
    }

    /// Appends `row` as a VW line (labels −1/+1).
    pub fn push_vw(row: &CtrRow, out: &mut Vec<u8>) {
        let mut num = ryu::Buffer::new();
        let mut int = itoa::Buffer::new();
        out.extend_from_slice(if row.label > 0.0 { b"1" } else { b"-1" });
        for (k, &v) in row.values.iter().enumerate() {
            out.extend_from_slice(b" |");
            out.extend_from_slice(FIELDS[k].0.as_bytes());
            out.extend_from_slice(b" v");
            out.extend_from_slice(int.format(v).as_bytes());
        }
        out.extend_from_slice(b" |n x:");
        out.extend_from_slice(num.format(row.numeric[0]).as_bytes());
        out.extend_from_slice(b" y:");
        out.extend_from_slice(num.format(row.numeric[1]).as_bytes());
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
        feats.sort_unstable_by_key(|f| f.0);
        feats.dedup_by_key(|f| f.0);
        for (id, v) in feats {
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

    #[test]
    fn deterministic_zipf_and_clicks() {
        let (mut a, mut b) = (CtrGenerator::new(7, 0), CtrGenerator::new(7, 0));
        let rows: Vec<CtrRow> = (0..20_000).map(|_| a.next_row()).collect();
        assert!(rows.iter().all(|r| r == &b.next_row()));
        // Zipf: the top value of the largest field is common, and most values are rare.
        let top = rows.iter().filter(|r| r.values[0] == 1).count();
        assert!((1_000..6_000).contains(&top), "{top}");
        let rate = rows.iter().map(|r| r.label).sum::<f32>() / rows.len() as f32;
        assert!((0.15..0.45).contains(&rate), "{rate}");
        // The same row as VW text parses to the same sparse features.
        let mut line = Vec::new();
        CtrGenerator::push_vw(&rows[0], &mut line);
        let mut parsed = SparseRows::new();
        let mut p = crate::sparse::SparseParser::new(&line[..], "t", crate::source::TextFormat::Vw, 0).unwrap();
        assert!(p.next_row(&mut parsed).unwrap());
        let mut direct = SparseRows::new();
        a.push_sparse(&rows[0], &mut direct);
        parsed.labels[0] = parsed.labels[0].max(0.0);
        assert_eq!(parsed, direct);
    }
}
