//! Duplicate detection over a sliding window of the last N rows of the stream, in bounded
//! memory, at a few nanoseconds per row.
//!
//! **Fingerprints.** A row's fingerprint is 64 bits: two 32-bit hashes of the bit patterns of
//! its features then its label (so rows that differ in any bit — `0.0` and `-0.0`, NaN
//! payloads — have different inputs), computed column-wise for a whole batch with vector
//! multiplies ([`crate::kernel::row_hashes`]). Each hash is a multiply–xorshift chain over the
//! values (a bijection of the state for each value) with its own seed and odd multiplier, and
//! a MurmurHash3 finaliser.
//!
//! **What a collision costs.** A row that is *not* a duplicate is dropped when its fingerprint
//! equals that of one of the N rows before it. For fingerprints that behave as random 64-bit
//! values that is N / 2^64 per row — about 5·10⁻¹⁷ for N = 1000, or one wrongly dropped row per
//! 2·10^16 rows. The hash is not cryptographic: data built on purpose to collide (knowing the
//! constants) can be made to lose rows. Duplicates are never missed.
//!
//! **The window.** Two open-addressing tables of (fingerprint, row number) pairs, each with
//! room for 2N entries: rows are inserted in the *current* table; every N rows the older table
//! is cleared and becomes the current one. A row is a duplicate when its fingerprint is in the
//! current table (all within the last N rows) or in the older one with a row number within the
//! last N. Memory: 64·N bytes; no deletions, no per-row allocation. No `unsafe` here.

/// The window's state.
#[derive(Debug, Clone)]
pub struct Dedup {
    window: u64,
    /// 1 + the row number of the last row seen.
    row: u64,
    /// 1 + the row number of the row before the current table's generation.
    generation: u64,
    /// Index in `tables` of the current table.
    current: usize,
    /// (fingerprint, 1 + row number); row number 0 marks an empty slot.
    tables: [Vec<(u64, u64)>; 2],
    mask: usize,
    /// Rows dropped as duplicates.
    pub dropped: u64,
}

impl Dedup {
    /// A window over the last `window` rows (≥ 1).
    pub fn new(window: usize) -> Self {
        let window = window.max(1);
        let slots = (2 * window).next_power_of_two();
        Dedup {
            window: window as u64,
            row: 0,
            generation: 0,
            current: 0,
            tables: [vec![(0, 0); slots], vec![(0, 0); slots]],
            mask: slots - 1,
            dropped: 0,
        }
    }

    /// The slot holding `fp` in table `t`, or the empty slot where it would go.
    #[inline]
    fn probe(&self, t: usize, fp: u64) -> usize {
        let table = &self.tables[t];
        let mut i = fp as usize & self.mask;
        loop {
            let (f, at) = table[i];
            if f == fp || at == 0 {
                return i;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// True when `fp` equals the fingerprint of one of the last `window` rows (kept or
    /// dropped); the row is then counted as dropped. Every row enters the window either way.
    pub fn is_duplicate(&mut self, fp: u64) -> bool {
        // Stored as 1 + row number: 0 marks an empty slot.
        self.row += 1;
        let row = self.row;
        if row - self.generation == self.window {
            // The older table's rows are all out of the window now: it becomes the current one.
            self.current ^= 1;
            self.tables[self.current].fill((0, 0));
            self.generation = row;
        }
        let (cur, old) = (self.current, self.current ^ 1);
        // A probe stops at `fp` or at an empty slot: an occupied slot holds `fp`.
        let i = self.probe(cur, fp);
        let dup = self.tables[cur][i].1 != 0 || {
            let (_, at) = self.tables[old][self.probe(old, fp)];
            at != 0 && row - at <= self.window
        };
        // The latest row with this fingerprint.
        self.tables[cur][i] = (fp, row);
        if dup {
            self.dropped += 1;
        }
        dup
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{row_hashes, Columns};
    use proptest::prelude::*;

    #[test]
    fn window_semantics() {
        let mut d = Dedup::new(2);
        assert!(!d.is_duplicate(1));
        assert!(!d.is_duplicate(2));
        assert!(d.is_duplicate(1)); // within the last 2
        assert!(!d.is_duplicate(3));
        assert!(!d.is_duplicate(2)); // 2 left the window (last two: 1, 3)
        assert_eq!(d.dropped, 1);
    }

    #[test]
    fn fingerprints_see_every_bit() {
        // Rows: (1, 2 | 0), (1, 2 | 1), (0 | 0), (-0 | 0) as two batches of one column layout.
        let data = [1.0f32, 1.0, 2.0, 2.0];
        let mut h = Vec::new();
        row_hashes(&Columns::new(&data, 2, 2, 0, 2), &[0.0, 1.0], &mut h);
        assert_ne!(h[0], h[1], "the label is hashed");
        let zeros = [0.0f32, -0.0];
        row_hashes(&Columns::new(&zeros, 2, 1, 0, 2), &[0.0, 0.0], &mut h);
        assert_ne!(h[0], h[1], "bit patterns, not values");
        // Columns in a different order are different rows.
        let ab = [1.0f32, 2.0];
        let ba = [2.0f32, 1.0];
        let (mut x, mut y) = (Vec::new(), Vec::new());
        row_hashes(&Columns::new(&ab, 1, 2, 0, 1), &[0.0], &mut x);
        row_hashes(&Columns::new(&ba, 1, 2, 0, 1), &[0.0], &mut y);
        assert_ne!(x, y);
    }

    proptest! {
        #[test]
        fn drops_exactly_the_duplicates_within_the_window(xs in proptest::collection::vec(0u64..20, 0..600), w in 1usize..12) {
            let mut d = Dedup::new(w);
            for (i, &x) in xs.iter().enumerate() {
                let want = xs[i.saturating_sub(w)..i].contains(&x);
                prop_assert_eq!(d.is_duplicate(x), want, "row {}", i);
            }
        }

        #[test]
        fn distinct_rows_have_distinct_fingerprints(rows in proptest::collection::hash_set(proptest::collection::vec(-3i8..3, 4), 1..200)) {
            // Small integer values: the structured data where weak hashes collide.
            let rows: Vec<Vec<i8>> = rows.into_iter().collect();
            let n = rows.len();
            let data: Vec<f32> = (0..4).flat_map(|j| rows.iter().map(move |r| r[j] as f32)).collect();
            let mut h = Vec::new();
            row_hashes(&Columns::new(&data[..3 * n], n, 3, 0, n), &data[3 * n..], &mut h);
            let distinct: std::collections::HashSet<u64> = h.iter().copied().collect();
            prop_assert_eq!(distinct.len(), n);
        }
    }
}
