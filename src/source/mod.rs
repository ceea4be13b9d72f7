//! Where rows come from: text parsers (CSV, LibSVM, VW) over files, stdin and sockets (whose
//! reads wait patiently: `live`), a Kafka consumer, the synthetic generator, and the feature
//! hash used for VW names.

pub mod ctr;
pub mod float;
pub mod gen;
pub mod hash;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod live;
pub mod split;
pub mod text;

pub use text::{ParseError, ParsedRow, TextFormat, TextOptions, TextParser};

use std::time::Instant;

/// What [`RowSource::pull`] found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pull {
    /// A row (its features are in the caller's buffer).
    Row(ParsedRow),
    /// Nothing has arrived for now (live sources only): the caller may send what it holds.
    Idle,
    /// The stream is over.
    End,
}

/// A stream of parsed rows feeding the pipeline: a text parser (file, stdin, socket) or a
/// Kafka consumer. The hooks let a source learn which of its rows are safely learned (to
/// commit offsets) and tell when its rows were created (for end-to-end latency).
pub trait RowSource {
    /// Feature columns each row fills.
    fn features(&self) -> usize;

    /// Whether rows carry an event time ([`ParsedRow::time`]).
    fn has_timestamps(&self) -> bool;

    /// The next row into `feats`. With `wait` false a live source returns [`Pull::Idle`] at
    /// once when nothing is buffered; with `wait` true it may block a short while first.
    /// After a non-fatal error the next call goes on with the following row.
    fn pull(&mut self, feats: &mut [f32], wait: bool) -> Result<Pull, ParseError>;

    /// When the oldest row pulled since the last call was created, if the source knows (a
    /// Kafka record's timestamp); the pipeline measures end-to-end latency from it.
    fn take_origin(&mut self) -> Option<Instant> {
        None
    }

    /// Every row pulled so far travels in batch `seq` or an earlier one, except the last one
    /// when `held_back` (it goes in the next batch).
    fn sent(&mut self, _seq: u64, _held_back: bool) {}

    /// Every batch numbered below `seq` has been learned; `u64::MAX` once the run has ended
    /// well (a source commits what it can then, and reports a failure to).
    fn learned(&mut self, _seq: u64) -> Result<(), ParseError> {
        Ok(())
    }
}

/// What [`RecordSource::next_record`] found.
pub enum Next<'a> {
    /// A record: one or more text lines.
    Record(&'a [u8]),
    /// Nothing now (a live source).
    Idle,
    /// The end of the stream.
    End,
}

/// Records of text lines that the reader parses itself (a shard's share of a Kafka topic, read
/// as sparse rows), with the same at-least-once hand-shake as [`RowSource`].
pub trait RecordSource: Send {
    /// The next record whole; with `wait` a live source may block a short while for one.
    fn next_record(&mut self, wait: bool) -> Result<Next<'_>, ParseError>;

    /// A parse error of line `line` (1-based) of the last record, named where it is.
    fn locate(&self, e: ParseError, line: u64) -> ParseError;

    /// `n` rows were parsed from the records (for the source's report).
    fn rows(&mut self, n: u64);

    /// Every record taken so far travels in batch `seq` or an earlier one.
    fn sent(&mut self, seq: u64);

    /// Every batch numbered below `seq` has been learned (`u64::MAX`: the run ended well).
    fn learned(&mut self, seq: u64) -> Result<(), ParseError>;
}

impl<R: std::io::BufRead> RowSource for TextParser<R> {
    fn features(&self) -> usize {
        TextParser::features(self)
    }

    fn has_timestamps(&self) -> bool {
        TextParser::has_timestamps(self)
    }

    fn pull(&mut self, feats: &mut [f32], _wait: bool) -> Result<Pull, ParseError> {
        Ok(self.next_row(feats)?.map_or(Pull::End, Pull::Row))
    }
}
