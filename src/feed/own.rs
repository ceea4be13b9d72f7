//! A source per shard: each shard pulls rows from its own [`RowSource`] (a member of one Kafka
//! consumer group, the partitions spread over the members by the brokers) into its own
//! columnar batches, learns them, and then tells its source, which commits what is learned.
//!
//! A round ends once a shard has sent `merge_every` batches in it (with sync merges the others
//! then end theirs too, to meet it at the barrier) or after [`ROUND`], so a shard whose source
//! is idle or has ended still meets the others at their merges without holding them up long.
//! The run ends when a stop is asked for, a source fails, or every source has ended: with sync
//! merges at the end of the round it is noticed in (every shard reads the same last round),
//! with async merges as soon as each shard notices. Rows are numbered in the order the shards
//! take them. No `unsafe` here.

use super::{marker, FeedTally, Rounds};
use crate::batch::{Batch, OwnedBatch, Payload};
use crate::ring::Ring;
use crate::source::{Pull, RowSource};
use crate::window::WindowTag;
use crossbeam::utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The longest a round lasts: a shard with nothing to read waits at most this long at a merge
/// for the others, and sends its partial rounds' merges this often.
pub const ROUND: Duration = Duration::from_millis(100);

/// What a shard's source is doing, as the run's end is decided.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Share {
    /// Its last pull gave rows.
    Reading = 0,
    /// Its last pull gave none.
    Idle = 1,
    Ended = 2,
}

/// What the shards of one run with a source each share.
pub struct OwnRun<'a> {
    rounds: Rounds<'a>,
    sync: bool,
    skip_bad: bool,
    shards: u64,
    per_round: u64,
    checkpoint_rows: Option<u64>,
    shares: Vec<CachePadded<AtomicU8>>,
    /// Sync merges: rounds before this one are over (a shard has sent its batches of the
    /// round, and the others end theirs to meet it).
    closed: CachePadded<AtomicU64>,
    /// Rows taken so far, all shards: the progress bar, and the rows' numbers.
    taken: AtomicU64,
}

impl<'a> OwnRun<'a> {
    /// `shards` shards, merging every `merge_every` batches each (`sync`: at a barrier); `stop`
    /// and `failed` end the run; with `checkpoint_rows`, about every that many rows a merge
    /// asks for a checkpoint.
    pub fn new(
        shards: usize,
        merge_every: usize,
        sync: bool,
        skip_bad: bool,
        stop: Option<&'a AtomicBool>,
        failed: &'a AtomicBool,
        checkpoint_rows: Option<u64>,
    ) -> Self {
        OwnRun {
            rounds: Rounds::new(stop, failed),
            sync,
            skip_bad,
            shards: shards.max(1) as u64,
            per_round: merge_every.max(1) as u64,
            checkpoint_rows,
            shares: (0..shards.max(1)).map(|_| CachePadded::new(AtomicU8::new(Share::Reading as u8))).collect(),
            closed: CachePadded::new(AtomicU64::new(0)),
            taken: AtomicU64::new(0),
        }
    }

    /// Rows taken so far by all shards.
    pub fn parsed(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Every source has ended.
    fn over(&self) -> bool {
        self.shares.iter().all(|s| s.load(Ordering::Acquire) == Share::Ended as u8)
    }

    /// Another shard than `id` is reading rows.
    fn others_reading(&self, id: usize) -> bool {
        self.shares.iter().enumerate().any(|(i, s)| i != id && s.load(Ordering::Relaxed) == Share::Reading as u8)
    }

    /// Whether round `r` starts (read after round `r - 1`'s merge).
    fn starts(&self, r: u64) -> bool {
        if self.sync {
            self.rounds.open(r)
        } else {
            !self.rounds.ending()
        }
    }
}

/// One shard's feed from its own source.
pub struct OwnFeed<'a> {
    run: &'a OwnRun<'a>,
    id: usize,
    source: &'a mut (dyn RowSource + Send),
    /// The shard's two buffers: one being learned, one being filled.
    pool: &'a Ring<Box<OwnedBatch>>,
    row: Vec<f32>,
    share: Share,
    round: u64,
    round_start: Instant,
    /// Batches sent this round.
    taken: u64,
    /// This round's merge has been sent.
    merged: bool,
    /// Batches sent so far (the next one's number).
    seq: u64,
    /// The last batch sent has not been reported learned to the source yet.
    unacked: bool,
    done: bool,
    since_checkpoint: u64,
    tally: FeedTally,
}

impl<'a> OwnFeed<'a> {
    /// The feed of shard `id` from `source`; `pool` holds its buffers (the shard returns each
    /// after learning it).
    pub fn new(run: &'a OwnRun<'a>, id: usize, source: &'a mut (dyn RowSource + Send), pool: &'a Ring<Box<OwnedBatch>>) -> Self {
        OwnFeed {
            run,
            id,
            row: vec![0.0; source.features()],
            source,
            pool,
            share: Share::Reading,
            round: 0,
            round_start: Instant::now(),
            taken: 0,
            merged: false,
            seq: 0,
            unacked: false,
            done: false,
            since_checkpoint: 0,
            tally: FeedTally::default(),
        }
    }

