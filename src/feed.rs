//! A shard's own input when a text file is split among the shards ([`SplitText`]): the shard
//! parses its ranges into its own columnar batches and learns them — no producer thread and
//! no ring in between.
//!
//! Ranges are dealt round-robin (range `i` to shard `i mod n`) in rounds of `merge_every`
//! ranges per shard; every shard merges at the end of each round, and once more at the end,
//! so sync merges meet at their barrier whatever each shard's share. A stop (a signal, a
//! shard's failure, a parse error) ends the run at the end of the round it is noticed in: the
//! shard that notices lowers the last round before arriving at that round's barrier, so every
//! shard reads the same last round after it.
//!
//! Rows are numbered by their position within a range ([`position`]) until the run ends and
//! every range's counts give the stream's numbers ([`Numbering`](crate::source::split::Numbering)). No `unsafe` here.

use crate::batch::{Batch, OwnedBatch, Payload};
use crate::ring::Ring;
use crate::source::split::{lines, position, SplitText};
use crate::source::{ParseError, TextParser};
use crate::window::WindowTag;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// What the shards of one split run share.
pub struct SplitRun<'a> {
    text: &'a SplitText,
    parser: TextParser<std::io::Empty>,
    skip_bad: bool,
    shards: u64,
    per_round: u64,
    rounds: u64,
    /// No round at or after this one starts.
    last_round: AtomicU64,
    /// The first range with a malformed line that stops the run: later ones are not started.
    failed_at: AtomicU64,
    /// Rows parsed so far, all shards (for the progress bar).
    parsed: AtomicU64,
    stop: Option<&'a AtomicBool>,
    failed: &'a AtomicBool,
    checkpoint_rows: Option<u64>,
}

impl<'a> SplitRun<'a> {
    /// `shards` shards parsing `text` with copies of `parser`, merging every `merge_every`
    /// ranges each; `stop` and `failed` end the run at the end of a round; with
    /// `checkpoint_rows`, about every that many rows a merge asks for a checkpoint.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        text: &'a SplitText,
        parser: TextParser<std::io::Empty>,
        skip_bad: bool,
        shards: usize,
        merge_every: usize,
        stop: Option<&'a AtomicBool>,
        failed: &'a AtomicBool,
        checkpoint_rows: Option<u64>,
    ) -> Self {
        let (shards, per_round) = (shards.max(1) as u64, merge_every.max(1) as u64);
        let rounds = text.ranges().div_ceil(shards * per_round).max(1);
        SplitRun {
            text,
            parser,
            skip_bad,
            shards,
            per_round,
            rounds,
            last_round: AtomicU64::new(u64::MAX),
            failed_at: AtomicU64::new(u64::MAX),
            parsed: AtomicU64::new(0),
            stop,
            failed,
            checkpoint_rows,
        }
    }

    /// Rows parsed so far by all shards.
    pub fn parsed(&self) -> u64 {
        self.parsed.load(Ordering::Relaxed)
    }

    fn stopping(&self) -> bool {
        self.failed.load(Ordering::Acquire) || self.stop.is_some_and(|s| s.load(Ordering::Acquire))
    }

    /// Whether round `r` starts (read after round `r - 1`'s merge).
    fn starts(&self, r: u64) -> bool {
        r < self.rounds && r < self.last_round.load(Ordering::Acquire)
    }
}

/// What a shard's feed saw, for the run's report once every shard is done.
#[derive(Debug, Default)]
pub struct FeedTally {
    /// Rows parsed into batches.
    pub rows: u64,
    /// Per range parsed to its end: `(range, rows, lines)`.
    pub counts: Vec<(u64, u64, u64)>,
    /// Malformed lines skipped (`--skip-bad`).
    pub rejected: u64,
    /// The first of them: its position, range and error (line numbered within the range).
    pub first_rejected: Option<(u64, u64, ParseError)>,
    /// The malformed line that stopped the run (without `--skip-bad`): its range and error.
    pub failure: Option<(u64, ParseError)>,
}

/// The range being parsed.
struct Current<'t> {
    range: u64,
    rest: &'t [u8],
    rows: u64,
}

/// One shard's feed: its ranges, parsed, then merge markers.
pub struct SplitFeed<'a> {
    run: &'a SplitRun<'a>,
    id: u64,
    parser: TextParser<std::io::Empty>,
    /// The shard's two buffers: one being learned, one being filled.
    pool: &'a Ring<Box<OwnedBatch>>,
    row: Vec<f32>,
    round: u64,
    /// Ranges of this round claimed so far.
    taken: u64,
    /// This round's merge has been sent.
    merged: bool,
    current: Option<Current<'a>>,
    seq: u64,
    /// The final merge has been sent.
    done: bool,
    since_checkpoint: u64,
    tally: FeedTally,
}

