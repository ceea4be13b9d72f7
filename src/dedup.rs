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
//! **The window.** A ring holds the fingerprint of each of the last N rows (at its row number
//! modulo the ring's length), and a table of buckets indexes them: 8 slots a bucket, each the
//! *tag* of a fingerprint (16 of its bits, 32 for windows over 8192 rows) and the row number
//! it was last seen at (truncated to the same width), picked by the fingerprint's high bits —
//! a bucket per row of the window up to 8192 rows (32 bytes each), one per two rows above (64
//! bytes each, a cache line). A row compares its tag with the bucket's 8 at once (one SIMD
//! compare, and one more for the slots' ages); a live slot with its tag is confirmed against
//! the whole fingerprint in the ring, and is then a duplicate: the slot's row number is
//! refreshed. Otherwise the row takes a slot whose row has left the window. When all 8 are
//! live (a bucket that had 8 new fingerprints within N rows: rare), the oldest entry moves to
//! a stash, a hash map keyed by the fingerprint itself, pruned every N rows — no row of the
//! window is ever forgotten. A lookup searches the stash only when the fingerprint's bit is
//! set in a small filter of the stashed fingerprints (one bit per fingerprint, rebuilt at each
//! pruning, about 16 bits per entry). Truncated row numbers stay exact because the slots are
//! swept every few thousand rows (every 2^28 with 32-bit lanes): a slot out of the window is
//! set back to just out of it, so no age wraps round. Memory: about 40·N bytes (times up to 2
//! for the power-of-two sizes), plus the stash and its filter. A batch's lookups prefetch the
//! bucket of the row 48 ahead, so a window larger than the caches costs overlapped memory
//! latencies.
//!
//! A shard keeps a window of its own where it can be given the rows of the stream before each
//! of its batches ([`Dedup::seek`], [`Dedup::feed`]): one shard, or a mapped file and a window
//! of at most 4096 rows (`batch::own_window_fits`). Otherwise the shards share one window and
//! take turns at it in stream order ([`crate::turns`]); each fingerprints its batch first, in
//! parallel. The SIMD compares are `wide`'s; one `unsafe` call, to the quiet loop compiled for
//! AVX2 when the kernels run AVX2.

use crate::batch::SkipMask;
use crate::kernel::prefetch;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use wide::{i16x8, i32x8, i8x16};

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

/// The largest window with 16-bit slots and a bucket per row (32-bit slots and a bucket per
/// two rows above).
const SMALL_WINDOW: usize = 8192;

/// Rows looked up at most between two checks for a sweep (a batch is cut into chunks of this
/// many).
const CHUNK: usize = 1024;

/// How many rows ahead [`Dedup::mark`] and [`Dedup::feed`] prefetch buckets. Measured with
/// the previous table of two-line buckets (train, 10 M rows × 32, transforms and a window of
/// 1000 rows, medians of interleaved runs): 48 against 16, +4 % with 1 thread, +4 % with 2,
/// +8 % with a window of 10⁶ rows; 96 was slower. With the one-line buckets, no prefetch
/// beyond a batch's first rows measured the same (+3 % / −1 %, within the noise), and 16 and
/// 128 no better in the predict-and-mark harness.
const PREFETCH_ROWS: usize = 48;

/// Slots per bucket.
const WAYS: usize = 8;

/// One bucket's 8 slots as lanes of a SIMD integer vector: each slot's fingerprint tag and the
/// number of the row last seen with it, both truncated to the lane width. A slot's *age* at a
/// row is the lanes' wrapping difference of the row numbers; sweeps keep every age below the
/// lanes' sign bit, so a slot is within the window when its age is at most the window.
trait Slots: Copy {
    /// The largest window the lanes keep exact.
    const MAX_WINDOW: usize;
    /// Most rows between two sweeps.
    const SWEEP: i64;
    /// A row number (or the window) in every lane.
    type Lanes: Copy;
    /// `x` truncated to a lane, in every lane.
    fn splat(x: i64) -> Self::Lanes;
    /// Each lane + 1: the next row's lanes.
    fn next(row: Self::Lanes) -> Self::Lanes;
    /// Slots that are all out of the window at `row`.
    fn dead(row: i64, window: i64) -> Self;
    /// Bit masks of the slots that hold `fp`'s tag and are within the window at `row` (hits),
    /// and of those out of it (dead); `row` and `window` in lanes ([`Slots::splat`]).
    fn probe(&self, fp: u64, row: Self::Lanes, window: Self::Lanes) -> (u32, u32);
    /// Slot `s` now holds `fp`, seen at `row`.
    fn set(&mut self, s: usize, fp: u64, row: i64);
    /// How many rows before `row` slot `s` was last seen.
    fn age(&self, s: usize, row: i64) -> i64;
    /// Sets the slots out of the window at `row` back to just out of it.
    fn sweep(&mut self, row: i64, window: i64);
}