    /// The next batch to learn, or merge marker; `None` once the run is over. Called once the
    /// batch before has been learned.
    pub fn next_batch(&mut self) -> Option<Batch> {
        let run = self.run;
        if std::mem::take(&mut self.unacked) {
            self.tell_learned(self.seq);
        }
        loop {
            if self.done {
                return None;
            }
            if self.merged {
                // Read after the round's merge, so every shard decides alike.
                self.merged = false;
                self.round += 1;
                self.taken = 0;
                self.round_start = Instant::now();
                if !run.starts(self.round) {
                    self.done = true;
                    // Everything sent has been learned: the final commit.
                    self.tell_learned(u64::MAX);
                    return Some(marker(self.seq, run.checkpoint_rows.is_some()));
                }
                continue;
            }
            let closed = run.sync && run.closed.load(Ordering::Acquire) > self.round;
            if self.taken >= run.per_round || closed || self.round_start.elapsed() >= ROUND {
                if run.sync {
                    run.closed.fetch_max(self.round + 1, Ordering::AcqRel);
                }
                self.merged = true;
                let due = self.since_checkpoint.saturating_mul(run.shards) >= run.checkpoint_rows.unwrap_or(u64::MAX);
                if due {
                    self.since_checkpoint = 0;
                }
                return Some(marker(self.seq, due));
            }
            if run.rounds.stopping() || run.over() {
                // Nobody starts the next round.
                run.rounds.end_after(self.round);
                self.taken = run.per_round;
                continue;
            }
            if self.share == Share::Ended {
                // Others may still read: wait for the round's end.
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if let Some(batch) = self.fill() {
                return Some(batch);
            }
        }
    }

    fn set_share(&mut self, share: Share) {
        if self.share != share {
            self.share = share;
            self.run.shares[self.id].store(share as u8, Ordering::Release);
        }
    }

    /// The source ended, or failed: nothing more is read from it.
    fn end(&mut self) {
        self.set_share(Share::Ended);
    }

    /// Tells the source that the batches before `seq` are learned (`u64::MAX`: the run ended
    /// well). Not after a failure: nothing past it is committed.
    fn tell_learned(&mut self, seq: u64) {
        if self.run.rounds.failed() || self.tally.failure.is_some() {
            return;
        }
        if let Err(e) = self.source.learned(seq) {
            self.tally.failure = Some((0, e));
            self.end();
            self.run.rounds.end_after(self.round);
        }
    }

    /// Pulls up to a batch of rows: what the source has now; `None` when it had none.
    fn fill(&mut self) -> Option<Batch> {
        let run = self.run;
        let Some(mut buf) = self.pool.pop() else {
            // The pool closes only when this shard panics: nothing more to read.
            self.done = true;
            return None;
        };
        buf.clear();
        let ingest = Instant::now();
        // An idle shard waits in its source only when no other reads: else it comes back
        // soon to meet the round's end.
        let wait = !run.others_reading(self.id);
        while !buf.is_full() {
            match self.source.pull(&mut self.row, buf.rows == 0 && wait) {
                Ok(Pull::Row(r)) => buf.push(&self.row, r.label, r.weight),
                // A live source with nothing new sends what the batch holds (no linger).
                Ok(Pull::Idle) if buf.rows > 0 => break,
                Ok(Pull::Idle) => {
                    self.set_share(Share::Idle);
                    // Meanwhile what is learned is committed (at the source's own interval).
                    self.tell_learned(self.seq);
                    if !wait {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    break;
                }
                Ok(Pull::End) => {
                    self.end();
                    break;
                }
                Err(e) if run.skip_bad && !e.fatal => {
                    self.tally.rejected += 1;
                    let at = run.taken.load(Ordering::Relaxed) + buf.rows as u64;
                    self.tally.first_rejected.get_or_insert((at, 0, e));
                }
                Err(e) => {
                    // The rows before it are learned; the run ends with this round.
                    self.tally.failure.get_or_insert((0, e));
                    self.end();
                    run.rounds.end_after(self.round);
                    break;
                }
            }
        }
        let rows = buf.rows as u64;
        if rows == 0 {
            let _ = self.pool.push(buf);
            return None;
        }
        if self.share == Share::Idle {
            self.set_share(Share::Reading);
        }
        let seq = self.seq;
        self.seq += 1;
        self.taken += 1;
        self.unacked = true;
        self.source.sent(seq, false);
        let ingest = self.source.take_origin().unwrap_or(ingest);
        let first_row = run.taken.fetch_add(rows, Ordering::Relaxed);
        self.tally.rows += rows;
        self.since_checkpoint += rows;
        Some(Batch { payload: Payload::Owned(buf), ingest, seq, first_row, window: WindowTag::default() })
    }

    /// What the feed saw.
    pub fn finish(self) -> FeedTally {
        self.tally
    }
}
