//! A Kafka topic as a row source, and the writer behind `streamsgd produce` (librdkafka through
//! the `rdkafka` crate, built from its bundled sources).
//!
//! A record holds one or more text lines (CSV without its header, LibSVM, VW), or one or more
//! rows in the native encoding ([`encode_row`]). The consumer joins a consumer group with automatic
//! commits off: offsets are committed only once every batch holding a record's rows has been
//! learned (at-least-once). A crash replays the records after the last commit; those learned
//! after the last checkpoint are learned again by the restarted run. A record's timestamp is the
//! rows' event time (unless a CSV timestamp column says otherwise) and the origin of their
//! end-to-end latency.
//!
//! Errors name the topic, partition and offset of the record at fault. No `unsafe` here.

use super::{Next, ParseError, ParsedRow, Pull, RecordSource, RowSource, TextFormat, TextOptions, TextParser};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type KafkaResultList = rdkafka::error::KafkaResult<TopicPartitionList>;

/// What went wrong talking to Kafka (outside of a record: those are [`ParseError`]s).
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// A `kafka://` address that does not parse.
    #[error("{0}: expected kafka://BROKER[,BROKER...]/TOPIC")]
    Url(String),
    /// Settings that cannot work.
    #[error("{url}: {what}")]
    Config {
        /// The source.
        url: String,
        /// What is wrong.
        what: String,
    },
    /// librdkafka refused or failed.
    #[error("{url}: {what}: {error}")]
    Kafka {
        /// The source or sink.
        url: String,
        /// What was being done.
        what: &'static str,
        /// The client's error.
        error: KafkaError,
    },
}

/// A `kafka://BROKER[,BROKER...]/TOPIC` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaUrl {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
}

impl KafkaUrl {
    /// Parses `kafka://BROKERS/TOPIC`.
    pub fn parse(spec: &str) -> Result<Self, KafkaSourceError> {
        let bad = || KafkaSourceError::Url(spec.to_string());
        let rest = spec.strip_prefix("kafka://").ok_or_else(bad)?;
        let (brokers, topic) = rest.split_once('/').ok_or_else(bad)?;
        let topic_ok = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
        if brokers.is_empty() || !topic_ok(topic) {
            return Err(bad());
        }
        Ok(KafkaUrl { brokers: brokers.to_string(), topic: topic.to_string() })
    }
}

impl std::fmt::Display for KafkaUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kafka://{}/{}", self.brokers, self.topic)
    }
}

/// How rows travel in records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Text lines in one of the text formats (one or more per record).
    Text,
    /// Rows, one or more per record, each a little-endian f32 label, f32 importance weight,
    /// then the features (sparse rows: [`crate::sparse::native`]).
    Row,
}

/// Appends one row in the native encoding: label, weight, features, each a little-endian f32.
pub fn encode_row(feats: &[f32], label: f32, weight: f32, out: &mut Vec<u8>) {
    out.reserve(4 * (feats.len() + 2));
    for v in [label, weight].iter().chain(feats) {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Reads one natively encoded row of `feats.len()` features.
fn decode_row(bytes: &[u8], feats: &mut [f32]) -> Result<(f32, f32), String> {
    let want = 4 * (feats.len() + 2);
    if bytes.len() != want {
        return Err(format!("a native record of {} bytes is not whole rows: a row of {} features takes {want}", bytes.len(), feats.len()));
    }
    let mut words = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let (label, weight) = (words.next().unwrap_or(f32::NAN), words.next().unwrap_or(f32::NAN));
    for (x, v) in feats.iter_mut().zip(words) {
        *x = v;
    }
    if label.is_nan() {
        return Err("label is missing (NaN)".into());
    }
    if !(weight.is_finite() && weight >= 0.0) {
        return Err(format!("importance {weight} is not a finite non-negative number"));
    }
    Ok((label, weight))
}

/// Where a new consumer group starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StartFrom {
    /// The oldest record kept.
    Earliest,
    /// Records produced from now on.
    Latest,
}

/// How the consumer reads.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// Consumer group.
    pub group: String,
    /// Where a group without committed offsets starts.
    pub start: StartFrom,
    /// Text lines or native rows.
    pub encoding: Encoding,
    /// The text format (text encoding).
    pub format: Option<TextFormat>,
    /// Label, timestamp column and feature count, as for files.
    pub text: TextOptions,
    /// The CSV header (records hold data lines only).
    pub columns: Option<String>,
    /// Stop once every assigned partition is read to its end.
    pub stop_at_end: bool,
    /// Stop when no record has come for this long.
    pub idle_timeout: Option<Duration>,
    /// Fail when the brokers report errors and nothing arrives for this long.
    pub broker_timeout: Duration,
    /// Commit learned offsets at most this often (and once at the end).
    pub commit_interval: Duration,
    /// Set from outside (a signal handler) to end the stream cleanly.
    pub stop: Option<Arc<AtomicBool>>,
    /// More librdkafka settings (security, fetch sizes), applied last.
    pub config: Vec<(String, String)>,
    /// The caller takes whole text records and parses them itself ([`RecordSource`]: sparse
    /// rows): no row parser is made.
    pub whole_records: bool,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            group: "streamsgd".into(),
            start: StartFrom::Earliest,
            encoding: Encoding::Text,
            format: None,
            text: TextOptions::default(),
            columns: None,
            stop_at_end: false,
            idle_timeout: None,
            broker_timeout: Duration::from_secs(30),
            commit_interval: Duration::from_millis(200),
            stop: None,
            config: Vec::new(),
            whole_records: false,
        }
    }
}

