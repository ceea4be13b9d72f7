//! Duplicate detection over a sliding window of the last N rows of the stream, in bounded
//! memory, at a few nanoseconds per row.
//!
//! **Fingerprints.** A row's fingerprint is 64 bits: two 32-bit hashes of the bit patterns of
//! its features then its label (so rows that differ in any bit — `0.0` and `-0.0`, NaN
//! payloads — have different inputs), computed column-wise for a whole batch with vector
//! multiplies ([`crate::kernel::scan`]). Each hash is a multiply–xorshift chain over the
//! values (a bijection of the state for each value) with its own seed and odd multiplier, and
//! a MurmurHash3 finaliser.
//!
//! **What a collision costs.** A row that is *not* a duplicate is dropped when its fingerprint
//! equals that of one of the N rows before it. For fingerprints that behave as random 64-bit
//! values that is N / 2^64 per row — about 5·10⁻¹⁷ for N = 1000, or one wrongly dropped row per
//! 2·10^16 rows. The hash is not cryptographic: data built on purpose to collide (knowing the
//! constants) can be made to lose rows. Duplicates are never missed.
//!
//! **The window.** A table of buckets of 8 (fingerprint, row number) slots, one bucket per
//! two rows of the window (N/2 rounded up to a power of two; one per row for N ≤ 8192, whose
//! table is at most 1 MB), picked by the fingerprint's
//! high bits. A row is a duplicate when its fingerprint is in a slot whose row is among the
//! last N. A row looks for its fingerprint among its bucket's 8 slots; a match has its row
//! number refreshed, otherwise the row takes the bucket's next slot in turn. When that slot's row is still in the window (a bucket that had
//! 8 new fingerprints within N rows: about one row in a thousand), the evicted entry moves to
//! a stash, a hash map keyed by the fingerprint itself, pruned every N rows — no row of the
//! window is ever forgotten. (A window of N rows holds about N/1000 stashed entries: a map
//! keeps a lookup O(1) where a list cost 120 ns per row at N = 10⁶.) A lookup searches the
//! stash only when the fingerprint's bit is set in a small filter of the stashed fingerprints
//! (one bit per fingerprint, rebuilt at each pruning, about 16 bits per entry): the stash is
//! rarely empty, and searching the map for every row cost a third of the window's time at
//! N = 1000. Memory: about 64·N bytes (128·N for N ≤ 8192), plus the stash and its filter. A batch's
//! lookups prefetch the bucket of the row 48 ahead, so a window larger than the caches costs
//! overlapped memory latencies.
//!
//! A shard keeps a window of its own where it can be given the rows of the stream before each
//! of its batches ([`Dedup::seek`], [`Dedup::feed`]): one shard, or a mapped file and a window
//! of at most 4096 rows (`batch::own_window_fits`). Otherwise the shards share one window and
//! take turns at it in stream order ([`crate::turns`]); each fingerprints its batch first, in
//! parallel. No `unsafe` here.

use crate::batch::SkipMask;
use crate::kernel::prefetch;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a fingerprint to itself: fingerprints are already uniformly spread.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for `u64` keys; any other key still hashes all its bytes.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, fp: u64) {
        self.0 = fp;
    }
}

/// Words of the stash's filter for a window of `window` rows: a power of two, about 16
/// bits per entry the stash holds on average (window / 1000), at least 4 KiB.
fn filter_words(window: usize) -> usize {
    (window / 4000).next_power_of_two().max(512)
}

/// The word and bit of `fp` in a stash filter of `words`: its low bits (a bucket is picked by
/// high ones).
#[inline(always)]
fn filter_bit(words: &[u64], fp: u64) -> (usize, u64) {
    ((fp >> 6) as usize & (words.len() - 1), 1 << (fp & 63))
}

/// The largest window with a bucket per row (one per two rows above).
const SMALL_WINDOW: usize = 8192;

/// How many rows ahead [`Dedup::mark`] and [`Dedup::feed`] prefetch buckets. Measured
/// (train, 10 M rows × 32, transforms and a window of 1000 rows, medians of interleaved
/// runs): 48 against 16, +4 % with 1 thread, +4 % with 2, +8 % with a window of 10⁶ rows; 96
/// was slower.
const PREFETCH_ROWS: usize = 48;

/// Slots per bucket.
const WAYS: usize = 8;