/// A [`Slots`] type of lanes `$lane` in vectors `$v`, its tag from `fp` by `$tag`, the bit
/// masks of its (hits, dead) lane masks by `$masks`.
macro_rules! slots {
    ($name:ident, $lane:ty, $v:ty, $align:literal, $max:expr, $sweep:expr, $tag:expr, $masks:expr) => {
        #[derive(Debug, Clone, Copy)]
        #[repr(C, align($align))]
        struct $name {
            tags: [$lane; WAYS],
            rows: [$lane; WAYS],
        }

        impl $name {
            #[inline(always)]
            fn tag(fp: u64) -> $lane {
                $tag(fp)
            }

            /// Which lanes' ages at `row` exceed `window` (a mask).
            #[inline(always)]
            fn out(&self, row: $v, window: $v) -> $v {
                (row - <$v>::from(self.rows)).simd_gt(window)
            }
        }

        impl Slots for $name {
            const MAX_WINDOW: usize = $max;
            const SWEEP: i64 = $sweep;
            type Lanes = $v;

            #[inline(always)]
            fn splat(x: i64) -> $v {
                <$v>::splat(x as $lane)
            }

            #[inline(always)]
            fn next(row: $v) -> $v {
                row + <$v>::splat(1)
            }

            fn dead(row: i64, window: i64) -> Self {
                $name { tags: [0; WAYS], rows: [(row - window - 1) as $lane; WAYS] }
            }

            #[inline(always)]
            fn probe(&self, fp: u64, row: $v, window: $v) -> (u32, u32) {
                let dead = self.out(row, window);
                let tagged = <$v>::from(self.tags).simd_eq(<$v>::splat(Self::tag(fp)));
                $masks(tagged & !dead, dead)
            }

            #[inline(always)]
            fn set(&mut self, s: usize, fp: u64, row: i64) {
                self.tags[s] = Self::tag(fp);
                self.rows[s] = row as $lane;
            }

            #[inline(always)]
            fn age(&self, s: usize, row: i64) -> i64 {
                (row as $lane).wrapping_sub(self.rows[s]) as i64
            }

            fn sweep(&mut self, row: i64, window: i64) {
                let dead = self.out(Self::splat(row), Self::splat(window));
                let gone = <$v>::splat((row - window - 1) as $lane);
                self.rows = dead.select(gone, <$v>::from(self.rows)).to_array();
            }
        }
    };
}

// 16-bit lanes: ages stay below window + 1 + SWEEP + CHUNK ≤ 17 409 < 2^15 (a seek sweeps
// first). The tag is the fingerprint's top 16 bits (buckets take bits 32 up to 44).
// Both masks in one movemask: packed to bytes side by side.
slots!(Slots16, i16, i16x8, 32, SMALL_WINDOW, 8192, |fp: u64| (fp >> 48) as i16, |hits: i16x8, dead: i16x8| {
    let m = i8x16::from_i16x16_saturate(bytemuck::cast([hits, dead])).to_bitmask();
    (m & 0xff, m >> 8)
});
// 32-bit lanes: ages stay below 2^29 + 1 + 2^28 + CHUNK < 2^31. The tag is the low half.
slots!(Slots32, i32, i32x8, 64, 1 << 29, 1 << 28, |fp: u64| fp as i32, |hits: i32x8, dead: i32x8| (hits.to_bitmask(), dead.to_bitmask()));

