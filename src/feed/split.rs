//! A text file split among the shards ([`SplitText`]), or a stream dealt to them in chunks of
//! lines ([`Chunks`]): each shard parses its ranges into its own columnar batches.
//!
//! Ranges are dealt round-robin (range `i` to shard `i mod n`) in rounds of `merge_every`
//! ranges per shard. A stream's length is not known ahead: a shard starts the next round only
//! once its first chunk is known to exist (or the stream to have ended), which every shard
//! learns alike.
//!
//! Rows are numbered by their position within a range ([`position`]) until the run ends and
//! every range's counts give the stream's numbers ([`Numbering`](crate::source::split::Numbering)). No `unsafe` here.

use super::{FeedTally, Rounds};
use crate::batch::{Batch, OwnedBatch, Payload};
use crate::ring::Ring;
use crate::source::split::{lines, position, SplitText};
use crate::source::{ParseError, TextParser};
use crate::window::WindowTag;
use crossbeam::channel::Receiver;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Where a split run's ranges come from.
#[derive(Clone, Copy)]
pub enum Ranges<'a> {
    /// A mapped text file.
    File(&'a SplitText),
    /// A stream (stdin, a socket) cut into chunks of lines by one reader: chunk `i` goes to
    /// shard `i mod n` through its channel.
    Stream(&'a Chunks),
}

/// A chunk of whole lines of a stream.
pub struct Chunk {
    /// Its number in the stream (0, 1, 2, …).
    pub index: u64,
    /// Its lines.
    pub bytes: Vec<u8>,
    /// Its last line is the stream's, cut short (no newline) where records must end with
    /// one (a socket closed mid-record): that line is an error, not a row.
    pub unterminated: bool,
}

/// How far a stream's reader has got: chunks sent, and whether the stream has ended. A shard
/// deciding whether the next round starts waits until the round's first chunk is known to
/// exist or not, so every shard decides alike.
#[derive(Default)]
pub struct Chunks {
    state: Mutex<(u64, bool)>,
    grew: Condvar,
}

impl Chunks {
    /// Chunk `sent - 1` has been handed to its shard.
    pub fn sent(&self, sent: u64) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = sent;
        self.grew.notify_all();
    }

    /// The stream has ended (or stopped): no more chunks.
    pub fn end(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.grew.notify_all();
    }

    /// Whether chunk `i` exists (waits until that is known).
    fn exists(&self, i: u64) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.0 <= i && !st.1 {
            st = self.grew.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.0 > i
    }
}

/// What the shards of one split run share.
pub struct SplitRun<'a> {
    ranges: Ranges<'a>,
    parser: TextParser<std::io::Empty>,
    skip_bad: bool,
    shards: u64,
    per_round: u64,
    /// Rounds in the file (streams: unbounded).
    round_count: u64,
    rounds: Rounds<'a>,
    /// The first range with a malformed line that stops the run: later ones are not started.
    failed_at: AtomicU64,
    /// Rows parsed so far, all shards (for the progress bar).
    parsed: AtomicU64,
    checkpoint_rows: Option<u64>,
}

impl<'a> SplitRun<'a> {
    /// `shards` shards parsing `text` with copies of `parser`, merging every `merge_every`
    /// ranges each; `stop` and `failed` end the run at the end of a round; with
    /// `checkpoint_rows`, about every that many rows a merge asks for a checkpoint.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ranges: Ranges<'a>,
        parser: TextParser<std::io::Empty>,
        skip_bad: bool,
        shards: usize,
        merge_every: usize,
        stop: Option<&'a AtomicBool>,
        failed: &'a AtomicBool,
        checkpoint_rows: Option<u64>,
    ) -> Self {
        let (shards, per_round) = (shards.max(1) as u64, merge_every.max(1) as u64);
        let rounds = match ranges {
            Ranges::File(text) => text.ranges().div_ceil(shards * per_round).max(1),
            Ranges::Stream(_) => u64::MAX,
        };
        SplitRun {
            ranges,
            parser,
            skip_bad,
            shards,
            per_round,
            round_count: rounds,
            rounds: Rounds::new(stop, failed),
            failed_at: AtomicU64::new(u64::MAX),
            parsed: AtomicU64::new(0),
            checkpoint_rows,
        }
    }

    /// Rows parsed so far by all shards.
    pub fn parsed(&self) -> u64 {
        self.parsed.load(Ordering::Relaxed)
    }

    /// Whether round `r` starts (read after round `r - 1`'s merge).
    fn starts(&self, r: u64) -> bool {
        r < self.round_count
            && self.rounds.open(r)
            && match self.ranges {
                Ranges::File(_) => true,
                Ranges::Stream(chunks) => chunks.exists(r * self.per_round * self.shards),
            }
    }
}