/// The row number of a slot never used: further back than any window reaches.
const EMPTY: i64 = i64::MIN / 2;

/// One bucket: its slots' fingerprints and the number of the latest row with each ([`EMPTY`]:
/// none); two cache lines, aligned.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    fps: [u64; WAYS],
    rows: [i64; WAYS],
}

/// The window's state.
#[derive(Debug, Clone)]
pub struct Dedup {
    window: i64,
    /// The number of the next row (0-based).
    row: i64,
    buckets: Vec<Bucket>,
    /// Per bucket, the slot its next new fingerprint takes.
    next: Vec<u8>,
    /// Buckets − 1 (a power of two).
    mask: usize,
    stash: Stash,
    /// Rows dropped as duplicates.
    pub dropped: u64,
}

/// The entries evicted from a bucket while in the window.
#[derive(Debug, Clone)]
struct Stash {
    /// (fingerprint, row number) of each entry.
    map: HashMap<u64, i64, BuildHasherDefault<FingerprintHasher>>,
    /// A one-hash Bloom filter of the stash's fingerprints (bit `fp mod len`): a lookup
    /// searches the map only when its bit is set.
    filter: Vec<u64>,
    /// The row at which the map is next pruned of rows out of the window.
    prune_at: i64,
}

impl Dedup {
    /// A window over the last `window` rows (≥ 1). Panics when its table cannot be allocated:
    /// see [`Dedup::try_new`].
    pub fn new(window: usize) -> Self {
        Self::try_new(window).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A window over the last `window` rows (≥ 1), or why its table (about 64·`window` bytes)
    /// cannot be allocated.
    pub fn try_new(window: usize) -> Result<Self, String> {
        let window = window.max(1);
        let too_big = || {
            format!(
                "a window of {window} rows needs about {:.1} GB of memory for its table, more than this machine can allocate",
                window as f64 * 64e-9
            )
        };
        // A small window (at most 1 MB of table) takes a bucket per row: its stash is then
        // almost always empty, and a lookup does not look at it.
        let per_bucket = if window <= SMALL_WINDOW { 1 } else { 2 };
        let buckets = window.div_ceil(per_bucket).checked_next_power_of_two().ok_or_else(too_big)?;
        let (mut table, mut next) = (Vec::new(), Vec::new());
        table.try_reserve_exact(buckets).map_err(|_| too_big())?;
        next.try_reserve_exact(buckets).map_err(|_| too_big())?;
        table.resize(buckets, Bucket { fps: [0; WAYS], rows: [EMPTY; WAYS] });
        next.resize(buckets, 0);
        Ok(Dedup {
            window: i64::try_from(window).map_err(|_| too_big())?,
            row: 0,
            buckets: table,
            next,
            mask: buckets - 1,
            stash: Stash {
                // Room from the start for the entries a window stashes at once (about N/1000
                // at two rows per bucket, rarer below), so a stash does not allocate
                // mid-stream.
                map: HashMap::with_capacity_and_hasher((window / 256).clamp(64, 1 << 16), Default::default()),
                filter: vec![0; filter_words(window)],
                prune_at: 0,
            },
            dropped: 0,
        })
    }

    /// The memory the window holds now, in bytes: its table, the stash (at its capacity) and
    /// the stash's filter.
    pub fn memory_bytes(&self) -> usize {
        let stash = self.stash.map.capacity() * (std::mem::size_of::<(u64, i64)>() + 1);
        self.buckets.len() * std::mem::size_of::<Bucket>() + self.next.len() + stash + self.stash.filter.len() * 8
    }

    /// True when `fp` equals the fingerprint of one of the last `window` rows (kept or
    /// dropped); the row is then counted as dropped. Every row enters the window either way.
    #[inline]
    pub fn is_duplicate(&mut self, fp: u64) -> bool {
        let mut dup = false;
        self.steps(&[fp], |_| dup = true);
        self.dropped += u64::from(dup);
        dup
    }

    /// The number of the next row the window expects (rows are numbered from 0).
    pub fn next_row(&self) -> u64 {
        self.row as u64
    }

    /// Moves the window forward to row `row` without seeing the rows before it: a window of
    /// one shard's own, which sees only its share of the stream, skips the rows it is not
    /// given (they are out of the window from `row + window` on). No effect when `row` is
    /// not ahead.
    pub fn seek(&mut self, row: u64) {
        self.row = self.row.max(row as i64);
    }

    /// Enters rows into the window without marking or counting them: rows of the stream that
    /// another shard learns, which a shard's own window must still remember.
    pub fn feed(&mut self, fps: &[u64]) {
        self.steps(fps, |_| {});
    }

    /// [`Dedup::is_duplicate`] for a batch's fingerprints in order, setting bit `r` of `skip`
    /// for each duplicate row `r`.
    pub fn mark(&mut self, fps: &[u64], skip: &mut SkipMask) {
        assert!(fps.len() <= skip.len() * 64, "a batch fits its mask");
        let mut dropped = 0;
        self.steps(fps, |r| {
            skip[r / 64] |= 1 << (r % 64);
            dropped += 1;
        });
        self.dropped += dropped;
        // So that a stash whose entries all left the window is empty again (lookups then skip
        // it), not only when the next entry is stashed.
        if !self.stash.map.is_empty() {
            self.stash.prune(self.row, self.window);
        }
    }

    /// Enters the rows of `fps` into the window in order, calling `dup(r)` for each row `r`
    /// that is a duplicate. A row's bucket is prefetched [`PREFETCH_ROWS`] rows before its
    /// lookup: a window larger than the caches (or last written by another shard's core) then
    /// costs one memory latency per row, overlapped.
    ///
    /// The table is sliced to its length (buckets − 1 is the mask) and the fields copied to
    /// locals first: in the loop, a bucket index needs no bounds check and nothing is
    /// reloaded from `self` after each store into the table (that was a third of a lookup's
    /// instructions).
    #[inline(always)]
    fn steps(&mut self, fps: &[u64], mut dup: impl FnMut(usize)) {
        let (first, window, mask) = (self.row, self.window, self.mask);
        self.row += fps.len() as i64;
        let (buckets, next) = (&mut self.buckets[..=mask], &mut self.next[..=mask]);
        for &fp in fps.iter().take(PREFETCH_ROWS) {
            prefetch_bucket(&buckets[bucket_of(fp, mask)]);
        }
        let at = Lookups { buckets, next, first, window, mask };
        if self.stash.map.is_empty() {
            at.run::<true>(&mut self.stash, fps, &mut dup);
        } else {
            at.run::<false>(&mut self.stash, fps, &mut dup);
        }
    }
}

/// Prefetches a bucket's two lines.
#[inline(always)]
fn prefetch_bucket(b: &Bucket) {
    prefetch(&b.fps);
    prefetch(&b.rows);
}

/// The table of [`Dedup::steps`] as locals: the buckets and their next slots, sliced to the
/// table's length (a bucket index then needs no bounds check), the number of the first row,
/// the window and the mask.
struct Lookups<'t> {
    buckets: &'t mut [Bucket],
    next: &'t mut [u8],
    first: i64,
    window: i64,
    mask: usize,
}