/// The window's buckets and its ring of fingerprints.
#[derive(Debug, Clone)]
struct Table<S> {
    buckets: Vec<S>,
    /// The fingerprint of each row at its row number modulo the length (a power of two, at
    /// least the window): a tag's match is confirmed against it.
    ring: Vec<u64>,
    /// The row of the last sweep.
    swept: i64,
}

/// The table, with the lanes the window's length calls for.
#[derive(Debug, Clone)]
enum Tables {
    Small(Table<Slots16>),
    Large(Table<Slots32>),
}

/// `$body` with `$t` bound to the table of `$tables`, whichever its lanes.
macro_rules! with_table {
    ($tables:expr, $t:ident => $body:expr) => {
        match $tables {
            Tables::Small($t) => $body,
            Tables::Large($t) => $body,
        }
    };
}

/// The window's state.
#[derive(Debug, Clone)]
pub struct Dedup {
    window: i64,
    /// The number of the next row (0-based).
    row: i64,
    table: Tables,
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

impl<S: Slots> Table<S> {
    /// A table of `buckets` buckets and a ring of `ring` fingerprints (powers of two), or None
    /// when they cannot be allocated.
    fn try_new(buckets: usize, ring: usize, window: i64) -> Option<Self> {
        let (mut b, mut r) = (Vec::new(), Vec::new());
        b.try_reserve_exact(buckets).ok()?;
        r.try_reserve_exact(ring).ok()?;
        b.resize(buckets, S::dead(0, window));
        r.resize(ring, 0);
        Some(Table { buckets: b, ring: r, swept: 0 })
    }

    fn memory_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<S>() + self.ring.len() * std::mem::size_of::<u64>()
    }

    /// Sweeps every slot at `row`.
    fn sweep(&mut self, row: i64, window: i64) {
        self.buckets.iter_mut().for_each(|b| b.sweep(row, window));
        self.swept = row;
    }

    /// Moves the table from row `from` to row `to` (ahead) without seeing the rows between:
    /// a jump of the window's length or more leaves every slot out of it.
    fn skip(&mut self, from: i64, to: i64, window: i64) {
        if to - from >= window {
            self.buckets.fill(S::dead(to, window));
            self.swept = to;
        } else {
            self.sweep(from, window);
        }
    }

    /// The lookups and entries of the rows of `fps` (at most [`CHUNK`], the first numbered
    /// `first`) in order, calling `dup(r)` for each duplicate row `r`. A row's bucket is
    /// prefetched [`PREFETCH_ROWS`] rows before its lookup: a window larger than the caches
    /// (or last written by another shard's core) then costs one memory latency per row,
    /// overlapped.
    ///
    /// `QUIET` (the stash was empty at the start): the predicted case — no live slot with
    /// the row's tag, the stash still empty, a slot out of the window — is decided with no
    /// call on its path, and other rows go through [`Around::step`] out of line. Else (a stash
    /// with entries, as a window of 10^5 rows or more almost always has) every row goes
    /// through `step` inlined.
    #[inline(always)]
    fn lookups(&mut self, stash: &mut Stash, first: i64, window: i64, fps: &[u64], dup: &mut impl FnMut(usize)) {
        debug_assert!(fps.len() <= CHUNK);
        if first - self.swept >= S::SWEEP {
            self.sweep(first, window);
        }
        let (mask, rmask) = (self.buckets.len() - 1, self.ring.len() - 1);
        let (buckets, ring) = (&mut self.buckets[..=mask], &mut self.ring[..=rmask]);
        for &fp in fps.iter().take(PREFETCH_ROWS) {
            prefetch(std::slice::from_ref(&buckets[bucket_of(fp, mask)]));
        }
        let mut at = Around { stash, stashed: false, window };
        if at.stash.map.is_empty() {
            run::<S, true>(buckets, ring, &mut at, first, fps, dup);
        } else {
            at.stashed = true;
            run::<S, false>(buckets, ring, &mut at, first, fps, dup);
        }
    }
}

