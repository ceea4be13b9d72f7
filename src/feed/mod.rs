//! A shard's own input, read by the shard itself: no producer thread and no ring in between.
//!
//! - [`split`]: a text file split among the shards, or a stream dealt to them in chunks of
//!   lines; each shard parses its ranges.
//! - [`own`]: a source per shard (a Kafka consumer of the group: the partitions are spread over
//!   the shards by the brokers); each shard pulls its rows, learns them and tells its source
//!   (which commits what is learned).
//!
//! Either way a shard learns in rounds and merges at the end of each, and once more at the
//! end, so sync merges meet at their barrier whatever each shard's share. A stop (a signal, a
//! shard's failure, a bad line, the end of the input) ends the run at the end of the round it
//! is noticed in: the shard that notices lowers the last round before arriving at that round's
//! barrier, so every shard reads the same last round after it ([`Rounds`]). No `unsafe` here.

pub mod own;
pub mod split;

pub use own::{OwnFeed, OwnRun};
pub use split::{Chunk, Chunks, Ranges, SplitFeed, SplitRun};

use crate::batch::{Batch, Payload};
use crate::source::ParseError;
use crate::window::WindowTag;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// When a run's rounds end.
pub struct Rounds<'a> {
    /// No round at or after this one starts.
    last: AtomicU64,
    stop: Option<&'a AtomicBool>,
    failed: &'a AtomicBool,
}

impl<'a> Rounds<'a> {
    /// Rounds that `stop` (a signal) and `failed` (a shard's failure) end.
    pub fn new(stop: Option<&'a AtomicBool>, failed: &'a AtomicBool) -> Self {
        Rounds { last: AtomicU64::new(u64::MAX), stop, failed }
    }

    /// A stop was asked for, or a shard failed.
    pub fn stopping(&self) -> bool {
        self.failed() || self.stop.is_some_and(|s| s.load(Ordering::Acquire))
    }

    /// A shard failed (what it learned is not to be committed).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// No round after `round` starts (called before arriving at `round`'s merge).
    pub fn end_after(&self, round: u64) {
        self.last.fetch_min(round + 1, Ordering::AcqRel);
    }

    /// Whether round `r` may start (read after round `r - 1`'s merge).
    pub fn open(&self, r: u64) -> bool {
        r < self.last.load(Ordering::Acquire)
    }

    /// Whether any shard has ended the rounds.
    pub fn ending(&self) -> bool {
        self.last.load(Ordering::Acquire) != u64::MAX
    }
}

/// A merge marker after batch `seq` - 1; `checkpoint` asks for a checkpoint with it.
fn marker(seq: u64, checkpoint: bool) -> Batch {
    Batch { payload: Payload::Merge { checkpoint }, ingest: Instant::now(), seq, first_row: 0, window: WindowTag::default() }
}

/// What a shard's feed saw, for the run's report once every shard is done.
#[derive(Debug, Default)]
pub struct FeedTally {
    /// Rows parsed into batches.
    pub rows: u64,
    /// Per range parsed to its end: `(range, rows, lines)` (split files).
    pub counts: Vec<(u64, u64, u64)>,
    /// Malformed lines skipped (`--skip-bad`).
    pub rejected: u64,
    /// The first of them: its position, range and error (line numbered within the range).
    pub first_rejected: Option<(u64, u64, ParseError)>,
    /// The malformed line (or the source's failure) that stopped the run: its range and error.
    pub failure: Option<(u64, ParseError)>,
}

/// A shard's feed.
pub enum Feed<'a> {
    /// Ranges of a split file or chunks of a stream.
    Split(Box<SplitFeed<'a>>),
    /// A source of its own.
    Own(Box<OwnFeed<'a>>),
}

impl Feed<'_> {
    /// The next batch to learn, or merge marker; `None` once the run is over. Called once the
    /// batch before has been learned.
    pub fn next_batch(&mut self) -> Option<Batch> {
        match self {
            Feed::Split(f) => f.next_batch(),
            Feed::Own(f) => f.next_batch(),
        }
    }

    /// What the feed saw.
    pub fn finish(self) -> FeedTally {
        match self {
            Feed::Split(f) => (*f).finish(),
            Feed::Own(f) => (*f).finish(),
        }
    }
}