impl Lookups<'_> {
    /// The lookups and entries of the rows of `fps` in order, calling `dup(r)` for each
    /// duplicate row `r`. `QUIET` (the stash was empty at the start): the predicted case — a
    /// new fingerprint (in no slot), the stash still empty, a slot to take whose row has left
    /// the window — is decided with no call on its path, and other rows go through `step`
    /// out of line: with its calls inlined, the loop kept its values on the stack (2^22 rows
    /// in batches of 256: 7.1 -> 4.7 ns a row at N = 1000, 8.3 -> 7.1 at 4096). Else (a
    /// stash with entries, as a window of 10^5 rows or more almost always has) every row goes
    /// through `step` inlined: out of line, it cost a 10^6-row window a quarter of its speed.
    #[inline(always)]
    fn run<const QUIET: bool>(self, stash: &mut Stash, fps: &[u64], dup: &mut impl FnMut(usize)) {
        let Lookups { buckets, next, first, window, mask } = self;
        // Whether the stash may hold entries (set when one is entered; the map is pruned
        // empty only after a batch).
        let mut stashed = !QUIET;
        for (r, &fp) in fps.iter().enumerate() {
            if let Some(&ahead) = fps.get(r + PREFETCH_ROWS) {
                prefetch_bucket(&buckets[bucket_of(ahead, mask)]);
            }
            let (b, row) = (bucket_of(fp, mask), first + r as i64);
            let (bucket, k) = (&mut buckets[b], usize::from(next[b]) % WAYS);
            let dup_row = if QUIET {
                if !stashed & bucket.fps.iter().all(|&f| f != fp) & (row - bucket.rows[k] > window) {
                    next[b] = ((k + 1) % WAYS) as u8;
                    (bucket.fps[k], bucket.rows[k]) = (fp, row);
                    continue;
                }
                step_cold(bucket, &mut next[b], stash, &mut stashed, fp, row, window)
            } else {
                step(bucket, &mut next[b], stash, &mut stashed, fp, row, window)
            };
            if dup_row {
                dup(r);
            }
        }
    }
}