/// What a row's lookup reads and writes besides its bucket and the ring: the stash, whether
/// the stash may hold entries (set when one is entered; the map is pruned empty only after a
/// batch), the window.
struct Around<'t> {
    stash: &'t mut Stash,
    stashed: bool,
    window: i64,
}

/// The loop of [`Table::lookups`] over its table's buckets and ring (each sliced to its mask,
/// so an index needs no bounds check). The row number and the window stay in lanes, the
/// former stepped a row at a time. With `QUIET`, stretches of predicted rows go through
/// [`quiet`] (no call in its loop, so nothing is spilled around one) and the row that ends a
/// stretch through [`Around::step`] out of line, until a row is stashed.
#[inline(always)]
fn run<S: Slots, const QUIET: bool>(
    buckets: &mut [S],
    ring: &mut [u64],
    at: &mut Around<'_>,
    first: i64,
    fps: &[u64],
    dup: &mut impl FnMut(usize),
) {
    let (mask, rmask) = (buckets.len() - 1, ring.len() - 1);
    let (mut lanes, window) = (S::splat(first), S::splat(at.window));
    let mut r = 0;
    while r < fps.len() {
        if QUIET && !at.stashed {
            let stop = quiet_loop(buckets, ring, first, fps, r, window);
            if stop == fps.len() {
                return;
            }
            (r, lanes) = (stop, S::splat(first + stop as i64));
        }
        let fp = fps[r];
        if let Some(&ahead) = fps.get(r + PREFETCH_ROWS) {
            prefetch(std::slice::from_ref(&buckets[bucket_of(ahead, mask)]));
        }
        let row = first + r as i64;
        let bucket = &mut buckets[bucket_of(fp, mask)];
        let probe = bucket.probe(fp, lanes, window);
        lanes = S::next(lanes);
        let seen = if QUIET { at.step_cold(bucket, probe, ring, fp, row) } else { at.step(bucket, probe, ring, fp, row) };
        // After the lookup: the row a window's length back may share this position.
        ring[row as usize & rmask] = fp;
        if seen {
            dup(r);
        }
        r += 1;
    }
}

/// The rows of `fps` from `from` on while each is the predicted case of a window whose stash
/// is empty: no live slot with the row's tag, and a slot out of the window, which the row
/// takes. Returns the first row that is not (left untouched), or the length. Rows
/// [`PREFETCH_ROWS`] from the end and more prefetch without a check.
#[inline(always)]
fn quiet<S: Slots>(buckets: &mut [S], ring: &mut [u64], first: i64, fps: &[u64], from: usize, window: S::Lanes) -> usize {
    let (mask, rmask) = (buckets.len() - 1, ring.len() - 1);
    let mut lanes = S::splat(first + from as i64);
    let mut take = |r: usize, fp: u64, ahead: Option<u64>| {
        if let Some(ahead) = ahead {
            prefetch(std::slice::from_ref(&buckets[bucket_of(ahead, mask)]));
        }
        let row = first + r as i64;
        let bucket = &mut buckets[bucket_of(fp, mask)];
        let (hits, dead) = bucket.probe(fp, lanes, window);
        if (hits != 0) | (dead == 0) {
            return false;
        }
        bucket.set(dead.trailing_zeros() as usize, fp, row);
        ring[row as usize & rmask] = fp;
        lanes = S::next(lanes);
        true
    };
    let (mut r, ahead) = (from, fps.get(PREFETCH_ROWS..).unwrap_or_default());
    while r < ahead.len() {
        if !take(r, fps[r], Some(ahead[r])) {
            return r;
        }
        r += 1;
    }
    while r < fps.len() {
        if !take(r, fps[r], None) {
            return r;
        }
        r += 1;
    }
    fps.len()
}

