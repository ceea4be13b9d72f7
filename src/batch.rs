//! What travels through the rings: a reference to rows of a memory-mapped block (zero copy), or
//! a pooled columnar buffer filled by a text source, or a control marker (merge, stop).
//! No `unsafe` here.

use crate::dataset::header::STRIDE_ROWS;
use std::time::Instant;

/// Rows per pooled text batch (the same as a default `.ssgd` block).
pub const BATCH_ROWS: usize = 1024;

/// This machine's physical memory in bytes (`None` where it cannot be asked).
pub fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf(3) takes a name constant and has no other effect.
        let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        if pages > 0 && size > 0 {
            return Some(pages as u64 * size as u64);
        }
    }
    None
}

/// Checks, before it is asked for, that `bytes` of buffers fit in half of this machine's
/// memory: a row too wide (a huge LibSVM index, a million CSV columns) is then an error that
/// says what needs the memory (`what`) and what to change, not an allocation abort.
pub fn check_memory(bytes: u64, what: impl FnOnce() -> String) -> Result<(), String> {
    let budget = physical_memory().map_or(u64::MAX, |m| m / 2);
    if bytes > budget {
        return Err(format!(
            "{} need {:.1} GB, more than half this machine's memory ({:.1} GB): dense rows this wide do not fit (sparse input is not supported yet)",
            what(),
            bytes as f64 / 1e9,
            budget as f64 * 2.0 / 1e9
        ));
    }
    Ok(())
}

/// A columnar buffer owned by the pipeline and recycled through the return ring.
#[derive(Debug, Clone)]
pub struct OwnedBatch {
    /// Feature columns, column `j` at `j * stride`.
    pub data: Vec<f32>,
    /// Labels (`rows` valid).
    pub labels: Vec<f32>,
    /// Weights (`rows` valid); used when `has_weights`.
    pub weights: Vec<f32>,
    /// Whether the weights are meaningful.
    pub has_weights: bool,
    /// Column stride = capacity in rows.
    pub stride: usize,
    /// Feature count.
    pub d: usize,
    /// Rows filled.
    pub rows: usize,
}

impl OwnedBatch {
    /// An empty buffer for `cap` rows of `d` features (capacity rounded up to 16 rows).
    pub fn new(d: usize, cap: usize) -> Self {
        let stride = cap.div_ceil(STRIDE_ROWS) * STRIDE_ROWS;
        OwnedBatch {
            data: vec![0.0; d * stride],
            labels: vec![0.0; stride],
            weights: vec![1.0; stride],
            has_weights: false,
            stride,
            d,
            rows: 0,
        }
    }

    /// True when no more rows fit.
    pub fn is_full(&self) -> bool {
        self.rows == self.stride
    }

    /// Empties the buffer (keeps the memory).
    pub fn clear(&mut self) {
        self.rows = 0;
        self.has_weights = false;
    }

    /// Appends a row (panics when full: check [`OwnedBatch::is_full`]).
    #[inline]
    pub fn push(&mut self, x: &[f32], y: f32, w: f32) {
        let r = self.rows;
        assert!(r < self.stride && x.len() == self.d, "batch full or wrong width");
        for (j, &v) in x.iter().enumerate() {
            self.data[j * self.stride + r] = v;
        }
        self.labels[r] = y;
        self.weights[r] = w;
        self.has_weights |= w != 1.0;
        self.rows += 1;
    }
}

/// Most block segments one mapped batch carries. With `--dedup-window`, a batch is one turn at
/// a shared window, or one look-back for a shard's own: bundling consecutive segments keeps a
/// shared window's cache lines on one core for several thousand rows, instead of moving them
/// between cores every block, and feeds an own window the look-back once per bundle.
pub const MAX_SEGMENTS: usize = 8;

/// Most look-back segments a mapped batch carries (`Payload::Mapped::back`): the rows of the
/// stream just before it, for a shard's own duplicate window. A window of N rows needs
/// ⌈N / segment rows⌉ + 1 segments, plus one for each short segment among them (a file's last
/// block, the block the holdout cuts): see [`own_window_fits`].
pub const MAX_BACK: usize = 7;