/// What the consumer did (for the report).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ConsumerStats {
    /// Records read.
    pub records: u64,
    /// Rows parsed from them.
    pub rows: u64,
    /// Payload bytes read.
    pub bytes: u64,
    /// Commits requested.
    pub commits: u64,
    /// Commits the brokers refused (their offsets are committed again at the next one).
    pub commit_failures: u64,
    /// Seconds from the first record to the last (what `rows / active_seconds` measures is
    /// the stream, not the group join before it).
    pub active_seconds: f64,
    /// When the first record came, and the last (the span of several members together).
    #[serde(skip)]
    pub span: Option<(Instant, Instant)>,
    /// The committed position (next offset to read) per partition.
    pub committed: BTreeMap<i32, i64>,
}

/// Set to librdkafka debug contexts (`cgrp,fetch`, `all`) to have the client log to stderr.
pub const DEBUG_ENV: &str = "STREAMSGD_KAFKA_DEBUG";

/// What the clients of one source share: the brokers' last error, the group member's
/// assignment (which the shards' readers follow), and when any shard last had a record.
struct Shared {
    error: Mutex<Option<(Instant, String)>>,
    /// `error` holds one (checked without the lock on every record).
    erred: AtomicBool,
    /// The member's partitions, and how many times they changed.
    assigned: Mutex<Vec<i32>>,
    generation: AtomicU64,
    /// Readers of their own fetch the partitions: the member pauses its own fetching.
    readers: AtomicBool,
    /// Nanoseconds from `opened` to the last record any shard took (an idle timeout is the
    /// whole source's, not one shard's).
    last_record: AtomicU64,
    opened: Instant,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            error: Mutex::default(),
            erred: AtomicBool::default(),
            assigned: Mutex::default(),
            generation: AtomicU64::default(),
            readers: AtomicBool::default(),
            last_record: AtomicU64::default(),
            opened: Instant::now(),
        }
    }
}

impl Shared {
    /// A shard took a record at `at`.
    fn took(&self, at: Instant) {
        self.last_record.fetch_max(at.duration_since(self.opened).as_nanos() as u64, Ordering::Relaxed);
    }

    /// How long since any shard took a record (or since the source opened).
    fn quiet(&self) -> Duration {
        self.opened.elapsed().saturating_sub(Duration::from_nanos(self.last_record.load(Ordering::Relaxed)))
    }

    /// The brokers report `what` (the first report since they last answered is kept).
    fn report(&self, what: String) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert_with(|| (Instant::now(), what));
            self.erred.store(true, Ordering::Release);
        }
    }

    /// The brokers answered: their last error is over.
    fn clear(&self) {
        if self.erred.swap(false, Ordering::AcqRel) {
            if let Ok(mut e) = self.error.lock() {
                *e = None;
            }
        }
    }
}

/// The client context: remembers the brokers' last error and the member's assignment.
#[derive(Clone, Default)]
struct Watch {
    shared: Arc<Shared>,
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.report(format!("{error}: {reason}"));
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        if std::env::var_os(DEBUG_ENV).is_some() {
            eprintln!("librdkafka {level:?} {fac}: {msg}");
        }
    }
}

