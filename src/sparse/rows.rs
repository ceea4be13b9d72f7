//! Sparse rows as they travel: compressed sparse rows (CSR) — per row an offset into flat
//! arrays of feature ids, values and namespace tags — with labels and importance weights.
//! A text source fills a pooled [`SparseRows`]; a mapped `.ssgd` block is viewed as the same
//! slices ([`RowsRef`]), so the kernel reads both through one type. No `unsafe` here.

/// One row: its features' ids, values (`None`: every value is 1.0) and namespace tags.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    /// Feature ids (32-bit hashes or LibSVM indices; a table of 2^b weights uses id mod 2^b).
    pub ids: &'a [u32],
    /// Values, one per id; `None` when all are 1.0.
    pub values: Option<&'a [f32]>,
    /// Namespace tag per id (the first byte of a VW namespace, 0 where the source has none):
    /// what `--interactions` crosses.
    pub ns: &'a [u8],
}

impl Row<'_> {
    /// Value of feature `k`.
    #[inline]
    pub fn value(&self, k: usize) -> f32 {
        self.values.map_or(1.0, |v| v[k])
    }
}

/// Borrowed rows: a pooled buffer's or a mapped block's.
#[derive(Clone, Copy, Debug)]
pub struct RowsRef<'a> {
    /// Row r's features are `offsets[r] .. offsets[r + 1]` (rows + 1 entries, from 0).
    pub offsets: &'a [u32],
    /// Feature ids.
    pub ids: &'a [u32],
    /// Values (`None`: all 1.0).
    pub values: Option<&'a [f32]>,
    /// Namespace tags.
    pub ns: &'a [u8],
    /// Labels.
    pub labels: &'a [f32],
    /// Importance weights (`None`: all 1.0).
    pub weights: Option<&'a [f32]>,
}

impl<'a> RowsRef<'a> {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> Row<'a> {
        let (a, b) = (self.offsets[r] as usize, self.offsets[r + 1] as usize);
        Row { ids: &self.ids[a..b], values: self.values.map(|v| &v[a..b]), ns: &self.ns[a..b] }
    }

    /// Row `r`'s importance weight.
    #[inline]
    pub fn weight(&self, r: usize) -> f32 {
        self.weights.map_or(1.0, |w| w[r])
    }

    /// Row `r`'s fingerprint for duplicate windows ([`crate::dedup`]): 64 bits over the bit
    /// patterns of its label, and of each feature's id, value and namespace in order — one
    /// multiply–xorshift step per feature (a bijection of the state for each feature), then
    /// SplitMix64's finaliser over the count.
    pub fn fingerprint(&self, r: usize) -> u64 {
        let row = self.row(r);
        let mut h = 0x9e37_79b9_7f4a_7c15 ^ u64::from(self.labels[r].to_bits());
        for (k, (&id, &ns)) in row.ids.iter().zip(row.ns).enumerate() {
            h = (h ^ (u64::from(id) | u64::from(row.value(k).to_bits()) << 32)).wrapping_mul(0x9fb2_1c65_1e98_df25);
            h ^= (h >> 32) ^ u64::from(ns);
        }
        let x = h ^ row.ids.len() as u64;
        let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// The first `n` rows (all when `n` ≥ len).
    pub fn head(self, n: usize) -> RowsRef<'a> {
        let n = n.min(self.len());
        RowsRef { offsets: &self.offsets[..n + 1], labels: &self.labels[..n], weights: self.weights.map(|w| &w[..n]), ..self }
    }
}

/// An owned, reusable batch of sparse rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseRows {
    /// Row r's features are `offsets[r] .. offsets[r + 1]`.
    pub offsets: Vec<u32>,
    /// Feature ids.
    pub ids: Vec<u32>,
    /// Values.
    pub values: Vec<f32>,
    /// Namespace tags.
    pub ns: Vec<u8>,
    /// Labels.
    pub labels: Vec<f32>,
    /// Importance weights.
    pub weights: Vec<f32>,
}

impl SparseRows {
    /// An empty batch.
    pub fn new() -> Self {
        SparseRows { offsets: vec![0], ..SparseRows::default() }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features held (all rows).
    pub fn nnz(&self) -> usize {
        self.ids.len()
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.offsets.clear();
        self.offsets.push(0);
        self.ids.clear();
        self.values.clear();
        self.ns.clear();
        self.labels.clear();
        self.weights.clear();
    }

    /// Adds one feature to the row being built (ended by [`SparseRows::end_row`]).
    #[inline]
    pub fn push_feature(&mut self, id: u32, value: f32, ns: u8) {
        self.ids.push(id);
        self.values.push(value);
        self.ns.push(ns);
    }

    /// Ends the row being built with its label and importance weight.
    #[inline]
    pub fn end_row(&mut self, label: f32, weight: f32) {
        self.labels.push(label);
        self.weights.push(weight);
        self.offsets.push(self.ids.len() as u32);
    }

    /// Drops the features pushed since the last [`SparseRows::end_row`] (a line that failed
    /// to parse half-way).
    pub fn abandon_row(&mut self) {
        let keep = *self.offsets.last().expect("offsets start with 0") as usize;
        self.ids.truncate(keep);
        self.values.truncate(keep);
        self.ns.truncate(keep);
    }

    /// Drops the last row (a duplicate).
    pub fn pop_row(&mut self) {
        if self.labels.pop().is_some() {
            self.weights.pop();
            self.offsets.pop();
            self.abandon_row();
        }
    }

    /// Appends row `r` of `from`.
    pub fn push_row(&mut self, from: &RowsRef<'_>, r: usize) {
        let row = from.row(r);
        for (k, (&id, &ns)) in row.ids.iter().zip(row.ns).enumerate() {
            self.push_feature(id, row.value(k), ns);
        }
        self.end_row(from.labels[r], from.weight(r));
    }

    /// The rows as borrowed slices.
    pub fn as_ref(&self) -> RowsRef<'_> {
        RowsRef {
            offsets: &self.offsets,
            ids: &self.ids,
            values: Some(&self.values),
            ns: &self.ns,
            labels: &self.labels,
            weights: Some(&self.weights),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_view_abandon() {
        let mut b = SparseRows::new();
        b.push_feature(7, 2.0, b'a');
        b.end_row(1.0, 1.0);
        b.push_feature(9, 1.0, b'b');
        b.abandon_row();
        b.end_row(0.0, 3.0);
        let v = b.as_ref();
        assert_eq!(v.len(), 2);
        assert_eq!(v.row(0).ids, &[7]);
        assert_eq!(v.row(0).value(0), 2.0);
        assert!(v.row(1).ids.is_empty());
        assert_eq!(v.weight(1), 3.0);
        let mut c = SparseRows::new();
        c.push_row(&v, 0);
        assert_eq!(c.as_ref().row(0).ns, b"a");
    }
}