/// The bucket of `fp` in a table of `mask` + 1: its high bits (the stash's filter takes low
/// ones).
#[inline(always)]
fn bucket_of(fp: u64, mask: usize) -> usize {
    (fp >> 32) as usize & mask
}

/// One row's whole lookup and entry (row number `row`, window `window`) in its bucket (whose
/// next slot is `next`), for the rows off [`Dedup::steps`]'s fast path: true when `fp` is in a
/// slot or the stash within the window. The stash is searched out of line, only when
/// `stashed` (it may hold entries; set here when one is entered) and its filter may hold `fp`.
#[inline(always)]
fn step(bucket: &mut Bucket, next: &mut u8, stash: &mut Stash, stashed: &mut bool, fp: u64, row: i64, window: i64) -> bool {
    // A bucket holds a fingerprint in one slot at most.
    if let Some(k) = bucket.fps.iter().position(|&f| f == fp) {
        let live = row - bucket.rows[k] <= window;
        bucket.rows[k] = row;
        return live || (*stashed && stash.may_hold(fp) && stash.refresh(fp, row, window));
    }
    if *stashed && stash.may_hold(fp) && stash.refresh(fp, row, window) {
        return true;
    }
    let k = usize::from(*next) % WAYS;
    *next = ((k + 1) % WAYS) as u8;
    let (old_fp, old_row) = (bucket.fps[k], bucket.rows[k]);
    (bucket.fps[k], bucket.rows[k]) = (fp, row);
    if row - old_row <= window {
        stash.insert(old_fp, old_row, row, window);
        *stashed = true;
    }
    false
}

/// [`step`] out of line.
#[cold]
#[inline(never)]
fn step_cold(bucket: &mut Bucket, next: &mut u8, stash: &mut Stash, stashed: &mut bool, fp: u64, row: i64, window: i64) -> bool {
    step(bucket, next, stash, stashed, fp, row, window)
}

impl Stash {
    /// False when `fp` is surely not in the stash.
    #[inline(always)]
    fn may_hold(&self, fp: u64) -> bool {
        if self.map.is_empty() {
            return false;
        }
        let (w, bit) = filter_bit(&self.filter, fp);
        self.filter[w] & bit != 0
    }

    /// Enters an entry evicted from its bucket while in the window (at row `row`); prunes the
    /// stash, and rebuilds its filter, every `window` rows.
    #[cold]
    #[inline(never)]
    fn insert(&mut self, fp: u64, at: i64, row: i64, window: i64) {
        self.prune(row, window);
        self.map.insert(fp, at);
        let (w, bit) = filter_bit(&self.filter, fp);
        self.filter[w] |= bit;
    }

    /// Every `window` rows (at row `row`): drops the entries that left the window, and
    /// rebuilds the filter.
    fn prune(&mut self, row: i64, window: i64) {
        if row < self.prune_at {
            return;
        }
        self.map.retain(|_, at| row - *at <= window);
        self.prune_at = row + window;
        self.filter.fill(0);
        for &f in self.map.keys() {
            let (w, bit) = filter_bit(&self.filter, f);
            self.filter[w] |= bit;
        }
    }