impl ConsumerContext for Watch {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Assign(new), true) = (rebalance, self.shared.readers.load(Ordering::Acquire)) {
            // The shards' readers fetch these (a failed pause only costs records fetched twice).
            let _ = consumer.pause(new);
        }
        let partitions = consumer.assignment().map_or_else(|_| Vec::new(), |a| a.elements().iter().map(|e| e.partition()).collect());
        if let Ok(mut a) = self.shared.assigned.lock() {
            *a = partitions;
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Where a source's records come from.
enum Reader {
    /// The group member's own queue: every partition assigned to it.
    Member,
    /// A client of its own (not a group member) fetching shard `shard`'s share of the member's
    /// partitions, from their committed offsets; the first shard also serves the member's events.
    Own { client: BaseConsumer<Watch>, shard: usize, shards: usize, generation: u64, events: u64 },
}

/// What came out of a queue.
enum Event {
    /// A record, copied into the source's record buffer.
    Record(i32, i64, Timestamp),
    Eof(i32),
    Error(KafkaError),
}

/// Copies a polled message into `record`.
fn event(polled: Option<rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'_>>>, record: &mut Vec<u8>) -> Option<Event> {
    Some(match polled? {
        Ok(m) => {
            record.clear();
            record.extend_from_slice(m.payload().unwrap_or_default());
            Event::Record(m.partition(), m.offset(), m.timestamp())
        }
        Err(KafkaError::PartitionEOF(p)) => Event::Eof(p),
        Err(e) => Event::Error(e),
    })
}

/// A consumer client of `url` as `opts` say, with `watch` as its context.
fn client(url: &KafkaUrl, opts: &ConsumerOptions, watch: &Watch) -> Result<BaseConsumer<Watch>, KafkaSourceError> {
    let mut config = ClientConfig::new();
    if let Some(debug) = std::env::var_os(DEBUG_ENV) {
        config.set("debug", debug.to_string_lossy());
    }
    config
        .set("bootstrap.servers", &url.brokers)
        .set("group.id", &opts.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", if opts.start == StartFrom::Earliest { "earliest" } else { "latest" })
        .set("client.id", "streamsgd")
        // A member that died without leaving holds its partitions until these expire.
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "10000")
        // A fetch returns after at most 10 ms even with nothing new: low latency at the cost of
        // more idle fetches (tansu 0.6 waits this long on every fetch: 500 ms, the default, cut
        // its throughput ten times).
        .set("fetch.wait.max.ms", "10");
    for (k, v) in &opts.config {
        config.set(k, v);
    }
    config.create_with_context(watch.clone()).map_err(|error| KafkaSourceError::Kafka {
        url: url.to_string(),
        what: "creating the consumer",
        error,
    })
}

/// Drops `client` on a thread of its own, waited for 10 s at most: leaving a group waits for
/// the brokers, and a broker that does not answer must not hang the process.
fn close<T: Send + 'static>(client: T) {
    let (done, wait) = std::sync::mpsc::channel();
    let closing = std::thread::spawn(move || {
        drop(client);
        let _ = done.send(());
    });
    if wait.recv_timeout(Duration::from_secs(10)).is_ok() {
        let _ = closing.join();
    }
}

/// Rows from a Kafka topic: a consumer-group member with at-least-once offset commits.
pub struct KafkaSource {
    url: KafkaUrl,
    name: String,
    /// The group member: always `Some` until the source is dropped; shared by the shards.
    consumer: Option<Arc<BaseConsumer<Watch>>>,
    reader: Reader,
    opts: ConsumerOptions,
    parser: Option<TextParser<Cursor<Vec<u8>>>>,
    d: usize,
    /// The record being read, its position, and where it came from.
    record: Vec<u8>,
    pos: usize,
    line: u64,
    partition: i32,
    offset: i64,
    time: f64,
    origin_ns: i128,
    /// The oldest record time (ns since the epoch) among rows pulled since `take_origin`.
    oldest: Option<i128>,
    /// Next offset per partition whose records have been pulled whole.
    consumed: BTreeMap<i32, i64>,
    /// The partition and offset of the last row pulled.
    last_row: Option<(i32, i64)>,
    /// Positions as of each sent batch, oldest first.
    pending: VecDeque<(u64, BTreeMap<i32, i64>)>,
    /// Learned positions not yet committed.
    learned: BTreeMap<i32, i64>,
    last_commit: Instant,
    /// The partitions read to their end (`stop_at_end`), by any of the consumer's shards.
    ends: Arc<Mutex<BTreeSet<i32>>>,
    last_record: Instant,
    /// When this shard last set the source's shared idle clock.
    told: Instant,
    first_record: Option<Instant>,
    stats: ConsumerStats,
}