impl<'a> SplitFeed<'a> {
    /// The feed of shard `id`; `pool` holds its buffers (the shard returns each after
    /// learning it).
    pub fn new(run: &'a SplitRun<'a>, id: usize, pool: &'a Ring<Box<OwnedBatch>>) -> Self {
        SplitFeed {
            run,
            id: id as u64,
            parser: run.parser.detached(std::io::empty(), 0),
            pool,
            row: vec![0.0; run.parser.features()],
            round: 0,
            taken: 0,
            merged: false,
            current: None,
            seq: 0,
            done: false,
            since_checkpoint: 0,
            tally: FeedTally::default(),
        }
    }

    /// The next batch to learn, or merge marker; `None` once the run is over.
    pub fn next_batch(&mut self) -> Option<Batch> {
        let run = self.run;
        loop {
            if self.done {
                return None;
            }
            if self.current.is_some() {
                if let Some(batch) = self.parse() {
                    return Some(batch);
                }
                continue;
            }
            if self.merged {
                // Read after the round's merge, so every shard decides alike.
                self.merged = false;
                self.round += 1;
                self.taken = 0;
                if !run.starts(self.round) {
                    self.done = true;
                    return Some(self.marker(run.checkpoint_rows.is_some()));
                }
                continue;
            }
            if self.taken == run.per_round {
                self.merged = true;
                let due = self.since_checkpoint.saturating_mul(run.shards) >= run.checkpoint_rows.unwrap_or(u64::MAX);
                if due {
                    self.since_checkpoint = 0;
                }
                return Some(self.marker(due));
            }
            let range = (self.round * run.per_round + self.taken) * run.shards + self.id;
            self.taken += 1;
            if run.stopping() {
                // Nobody starts the next round; this one's other ranges are left.
                run.last_round.fetch_min(self.round + 1, Ordering::AcqRel);
                self.taken = run.per_round;
            } else if range < run.text.ranges() && range < run.failed_at.load(Ordering::Acquire) {
                self.parser.restart_lines(0);
                self.current = Some(Current { range, rest: run.text.range(range), rows: 0 });
            }
        }
    }

    fn marker(&self, checkpoint: bool) -> Batch {
        Batch { payload: Payload::Merge { checkpoint }, ingest: Instant::now(), seq: self.seq, first_row: 0, window: WindowTag::default() }
    }

    /// Parses up to a batch of the current range; `None` when it held no more rows.
    fn parse(&mut self) -> Option<Batch> {
        let ingest = Instant::now();
        let Some(mut buf) = self.pool.pop() else {
            // The pool closes only when this shard panics: nothing more to read.
            self.current = None;
            self.done = true;
            return None;
        };
        buf.clear();
        let cur = self.current.as_mut()?;
        let first = position(cur.range, cur.rows);
        let mut it = lines(cur.rest);
        while !buf.is_full() {
            let Some(line) = it.next() else { break };
            cur.rest = &cur.rest[line.len()..];
            match self.parser.parse_record(line, &mut self.row) {
                Ok(Some(r)) => {
                    buf.push(&self.row, r.label, r.weight);
                    cur.rows += 1;
                }
                Ok(None) => {}
                Err(e) if self.run.skip_bad && !e.fatal => {
                    self.tally.rejected += 1;
                    self.tally.first_rejected.get_or_insert((position(cur.range, cur.rows), cur.range, e));
                }
                Err(e) => {
                    // The rows before it are learned; the run ends with this round, and no
                    // later range is started.
                    self.tally.failure.get_or_insert((cur.range, e));
                    self.run.failed_at.fetch_min(cur.range, Ordering::AcqRel);
                    self.run.last_round.fetch_min(self.round + 1, Ordering::AcqRel);
                    cur.rest = &[];
                    break;
                }
            }
        }
        let rows = buf.rows as u64;
        if cur.rest.is_empty() {
            if self.tally.failure.is_none() {
                self.tally.counts.push((cur.range, cur.rows, self.parser.line_no()));
            }
            self.current = None;
        }
        if rows == 0 {
            let _ = self.pool.push(buf);
            return None;
        }
        self.tally.rows += rows;
        self.run.parsed.fetch_add(rows, Ordering::Relaxed);
        self.since_checkpoint += rows;
        let seq = self.seq;
        self.seq += 1;
        Some(Batch { payload: Payload::Owned(buf), ingest, seq, first_row: first, window: WindowTag::default() })
    }

    /// What the feed saw.
    pub fn finish(self) -> FeedTally {
        self.tally
    }
}