    /// True when `fp` is in the stash within the window of row `row` (its row is then
    /// refreshed).
    #[cold]
    #[inline(never)]
    fn refresh(&mut self, fp: u64, row: i64, window: i64) -> bool {
        match self.map.get_mut(&fp) {
            Some(at) if row - *at <= window => {
                *at = row;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{skipped, BATCH_ROWS};
    use crate::kernel::{scan, Columns};
    use proptest::prelude::*;

    /// The rows' fingerprints, as the pipeline computes them.
    fn row_hashes(cols: &Columns<'_>, labels: &[f32], out: &mut Vec<u64>) {
        scan(cols, labels, Some(out), None);
    }

    #[test]
    fn an_impossible_window_is_an_error_not_an_abort() {
        let e = Dedup::try_new(usize::MAX / 2).unwrap_err();
        assert!(e.contains("needs about") && e.contains("GB"), "{e}");
        assert!(Dedup::try_new(1 << 40).is_err(), "64 TB");
        assert!(Dedup::try_new(1000).is_ok());
    }

    #[test]
    fn memory_is_about_64_bytes_per_row_of_the_window() {
        for (window, per_row) in [(1000usize, 128), (8192, 128), (10_000, 64), (100_000, 64)] {
            let bytes = Dedup::new(window).memory_bytes();
            // The table rounds its bucket count up to a power of two: at most twice the size.
            assert!((per_row * window..2 * per_row * window + 8192).contains(&bytes), "{window}: {bytes}");
        }
    }

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
        fn drops_exactly_the_duplicates_within_the_window(xs in proptest::collection::vec(0u64..40, 0..600), w in 1usize..40, spread: bool) {
            // Unspread, every fingerprint lands in bucket 0: more than 8 live ones go to the
            // stash. Spread, they scatter over the buckets.
            let xs: Vec<u64> = xs.iter().map(|&x| if spread { x.wrapping_mul(0x9e37_79b9_7f4a_7c15) } else { x }).collect();
            let mut d = Dedup::new(w);
            for (i, &x) in xs.iter().enumerate() {
                let want = xs[i.saturating_sub(w)..i].contains(&x);
                prop_assert_eq!(d.is_duplicate(x), want, "row {}", i);
            }
        }

        #[test]
        fn mark_agrees_with_row_by_row(xs in proptest::collection::vec(0u64..300, 0..3000), w in 1usize..200, spread: bool, cut in 1usize..1025) {
            // Batches of any length up to a mask's 1024 rows, over the fast path and the stash.
            let xs: Vec<u64> = xs.iter().map(|&x| if spread { x.wrapping_mul(0x9e37_79b9_7f4a_7c15) } else { x << 32 }).collect();
            let (mut one, mut batched) = (Dedup::new(w), Dedup::new(w));
            for batch in xs.chunks(cut) {
                let mut skip = [0; BATCH_ROWS / 64];
                batched.mark(batch, &mut skip);
                for (r, &x) in batch.iter().enumerate() {
                    prop_assert_eq!(skipped(&skip, r), one.is_duplicate(x), "row {} of a batch", r);
                }
                prop_assert!(batch.len() == BATCH_ROWS || !skipped(&skip, batch.len()), "bits past the batch stay clear");
            }
            prop_assert_eq!(batched.dropped, one.dropped);
        }

        #[test]
        fn own_windows_with_look_back_agree_with_one_window(xs in proptest::collection::vec(0u64..200, 0..3000), w in 1usize..300, cut in 1usize..400, shards in 1usize..4, spread: bool) {
            // Batches dealt round-robin to shards, each with a window of its own: before a
            // batch a shard skips ahead to the window's start and is fed the rows it did not
            // see (as a shard is fed a mapped batch's look-back), then marks the batch.
            let xs: Vec<u64> = xs.iter().map(|&x| if spread { x.wrapping_mul(0x9e37_79b9_7f4a_7c15) } else { x << 32 }).collect();
            let mut one = Dedup::new(w);
            let mut own: Vec<Dedup> = (0..shards).map(|_| Dedup::new(w)).collect();
            for (k, batch) in xs.chunks(cut).enumerate() {
                let (d, first) = (&mut own[k % shards], (k * cut) as u64);
                let from = first.saturating_sub(w as u64).max(d.next_row());
                d.seek(from);
                d.feed(&xs[from as usize..first as usize]);
                prop_assert_eq!(d.next_row(), first);
                let mut skip = [0; BATCH_ROWS / 64];
                d.mark(batch, &mut skip);
                for (r, &x) in batch.iter().enumerate() {
                    prop_assert_eq!(skipped(&skip, r), one.is_duplicate(x), "row {} of batch {}", r, k);
                }
            }
            prop_assert_eq!(own.iter().map(|d| d.dropped).sum::<u64>(), one.dropped, "fed rows are not counted");
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