impl KafkaSource {
    /// Joins `opts.group` on the topic of `spec` (`kafka://BROKERS/TOPIC`).
    pub fn open(spec: &str, opts: ConsumerOptions) -> Result<Self, KafkaSourceError> {
        let url = KafkaUrl::parse(spec)?;
        let name = url.to_string();
        let config_err = |what: String| KafkaSourceError::Config { url: name.clone(), what };
        let parser = match opts.encoding {
            // Whole records go to the caller as they are (sparse text lines or native rows).
            Encoding::Text | Encoding::Row if opts.whole_records => None,
            Encoding::Row => {
                opts.text.features.ok_or_else(|| config_err("native rows need --features D".into()))?;
                if opts.format.is_some_and(|f| f != TextFormat::Csv) || opts.columns.is_some() {
                    return Err(config_err("--format and --columns are for text records, not --encoding row".into()));
                }
                None
            }
            Encoding::Text => {
                let format = opts.format.ok_or_else(|| config_err("text records need --format csv|libsvm|vw".into()))?;
                let header = match (format, &opts.columns) {
                    (TextFormat::Csv, Some(c)) => format!("{c}\n").into_bytes(),
                    (TextFormat::Csv, None) => {
                        return Err(config_err("CSV records carry no header: pass it as --columns a,b,...,label".into()))
                    }
                    (_, Some(_)) => return Err(config_err("--columns is for CSV records".into())),
                    (_, None) if opts.text.features.is_none() => {
                        return Err(config_err(format!("{format} records need --features D (a stream cannot be scanned first)")))
                    }
                    (_, None) => Vec::new(),
                };
                Some(TextParser::new(Cursor::new(header), name.clone(), format, &opts.text).map_err(|e| config_err(e.what))?)
            }
        };
        let consumer = client(&url, &opts, &Watch::default())?;
        consumer.subscribe(&[&url.topic]).map_err(|error| KafkaSourceError::Kafka { url: name.clone(), what: "subscribing", error })?;
        Ok(KafkaSource::reading(url, Arc::new(consumer), Reader::Member, opts, parser, Arc::default()))
    }

    /// A source reading `consumer`'s records (or its share of them) with `reader`.
    fn reading(
        url: KafkaUrl,
        consumer: Arc<BaseConsumer<Watch>>,
        reader: Reader,
        opts: ConsumerOptions,
        parser: Option<TextParser<Cursor<Vec<u8>>>>,
        ends: Arc<Mutex<BTreeSet<i32>>>,
    ) -> Self {
        let now = Instant::now();
        let d = parser.as_ref().map_or(opts.text.features.unwrap_or(0), TextParser::features);
        KafkaSource {
            name: url.to_string(),
            url,
            consumer: Some(consumer),
            reader,
            opts,
            parser,
            d,
            record: Vec::new(),
            pos: 0,
            line: 0,
            partition: 0,
            offset: 0,
            time: f64::NAN,
            origin_ns: 0,
            oldest: None,
            consumed: BTreeMap::new(),
            last_row: None,
            pending: VecDeque::new(),
            learned: BTreeMap::new(),
            last_commit: now,
            ends,
            last_record: now,
            told: now,
            first_record: None,
            stats: ConsumerStats::default(),
        }
    }

    /// The source read by `n` shards (before anything is read): each has a client of its own
    /// that fetches its share of the partitions assigned to the group member (dealt in turn),
    /// from the group's committed offsets, and follows the member's rebalances; the member
    /// fetches nothing itself, and commits what every shard has learned. `self` with `n` 1.
    pub fn into_shards(mut self, n: usize) -> Result<Vec<KafkaSource>, KafkaSourceError> {
        if n <= 1 {
            return Ok(vec![self]);
        }
        let member = self.consumer.clone().expect("the consumer lives until the source is dropped");
        member.context().shared.readers.store(true, Ordering::Release);
        let mut readers = Vec::with_capacity(n);
        for shard in 0..n {
            readers.push(Reader::Own {
                client: client(&self.url, &self.opts, member.context())?,
                shard,
                shards: n,
                generation: 0,
                events: 0,
            });
        }
        let first = readers.remove(0);
        let mut out: Vec<KafkaSource> = readers.into_iter().map(|r| self.shard(r)).collect();
        self.reader = first;
        out.insert(0, self);
        Ok(out)
    }

    /// Another shard of this source, reading with `reader`.
    fn shard(&self, reader: Reader) -> KafkaSource {
        let consumer = self.consumer.clone().expect("the consumer lives until the source is dropped");
        let parser = self.parser.as_ref().map(|p| p.detached(Cursor::new(Vec::new()), 0));
        KafkaSource::reading(self.url.clone(), consumer, reader, self.opts.clone(), parser, self.ends.clone())
    }