/// [`quiet`], compiled for AVX2 where the kernels run AVX2 (its 128-bit compares VEX-encoded,
/// a tag splat by one broadcast), else for the baseline.
#[inline(never)]
fn quiet_loop<S: Slots>(buckets: &mut [S], ring: &mut [u64], first: i64, fps: &[u64], from: usize, window: S::Lanes) -> usize {
    #[cfg(target_arch = "x86_64")]
    if crate::kernel::isa() == crate::kernel::Isa::Avx2 {
        #[target_feature(enable = "avx2")]
        fn avx2<S: Slots>(buckets: &mut [S], ring: &mut [u64], first: i64, fps: &[u64], from: usize, window: S::Lanes) -> usize {
            quiet(buckets, ring, first, fps, from, window)
        }
        // SAFETY: `Isa::Avx2` is only selected when the CPU has AVX2.
        return unsafe { avx2(buckets, ring, first, fps, from, window) };
    }
    quiet(buckets, ring, first, fps, from, window)
}

/// The bucket of `fp` in a table of `mask` + 1: its high bits (the stash's filter takes low
/// ones).
#[inline(always)]
fn bucket_of(fp: u64, mask: usize) -> usize {
    (fp >> 32) as usize & mask
}

impl Around<'_> {
    /// One row's whole lookup and entry (row number `row`) in its bucket, whose probe gave
    /// `hits` and `dead`: true when `fp` is in a slot (a hit whose row in the ring had `fp`)
    /// or in the stash within the window. The stash is searched out of line, only when it may
    /// hold entries and its filter may hold `fp`.
    #[inline(always)]
    fn step<S: Slots>(&mut self, bucket: &mut S, (hits, dead): (u32, u32), ring: &[u64], fp: u64, row: i64) -> bool {
        let at = |b: &S, s: usize| (row - b.age(s, row)) as usize & (ring.len() - 1);
        let mut h = hits;
        while h != 0 {
            let s = h.trailing_zeros() as usize;
            if ring[at(bucket, s)] == fp {
                bucket.set(s, fp, row);
                return true;
            }
            h &= h - 1;
        }
        if self.stashed && self.stash.may_hold(fp) && self.stash.refresh(fp, row, self.window) {
            return true;
        }
        let s = if dead != 0 {
            dead.trailing_zeros() as usize
        } else {
            // Every slot is within the window: the oldest entry moves to the stash.
            let s = (0..WAYS).max_by_key(|&s| bucket.age(s, row)).unwrap_or(0);
            self.stash.insert(ring[at(bucket, s)], row - bucket.age(s, row), row, self.window);
            self.stashed = true;
            s
        };
        bucket.set(s, fp, row);
        false
    }

    /// [`Around::step`] out of line.
    #[cold]
    #[inline(never)]
    fn step_cold<S: Slots>(&mut self, bucket: &mut S, probe: (u32, u32), ring: &[u64], fp: u64, row: i64) -> bool {
        self.step(bucket, probe, ring, fp, row)
    }
}