/// The range being parsed: its bytes from `at` on are left.
struct Current<'t> {
    range: u64,
    bytes: Bytes<'t>,
    at: usize,
    rows: u64,
    unterminated: bool,
}

/// A range's bytes: in the mapped file, or a chunk of a stream.
enum Bytes<'t> {
    Mapped(&'t [u8]),
    Chunk(Vec<u8>),
}

impl Bytes<'_> {
    fn get(&self) -> &[u8] {
        match self {
            Bytes::Mapped(b) => b,
            Bytes::Chunk(v) => v,
        }
    }
}

/// One shard's feed: its ranges, parsed, then merge markers.
pub struct SplitFeed<'a> {
    run: &'a SplitRun<'a>,
    id: u64,
    parser: TextParser<std::io::Empty>,
    /// The shard's two buffers: one being learned, one being filled.
    pool: &'a Ring<Box<OwnedBatch>>,
    /// Its chunks, when the ranges are a stream's.
    chunks: Option<Receiver<Chunk>>,
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
    pub fn new(run: &'a SplitRun<'a>, id: usize, pool: &'a Ring<Box<OwnedBatch>>, chunks: Option<Receiver<Chunk>>) -> Self {
        SplitFeed {
            run,
            id: id as u64,
            parser: run.parser.detached(std::io::empty(), 0),
            pool,
            chunks,
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
                    return Some(super::marker(self.seq, run.checkpoint_rows.is_some()));
                }
                continue;
            }
            if self.taken == run.per_round {
                self.merged = true;
                let due = self.since_checkpoint.saturating_mul(run.shards) >= run.checkpoint_rows.unwrap_or(u64::MAX);
                if due {
                    self.since_checkpoint = 0;
                }
                return Some(super::marker(self.seq, due));
            }
            let range = (self.round * run.per_round + self.taken) * run.shards + self.id;
            self.taken += 1;
            if run.rounds.stopping() {
                // Nobody starts the next round; this one's other ranges are left.
                run.rounds.end_after(self.round);
                self.taken = run.per_round;
                continue;
            }
            let bytes = match (run.ranges, &self.chunks) {
                (Ranges::File(text), _) => (range < text.ranges()).then(|| (Bytes::Mapped(text.range(range)), false)),
                // Chunks come in order: the next one is this range's, or there is none.
                (Ranges::Stream(_), Some(rx)) => rx.recv().ok().map(|c| {
                    debug_assert_eq!(c.index, range, "chunks are dealt round-robin");
                    (Bytes::Chunk(c.bytes), c.unterminated)
                }),
                (Ranges::Stream(_), None) => None,
            };
            if let Some((bytes, unterminated)) = bytes.filter(|_| range < run.failed_at.load(Ordering::Acquire)) {
                self.parser.restart_lines(0);
                self.current = Some(Current { range, bytes, at: 0, rows: 0, unterminated });
            }
        }
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
        let len = cur.bytes.get().len();
        while !buf.is_full() && cur.at < len {
            let bytes = cur.bytes.get();
            let line = lines(&bytes[cur.at..]).next().unwrap_or_default();
            cur.at += line.len();
            let parsed = if cur.unterminated && cur.at == len && line.last() != Some(&b'\n') {
                // The stream's last line, cut short: counted as a line, an error not a row.
                let line_no = self.parser.line_no() + 1;
                self.parser.restart_lines(line_no);
                Err(ParseError {
                    source: self.run.parser.source_name().to_string(),
                    line: line_no,
                    field: None,
                    what: crate::source::text::cut_short(line.len()),
                    fatal: false,
                })
            } else {
                self.parser.parse_record(line, &mut self.row)
            };
            match parsed {
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
                    self.run.rounds.end_after(self.round);
                    cur.at = len;
                    break;
                }
            }
        }
        let rows = buf.rows as u64;
        if cur.at == len {
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