    /// The next message or event, waiting up to 10 ms with `wait`.
    fn next_event(&mut self, wait: bool) -> Option<Event> {
        let member = self.consumer.as_ref().expect("the consumer lives until the source is dropped");
        let timeout = if wait { Duration::from_millis(10) } else { Duration::ZERO };
        let Reader::Own { client, shard, shards, generation, events } = &mut self.reader else {
            return event(member.poll(timeout), &mut self.record);
        };
        *events += 1;
        if *shard == 0 && (*events % 64 == 0 || wait) {
            // Rebalances and the group's errors (served at least every 10 ms while idle). A record here was fetched before the member
            // paused its partition: dropped, and read by its shard from the committed offset.
            if let Some(Err(e)) = member.poll(Duration::ZERO) {
                if !matches!(e, KafkaError::PartitionEOF(_)) {
                    return Some(Event::Error(e));
                }
            }
        }
        let shared = &member.context().shared;
        let now = shared.generation.load(Ordering::Acquire);
        if now != *generation {
            *generation = now;
            let assigned = shared.assigned.lock().map(|a| a.clone()).unwrap_or_default();
            let mut tpl = TopicPartitionList::new();
            for &p in assigned.iter().skip(*shard).step_by(*shards) {
                let _ = tpl.add_partition_offset(&self.url.topic, p, Offset::Stored);
            }
            if let Err(e) = client.assign(&tpl) {
                return Some(Event::Error(e));
            }
        }
        event(client.poll(timeout), &mut self.record)
    }