/// Whether a duplicate window of `window` rows is short enough for shards to keep windows of
/// their own over a mapped file of `block_rows` rows per block (its batches then carry the
/// rows before them as look-back segments): 4096 rows for blocks of 1024 rows or more. Each
/// shard then also hashes and enters the look-back of the first batch of each stripe it is
/// dealt (up to 4096 rows per stripe of 1–4 batches of 8192; see `pipeline`): measured with 2
/// threads (before stripes, a look-back per batch), own windows were faster than a shared one
/// up to 4096 rows (33 against 27 M rows/s at 1000 rows, 27.7 against 24.9 at 4096) and
/// slower at 8192 (22 against 26).
pub fn own_window_fits(window: usize, block_rows: usize) -> bool {
    let segment = block_rows.clamp(1, BATCH_ROWS);
    window.div_ceil(segment) + 3 <= MAX_BACK
}

/// Rows `r0 .. r0 + n` of block `block` of a mapped dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Block index.
    pub block: u64,
    /// First row in the block.
    pub r0: usize,
    /// Rows.
    pub n: usize,
}

/// The rows a batch carries.
// A mapped batch's segments are inline (some 450 bytes): batches move through the rings by
// value, and boxing them would allocate for every batch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Payload {
    /// Consecutive segments of the mapped dataset's blocks (zero copy): `segments[..count]`.
    Mapped {
        /// The segments, in stream order.
        segments: [Segment; MAX_SEGMENTS],
        /// How many are used (≥ 1).
        count: usize,
        /// The segments of the stream's rows just before these, in stream order, as many as a
        /// shard's own duplicate window needs (none without one): `back[..back_count]`.
        back: [Segment; MAX_BACK],
        /// How many are used.
        back_count: usize,
    },
    /// A pooled buffer; goes back to the pool after learning.
    Owned(Box<OwnedBatch>),
    /// Merge epoch marker: every shard receives it in the same order; `checkpoint` asks the
    /// publishing shard to write a checkpoint after merging.
    Merge {
        /// Write a checkpoint after this merge.
        checkpoint: bool,
    },
}

/// Rows of a batch marked as duplicates (bit r = row r; batches carry at most [`BATCH_ROWS`]
/// rows).
pub type SkipMask = [u64; BATCH_ROWS / 64];

/// A unit of work for a shard.
#[derive(Debug)]
pub struct Batch {
    /// The rows (or a marker).
    pub payload: Payload,
    /// When the batch entered the pipeline — or, under `--rate`, when it was *meant* to
    /// (coordinated-omission-correct latency).
    pub ingest: Instant,
    /// Position of this data batch in the stream (0, 1, 2, …; markers reuse the last).
    pub seq: u64,
    /// Stream position (0-based data row) of the batch's first row.
    pub first_row: u64,
    /// Its event-time window (text sources with a timestamp column).
    pub window: crate::window::WindowTag,
}

/// Whether row `r` is marked in `mask`.
#[inline]
pub fn skipped(mask: &SkipMask, r: usize) -> bool {
    mask[r / 64] >> (r % 64) & 1 == 1
}

/// The rows among the first `n` that `mask` marks, in order: a word's set bits at a time, so
/// that a mini-batch with a few duplicates costs a few steps, not one per row.
pub fn skipped_rows(mask: &SkipMask, n: usize) -> impl Iterator<Item = usize> + '_ {
    mask.iter().enumerate().take(n.div_ceil(64)).flat_map(move |(w, &word)| {
        let left = n - 64 * w;
        let mut bits = if left >= 64 { word } else { word & ((1 << left) - 1) };
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                64 * w + b
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn skipped_rows_are_the_marked_rows(mask: [u64; BATCH_ROWS / 64], n in 0usize..=BATCH_ROWS, sparse in 0u32..4) {
            // Sparse masks too (a few duplicates per mini-batch), as well as dense random ones.
            let mask = mask.map(|w| (0..sparse).fold(w, |m, k| m & w.rotate_left(7 * k + 3)));
            let want: Vec<usize> = (0..n).filter(|&r| skipped(&mask, r)).collect();
            prop_assert_eq!(skipped_rows(&mask, n).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn skipped_rows_stop_at_n() {
        let mut mask = [0u64; BATCH_ROWS / 64];
        mask[0] = 1 << 63 | 1 << 5;
        mask[1] = 1;
        assert_eq!(skipped_rows(&mask, 0).count(), 0);
        assert_eq!(skipped_rows(&mask, 63).collect::<Vec<_>>(), [5]);
        assert_eq!(skipped_rows(&mask, 64).collect::<Vec<_>>(), [5, 63]);
        assert_eq!(skipped_rows(&mask, 65).collect::<Vec<_>>(), [5, 63, 64]);
    }
}