impl Dedup {
    /// A window over the last `window` rows (≥ 1). Panics when its table cannot be allocated:
    /// see [`Dedup::try_new`].
    pub fn new(window: usize) -> Self {
        Self::try_new(window).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A window over the last `window` rows (≥ 1), or why its table (about 40·`window` bytes)
    /// cannot be allocated.
    pub fn try_new(window: usize) -> Result<Self, String> {
        let window = window.max(1);
        let too_big = || {
            format!(
                "a window of {window} rows needs about {:.1} GB of memory for its table, more than this machine can allocate",
                window as f64 * 40e-9
            )
        };
        if window > Slots32::MAX_WINDOW {
            return Err(too_big());
        }
        let ring = window.next_power_of_two();
        let w = window as i64;
        // A small window takes a bucket per row: almost no bucket then has 8 live slots, and
        // the stash stays empty.
        let table = if window <= Slots16::MAX_WINDOW {
            Tables::Small(Table::try_new(window.next_power_of_two(), ring, w).ok_or_else(too_big)?)
        } else {
            Tables::Large(Table::try_new(window.div_ceil(2).next_power_of_two(), ring, w).ok_or_else(too_big)?)
        };
        Ok(Dedup {
            window: w,
            row: 0,
            table,
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

    /// The memory the window holds now, in bytes: its table and ring, the stash (at its
    /// capacity) and the stash's filter.
    pub fn memory_bytes(&self) -> usize {
        let stash = self.stash.map.capacity() * (std::mem::size_of::<(u64, i64)>() + 1);
        with_table!(&self.table, t => t.memory_bytes()) + stash + self.stash.filter.len() * 8
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
        let to = row as i64;
        if to <= self.row {
            return;
        }
        with_table!(&mut self.table, t => t.skip(self.row, to, self.window));
        self.row = to;
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

    /// Enters the rows of `fps` into the window in order, [`CHUNK`] rows at a time, calling
    /// `dup(r)` for each row `r` that is a duplicate.
    #[inline(always)]
    fn steps(&mut self, fps: &[u64], mut dup: impl FnMut(usize)) {
        for (k, chunk) in fps.chunks(CHUNK).enumerate() {
            let mut dup = |r| dup(k * CHUNK + r);
            with_table!(&mut self.table, t => t.lookups(&mut self.stash, self.row, self.window, chunk, &mut dup));
            self.row += chunk.len() as i64;
        }
    }
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
    fn memory_is_about_40_bytes_per_row_of_the_window() {
        for window in [1000usize, 8192, 10_000, 100_000] {
            let bytes = Dedup::new(window).memory_bytes();
            // 32 bytes of buckets and 8 of ring per row; the table and the ring round up to
            // powers of two (at most twice the size); the stash's filter and map add a few KB.
            assert!((40 * window..2 * 40 * window + 16384).contains(&bytes), "{window}: {bytes}");
        }
    }

    /// What [`Dedup`] must answer, the slow way: the rows given so far (by number), and a
    /// row is a duplicate when one of the `window` rows before it was given with its value.
    struct Naive {
        window: u64,
        row: u64,
        last: HashMap<u64, u64>,
    }

    impl Naive {
        fn is_duplicate(&mut self, fp: u64) -> bool {
            let dup = self.last.get(&fp).is_some_and(|&at| self.row - at <= self.window);
            self.last.insert(fp, self.row);
            self.row += 1;
            dup
        }
    }

    #[test]
    fn long_streams_with_jumps_agree_with_the_naive_window() {
        // Hundreds of thousands of rows (the 16-bit row numbers wrap round many times, the
        // slots are swept), values that come back after gaps of every length, and jumps ahead
        // of every size (as a shard's own window makes): small and large lanes, at and across
        // the sizes where the table changes.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for window in [1usize, 5, 1000, 8191, 8192, 8193, 40_000] {
            let (mut d, mut naive) = (Dedup::new(window), Naive { window: window as u64, row: 0, last: HashMap::new() });
            let values = (window as u64 * 3).max(16);
            for k in 0..400 {
                // The first 100 000 rows or so without jumps (only sweeps keep ages exact).
                let jump = match next() % 8 {
                    _ if k < 100 => 0,
                    0 => next() % (window as u64 + 2),
                    1 => window as u64 + next() % 70_000,
                    _ => 0,
                };
                naive.row += jump;
                d.seek(naive.row);
                let batch: Vec<u64> = (0..next() % 2000).map(|_| (next() % values).wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
                let mut skip = [0; BATCH_ROWS / 64];
                for part in batch.chunks(BATCH_ROWS) {
                    d.mark(part, &mut skip);
                    for (r, &fp) in part.iter().enumerate() {
                        assert_eq!(skipped(&skip, r), naive.is_duplicate(fp), "window {window}, row {}", naive.row - 1);
                    }
                    skip = [0; BATCH_ROWS / 64];
                }
                assert_eq!(d.next_row(), naive.row);
            }
        }
    }

    #[test]
    fn equal_tags_are_told_apart_by_the_ring() {
        // Fingerprints that share their bucket and tag (all high bits) and differ only in the
        // low ones: every lookup has tag matches, and only the ring tells them apart.
        for window in [100usize, 20_000] {
            let mut d = Dedup::new(window);
            let mut naive = Naive { window: window as u64, row: 0, last: HashMap::new() };
            for i in 0..50_000u64 {
                let fp = 0xabcd_0123_0000_0000 | (i * 7 % 13);
                assert_eq!(d.is_duplicate(fp), naive.is_duplicate(fp), "window {window}, row {i}");
            }
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