    /// Polls until a record is in `self.record` (its position reset), nothing more comes now,
    /// or the stream ends (a stop, the idle timeout, every partition read with `stop_at_end`).
    fn fetch(&mut self, wait: bool) -> Result<Next<'_>, ParseError> {
        loop {
            if self.opts.stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire))
                || self.opts.idle_timeout.is_some_and(|t| self.consumer().context().shared.quiet() >= t)
            {
                return Ok(Next::End);
            }
            // Short, so that a shard with nothing to read still meets the others' merges.
            match self.next_event(wait) {
                None => {
                    self.check_brokers()?;
                    // Another shard may have read the last partition (or this one holds none).
                    if self.opts.stop_at_end && self.all_at_end() {
                        return Ok(Next::End);
                    }
                    return Ok(Next::Idle);
                }
                Some(Event::Record(p, o, ts)) => {
                    self.take(p, o, ts);
                    self.clear_broker_error();
                    return Ok(Next::Record(&self.record));
                }
                Some(Event::Eof(p)) => {
                    self.clear_broker_error();
                    if self.opts.stop_at_end && self.read_to_end(p) {
                        if let Ok(mut read) = self.ends.lock() {
                            read.insert(p);
                        }
                    }
                    if self.opts.stop_at_end && self.all_at_end() {
                        return Ok(Next::End);
                    }
                }
                Some(Event::Error(e)) => {
                    self.consumer().context().shared.report(e.to_string());
                    self.check_brokers()?;
                }
            }
        }
    }

    fn consumer(&self) -> &BaseConsumer<Watch> {
        self.consumer.as_ref().expect("the consumer lives until the source is dropped")
    }

    /// True when partition `p` has been read up to its high watermark (asked of the broker:
    /// an end-of-partition event alone is not trusted).
    fn read_to_end(&self, p: i32) -> bool {
        let timeout = Duration::from_secs(5);
        let Ok((low, high)) = self.consumer().fetch_watermarks(&self.url.topic, p, timeout) else { return false };
        let offset_in = |list: KafkaResultList| match list.ok()?.find_partition(&self.url.topic, p)?.offset() {
            Offset::Offset(at) => Some(at),
            _ => None,
        };
        // Where this run got to; having read nothing, where the group's commit left it.
        let position = match &self.reader {
            Reader::Own { client, .. } => client.position(),
            Reader::Member => self.consumer().position(),
        };
        let at = offset_in(position).or_else(|| offset_in(self.consumer().committed(timeout))).unwrap_or(low);
        at >= high
    }

    /// The source's name in messages (`kafka://BROKERS/TOPIC`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the consumer did so far.
    pub fn stats(&self) -> ConsumerStats {
        self.stats.clone()
    }

    /// A record-level error: where the record is, which line of it.
    fn at_record(&self, mut e: ParseError) -> ParseError {
        e.source = format!("{} partition {} offset {}", self.name, self.partition, self.offset);
        e.line = self.line;
        e
    }

    /// A source-level error (the brokers, a commit).
    fn fatal(&self, what: String) -> ParseError {
        ParseError { source: self.name.clone(), line: 0, field: None, what, fatal: true }
    }

    /// Parses the next line (or native row) of the current record.
    fn next_in_record(&mut self, feats: &mut [f32]) -> Result<Option<ParsedRow>, ParseError> {
        let rest = &self.record[self.pos..];
        let row_bytes = 4 * (self.d + 2);
        let (len, next) = match &self.parser {
            Some(_) => memchr::memchr(b'\n', rest).map_or((rest.len(), rest.len()), |i| (i, i + 1)),
            // Native rows, one or more to a record; a record of another length is one error.
            None if self.record.len() % row_bytes == 0 => (row_bytes, row_bytes),
            None => (rest.len(), rest.len()),
        };
        let start = self.pos;
        self.pos += next;
        self.line += 1;
        let r = match self.parser.as_mut() {
            Some(p) => p.parse_record(&self.record[start..start + len], feats),
            None => decode_row(&self.record[start..start + len], feats)
                .map(|(label, weight)| Some(ParsedRow { label, weight, line: self.line, time: f64::NAN }))
                .map_err(|what| ParseError { source: String::new(), line: 0, field: None, what, fatal: false }),
        };
        if self.pos >= self.record.len() {
            self.consumed.insert(self.partition, self.offset + 1);
        }
        match r {
            Ok(Some(mut row)) => {
                if row.time.is_nan() {
                    row.time = self.time;
                }
                self.stats.rows += 1;
                self.last_row = Some((self.partition, self.offset));
                self.oldest = Some(self.oldest.map_or(self.origin_ns, |o| o.min(self.origin_ns)));
                Ok(Some(row))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(self.at_record(e)),
        }
    }

    /// An error once the brokers have reported one, and no record has come, for
    /// `--broker-timeout`.
    fn check_brokers(&self) -> Result<(), ParseError> {
        let stuck = self.consumer().context().shared.error.lock().ok().and_then(|e| e.clone());
        match stuck {
            Some((since, what))
                if since.elapsed() >= self.opts.broker_timeout && self.consumer().context().shared.quiet() >= self.opts.broker_timeout =>
            {
                Err(self.fatal(format!("no record for {:.1} s and the brokers report: {what}", self.opts.broker_timeout.as_secs_f64())))
            }
            _ => Ok(()),
        }
    }

    /// The brokers answered: their last error is over.
    fn clear_broker_error(&self) {
        self.consumer().context().shared.clear();
    }

    /// Takes in the record just copied into `self.record`.
    fn take(&mut self, partition: i32, offset: i64, ts: Timestamp) {
        (self.pos, self.line, self.partition, self.offset) = (0, 0, partition, offset);
        let now_ns = || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        self.origin_ns = ts.to_millis().map_or_else(now_ns, |ms| i128::from(ms) * 1_000_000);
        self.time = self.origin_ns as f64 / 1e9;
        self.stats.records += 1;
        self.stats.bytes += self.record.len() as u64;
        self.last_record = Instant::now();
        // The source's idle clock needs no finer grain than a millisecond: the shared cache
        // line is written at most that often by each shard, not on every record.
        if self.last_record.duration_since(self.told) >= Duration::from_millis(1) {
            self.told = self.last_record;
            self.consumer().context().shared.took(self.told);
        }
        let first = *self.first_record.get_or_insert(self.last_record);
        self.stats.active_seconds = (self.last_record - first).as_secs_f64();
        self.stats.span = Some((first, self.last_record));
        if self.record.is_empty() {
            self.consumed.insert(partition, offset + 1);
        }
    }

    /// True once every partition assigned to the consumer has been read to its end (by this
    /// shard or another of the consumer's).
    fn all_at_end(&self) -> bool {
        let Ok(read) = self.ends.lock() else { return false };
        match self.consumer().assignment() {
            Ok(a) if a.count() > 0 => a.elements().iter().all(|e| read.contains(&e.partition())),
            _ => false,
        }
    }

    /// Commits the learned positions, synchronously: a commit's outcome is known before the
    /// next one (asynchronous commits still in flight when a consumer left were seen to leave
    /// the group unusable on tansu 0.6). A failed commit is retried at the next one, except the
    /// `last`, whose failure is an error.
    fn commit(&mut self, last: bool) -> Result<(), ParseError> {
        if self.learned.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in &self.learned {
            tpl.add_partition_offset(&self.url.topic, p, Offset::Offset(o))
                .map_err(|e| self.fatal(format!("commit of partition {p}: {e}")))?;
        }
        self.stats.commits += 1;
        self.last_commit = Instant::now();
        match self.consumer().commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                self.stats.committed.extend(std::mem::take(&mut self.learned));
                Ok(())
            }
            Err(_) if !last => {
                self.stats.commit_failures += 1;
                Ok(())
            }
            Err(e) => Err(self.fatal(format!("committing learned offsets {:?}: {e}", self.learned))),
        }
    }
}

/// The clients close on threads of their own, waited for 10 s at most.
impl Drop for KafkaSource {
    fn drop(&mut self) {
        if let Reader::Own { client: c, .. } = std::mem::replace(&mut self.reader, Reader::Member) {
            close(c);
        }
        // The last of the shards closes the member (leaving the group).
        if let Some(member) = self.consumer.take().and_then(Arc::into_inner) {
            close(member);
        }
    }
}

impl RecordSource for KafkaSource {
    fn next_record(&mut self, wait: bool) -> Result<Next<'_>, ParseError> {
        match self.fetch(wait)? {
            Next::Record(_) => {}
            Next::Idle => return Ok(Next::Idle),
            Next::End => return Ok(Next::End),
        }
        // Taken whole: the caller parses its lines.
        self.pos = self.record.len();
        self.consumed.insert(self.partition, self.offset + 1);
        self.oldest = Some(self.oldest.map_or(self.origin_ns, |o| o.min(self.origin_ns)));
        Ok(Next::Record(&self.record))
    }

    fn locate(&self, e: ParseError, line: u64) -> ParseError {
        ParseError { line, ..self.at_record(e) }
    }

    fn rows(&mut self, n: u64) {
        self.stats.rows += n;
    }

    fn sent(&mut self, seq: u64) {
        RowSource::sent(self, seq, false);
    }

    fn learned(&mut self, seq: u64) -> Result<(), ParseError> {
        RowSource::learned(self, seq)
    }
}

impl RowSource for KafkaSource {
    fn features(&self) -> usize {
        self.d
    }

    fn has_timestamps(&self) -> bool {
        true
    }

    fn pull(&mut self, feats: &mut [f32], wait: bool) -> Result<Pull, ParseError> {
        loop {
            while self.pos < self.record.len() {
                if let Some(row) = self.next_in_record(feats)? {
                    return Ok(Pull::Row(row));
                }
            }
            match self.fetch(wait)? {
                Next::Record(_) => {}
                Next::Idle => return Ok(Pull::Idle),
                Next::End => return Ok(Pull::End),
            }
        }
    }

    fn take_origin(&mut self) -> Option<Instant> {
        let oldest = self.oldest.take()?;
        let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_nanos() as i128;
        let age = u64::try_from(now_ns - oldest).unwrap_or(0);
        Some(Instant::now().checked_sub(Duration::from_nanos(age)).unwrap_or_else(Instant::now))
    }

    fn sent(&mut self, seq: u64, held_back: bool) {
        let mut upto = self.consumed.clone();
        // A row held back for the next batch keeps its record uncommitted.
        if let (true, Some((p, o))) = (held_back, self.last_row) {
            upto.entry(p).and_modify(|c| *c = (*c).min(o)).or_insert(o);
        }
        self.pending.push_back((seq, upto));
    }

    fn learned(&mut self, seq: u64) -> Result<(), ParseError> {
        while self.pending.front().is_some_and(|(s, _)| *s < seq) {
            let (_, upto) = self.pending.pop_front().expect("front checked");
            for (p, o) in upto {
                if self.stats.committed.get(&p).is_none_or(|&c| c < o) {
                    self.learned.insert(p, o);
                }
            }
        }
        if seq == u64::MAX || self.last_commit.elapsed() >= self.opts.commit_interval {
            self.commit(seq == u64::MAX)
        } else {
            Ok(())
        }
    }
}

/// How `produce` writes.
#[derive(Clone, Debug)]
pub struct ProducerOptions {
    /// Create the topic with this many partitions when it does not exist.
    pub partitions: Option<i32>,
    /// Open-loop pacing in records per second (`None`: flat out).
    pub rate: Option<f64>,
    /// How long to wait at the end for every record to be acknowledged.
    pub flush_timeout: Duration,
    /// Records per produce batch at most (librdkafka's `batch.num.messages`).
    pub max_batch: usize,
    /// More librdkafka settings (security, batching), applied last.
    pub config: Vec<(String, String)>,
}

/// What `produce` wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProduceReport {
    /// Records acknowledged by the brokers.
    pub records: u64,
    /// Payload bytes sent.
    pub bytes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Records per second.
    pub records_per_sec: f64,
}

/// Counts deliveries and keeps the first failure.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = self.first_error.lock() {
                    f.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// Writes records to a topic, paced, and checks every one was acknowledged.
pub struct KafkaWriter {
    url: KafkaUrl,
    name: String,
    producer: BaseProducer<Deliveries>,
    opts: ProducerOptions,
    start: Instant,
    sent: u64,
    bytes: u64,
}

impl KafkaWriter {
    /// Connects to the brokers of `spec` and creates the topic when asked to.
    pub fn open(spec: &str, opts: ProducerOptions) -> Result<Self, KafkaSourceError> {
        let url = KafkaUrl::parse(spec)?;
        let name = url.to_string();
        let kafka = |what, error| KafkaSourceError::Kafka { url: name.clone(), what, error };
        if let Some(n) = opts.partitions {
            let admin: AdminClient<DefaultClientContext> =
                ClientConfig::new().set("bootstrap.servers", &url.brokers).create().map_err(|e| kafka("creating the admin client", e))?;
            let topic = NewTopic::new(&url.topic, n, TopicReplication::Fixed(1));
            let admin_opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            let results =
                futures_executor::block_on(admin.create_topics([&topic], &admin_opts)).map_err(|e| kafka("creating the topic", e))?;
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => return Err(kafka("creating the topic", KafkaError::AdminOp(code))),
                }
            }
        }
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &url.brokers)
            .set("linger.ms", "5")
            // Records without a key spread over the partitions one by one, not in sticky runs.
            .set("sticky.partitioning.linger.ms", "0")
            .set("batch.num.messages", opts.max_batch.clamp(1, 1_000_000).to_string())
            .set("queue.buffering.max.messages", "1000000")
            .set("client.id", "streamsgd-produce");
        for (k, v) in &opts.config {
            config.set(k, v);
        }
        let producer: BaseProducer<Deliveries> =
            config.create_with_context(Deliveries::default()).map_err(|e| kafka("creating the producer", e))?;
        Ok(KafkaWriter { url, name, producer, opts, start: Instant::now(), sent: 0, bytes: 0 })
    }

    /// Sends one record (waits for room in the client's queue, and for its time under a rate).
    pub fn send(&mut self, payload: &[u8]) -> Result<(), KafkaSourceError> {
        if let Some(rate) = self.opts.rate {
            let due = self.start + Duration::from_secs_f64(self.sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                self.producer.poll(Duration::ZERO);
                std::thread::sleep(due - now);
            }
        }
        let mut record = BaseRecord::<(), [u8]>::to(&self.url.topic).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(KafkaSourceError::Kafka { url: self.name.clone(), what: "sending a record", error }),
            }
        }
        self.sent += 1;
        self.bytes += payload.len() as u64;
        if self.sent % 1024 == 0 {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Waits until every record is acknowledged; an error if any was not.
    pub fn finish(self) -> Result<ProduceReport, KafkaSourceError> {
        let flushed = self.producer.flush(self.opts.flush_timeout);
        let ctx = self.producer.context();
        let (ok, failed) = (ctx.ok.load(Ordering::Relaxed), ctx.failed.load(Ordering::Relaxed));
        if failed > 0 || ok != self.sent {
            let mut first = ctx.first_error.lock().ok().and_then(|f| f.clone()).unwrap_or_else(|| "not acknowledged in time".into());
            if first.contains("UnknownTopicOrPartition") {
                first += "; create the topic, or pass --partitions N to have produce create it";
            }
            return Err(KafkaSourceError::Config {
                url: self.name.clone(),
                what: format!("{} of {} records were not delivered (first: {first})", self.sent - ok, self.sent),
            });
        }
        flushed.map_err(|error| KafkaSourceError::Kafka { url: self.name.clone(), what: "flushing", error })?;
        let seconds = self.start.elapsed().as_secs_f64();
        Ok(ProduceReport { records: ok, bytes: self.bytes, seconds, records_per_sec: ok as f64 / seconds.max(1e-9) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = KafkaUrl::parse("kafka://a:9092,b:9093/rows.v1").unwrap();
        assert_eq!((u.brokers.as_str(), u.topic.as_str()), ("a:9092,b:9093", "rows.v1"));
        assert_eq!(u.to_string(), "kafka://a:9092,b:9093/rows.v1");
        for bad in ["kafka://a:9092", "kafka:///t", "kafka://a/", "kafka://a/t/u", "tcp://a/t"] {
            assert!(KafkaUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_on_any_shard_keeps_the_whole_source_from_being_idle() {
        let shared = Shared::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(shared.quiet() >= Duration::from_millis(30), "quiet since it opened");
        // Another shard's record: the source as a whole is not idle.
        shared.took(Instant::now());
        assert!(shared.quiet() < Duration::from_millis(20));
        // An older record (a shard behind another) does not move the time back.
        shared.took(shared.opened);
        assert!(shared.quiet() < Duration::from_millis(20));
    }

    #[test]
    fn native_rows_round_trip_and_reject_bad_lengths() {
        let mut buf = Vec::new();
        encode_row(&[1.5, -2.0, 0.0], 1.0, 0.5, &mut buf);
        let mut x = [0.0f32; 3];
        assert_eq!(decode_row(&buf, &mut x), Ok((1.0, 0.5)));
        assert_eq!(x, [1.5, -2.0, 0.0]);
        assert!(decode_row(&buf[..buf.len() - 1], &mut x)
            .unwrap_err()
            .contains("19 bytes is not whole rows: a row of 3 features takes 20"));
        let mut nan = Vec::new();
        encode_row(&[1.0, 1.0, 1.0], f32::NAN, 1.0, &mut nan);
        assert!(decode_row(&nan, &mut x).unwrap_err().contains("label"));
        let mut neg = Vec::new();
        encode_row(&[1.0, 1.0, 1.0], 1.0, -1.0, &mut neg);
        assert!(decode_row(&neg, &mut x).unwrap_err().contains("importance"));
    }
}
