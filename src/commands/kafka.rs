//! Kafka at the command line: the consumer flags of `train kafka://...`, and `produce`.

use anyhow::{ensure, Context};
use clap::Args;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;
use streamsgd::convert::resolve_format;
use streamsgd::dataset::Dataset;
use streamsgd::source::kafka::{
    encode_row, ConsumerOptions, ConsumerStats, Encoding, KafkaSource, KafkaWriter, ProducerOptions, StartFrom,
};
use streamsgd::source::live::Patience;
use streamsgd::source::text::{csv_header, format_row};
use streamsgd::source::{TextFormat, TextOptions};

/// How `train` reads a `kafka://BROKER/TOPIC` source.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Kafka source")]
pub struct KafkaArgs {
    /// Kafka: the consumer group (offsets are committed there once learned).
    #[arg(long, default_value = "streamsgd")]
    pub group: String,
    /// Kafka: where a group without committed offsets starts.
    #[arg(long, value_enum, default_value = "earliest")]
    from: StartFrom,
    /// Kafka: text lines (--format) or native rows (--features D) in each record.
    #[arg(long, value_enum, default_value = "text")]
    pub encoding: Encoding,
    /// Kafka, CSV records: the header (records carry data lines only), e.g. x0,x1,label.
    #[arg(long)]
    pub columns: Option<String>,
    /// Kafka: stop once every assigned partition is read to its end (replay a topic).
    #[arg(long)]
    until_end: bool,
    /// Kafka: fail when the brokers report errors and no record comes for this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    broker_timeout: Duration,
    /// Kafka: commit learned offsets at most this often.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    commit_interval: Duration,
    /// Kafka: a librdkafka setting, KEY=VALUE (repeatable): security.protocol, fetch sizes...
    #[arg(long = "kafka-option", value_parser = key_value)]
    options: Vec<(String, String)>,
}

/// Parses `KEY=VALUE`.
fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.trim().to_string(), v.to_string())).ok_or_else(|| format!("'{s}' is not KEY=VALUE"))
}

/// Joins the consumer group of `spec` with the text settings of the command line.
/// `patience`: when the consumer stops following (an idle timeout, a stop signal).
/// `whole_records`: the caller parses the records (sparse rows).
pub fn open(
    spec: &str,
    a: &KafkaArgs,
    format: Option<TextFormat>,
    text: &TextOptions,
    patience: &Patience,
    whole_records: bool,
) -> anyhow::Result<KafkaSource> {
    let opts = ConsumerOptions {
        group: a.group.clone(),
        start: a.from,
        encoding: a.encoding,
        format,
        text: text.clone(),
        columns: a.columns.clone(),
        stop_at_end: a.until_end,
        idle_timeout: patience.idle,
        broker_timeout: a.broker_timeout,
        commit_interval: a.commit_interval,
        stop: patience.stop.clone(),
        config: a.options.clone(),
        whole_records,
    };
    Ok(KafkaSource::open(spec, opts)?)
}

/// What the members of the group did, together.
pub fn stats(members: &[KafkaSource]) -> ConsumerStats {
    let mut all = ConsumerStats::default();
    for s in members.iter().map(KafkaSource::stats) {
        all.records += s.records;
        all.rows += s.rows;
        all.bytes += s.bytes;
        all.commits += s.commits;
        all.commit_failures += s.commit_failures;
        all.span = match (all.span, s.span) {
            (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
            (a, b) => a.or(b),
        };
        all.active_seconds = all.span.map_or(0.0, |(first, last)| (last - first).as_secs_f64());
        for (p, o) in s.committed {
            let at = all.committed.entry(p).or_insert(o);
            *at = (*at).max(o);
        }
    }
    all
}

/// Leaves the group, every member at once (each waits for the brokers' answer).
pub fn close(members: Vec<KafkaSource>) {
    std::thread::scope(|s| {
        for m in members {
            s.spawn(move || drop(m));
        }
    });
}

/// One line on what the consumer did.
pub fn summary(s: &ConsumerStats) -> String {
    let committed: Vec<String> = s.committed.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    format!(
        "kafka        {} records ({} rows, {:.1} MB) in {:.3} s from the first ({:.3} M rows/s), {} commits ({} refused), committed partition:offset {}",
        s.records,
        s.rows,
        s.bytes as f64 / 1e6,
        s.active_seconds,
        s.rows as f64 / s.active_seconds.max(1e-9) / 1e6,
        s.commits,
        s.commit_failures,
        if committed.is_empty() { "none".into() } else { committed.join(" ") }
    )
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// What to send: a .ssgd file (a row per record), a .csv/.libsvm/.vw file or - for stdin
    /// (a line per record; a CSV header is not sent).
    data: PathBuf,
    /// Where: kafka://BROKER[,BROKER...]/TOPIC.
    topic: String,
    /// For .ssgd input: native rows, or text lines in --format.
    #[arg(long, value_enum, default_value = "row")]
    encoding: Encoding,
    /// The text format (text input: default from the extension; .ssgd input with --encoding text).
    #[arg(long, value_enum)]
    format: Option<TextFormat>,
    /// Rows per second, paced open-loop (default: as fast as the brokers take them).
    #[arg(long)]
    rate: Option<f64>,
    /// Create the topic with this many partitions when it does not exist.
    #[arg(long)]
    partitions: Option<i32>,
    /// Stop after this many rows.
    #[arg(long)]
    limit: Option<u64>,
    /// Rows per record (.ssgd input): native rows one after another, or text lines.
    #[arg(long, default_value_t = 1)]
    rows_per_record: usize,
    /// Records per produce batch at most (1: every record its own batch, so a consumer may
    /// start at any offset even on brokers that serve fetches from batch boundaries only).
    #[arg(long, default_value_t = 10_000)]
    max_batch: usize,
    /// How long to wait at the end for the brokers to acknowledge every record.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    flush_timeout: Duration,
    /// A librdkafka setting, KEY=VALUE (repeatable).
    #[arg(long = "kafka-option", value_parser = key_value)]
    options: Vec<(String, String)>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Sends the rows in `buf` as one record (text lines without the last newline) and empties it.
fn send_record(w: &mut KafkaWriter, buf: &mut Vec<u8>, text: bool) -> anyhow::Result<()> {
    if text {
        buf.pop();
    }
    w.send(buf)?;
    buf.clear();
    Ok(())
}

pub fn produce(a: ProduceArgs) -> anyhow::Result<()> {
    if let Some(r) = a.rate {
        ensure!(r.is_finite() && r > 0.0, "--rate {r} must be > 0 rows/s");
    }
    ensure!(a.partitions.is_none_or(|p| p >= 1), "--partitions must be at least 1");
    ensure!(a.max_batch >= 1, "--max-batch must be at least 1");
    ensure!(a.rows_per_record >= 1, "--rows-per-record must be at least 1");
    let opts = ProducerOptions {
        partitions: a.partitions,
        rate: a.rate.map(|r| r / a.rows_per_record as f64),
        flush_timeout: a.flush_timeout,
        max_batch: a.max_batch,
        config: a.options.clone(),
    };
    let mut w = KafkaWriter::open(&a.topic, opts)?;
    let limit = a.limit.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    let mut buf = Vec::with_capacity(1 << 12);
    if streamsgd::dataset::sparse::is_sparse_file(&a.data) {
        ensure!(
            a.encoding == Encoding::Row && a.format.is_none(),
            "{}: sparse rows travel natively (--encoding row); their hashed ids have no names to write as text",
            a.data.display()
        );
        let ds = streamsgd::dataset::SparseDataset::open(&a.data)?;
        eprintln!("consume with: --encoding row --bits B (native sparse rows)");
        'sparse: for b in 0..ds.blocks() {
            let rows = ds.block(b)?;
            for r in 0..rows.len() {
                if sent == limit {
                    break 'sparse;
                }
                streamsgd::sparse::native::encode_row(&rows, r, &mut buf);
                sent += 1;
                if sent % a.rows_per_record as u64 == 0 {
                    send_record(&mut w, &mut buf, false)?;
                }
            }
        }
        if !buf.is_empty() {
            send_record(&mut w, &mut buf, false)?;
        }
    } else if a.data.extension().is_some_and(|e| e == "ssgd") {
        let ds = Dataset::open(&a.data)?;
        let format = match a.encoding {
            Encoding::Row => None,
            Encoding::Text => Some(a.format.context("--encoding text needs --format csv|libsvm|vw")?),
        };
        if format == Some(TextFormat::Csv) {
            eprintln!("consume with: --format csv --columns {}", csv_header(ds.features()).trim_end());
        }
        // Binary labels are 0/1 in .ssgd; VW text wants -1/+1 for them.
        let classification = format == Some(TextFormat::Vw) && ds.iter().all(|b| b.labels.iter().all(|&y| y == 0.0 || y == 1.0));
        let mut row = vec![0.0f32; ds.features()];
        'blocks: for b in ds.iter() {
            for r in 0..b.rows {
                if sent == limit {
                    break 'blocks;
                }
                b.row_into(r, &mut row);
                match format {
                    None => encode_row(&row, b.labels[r], b.weight(r), &mut buf),
                    Some(f) => format_row(f, &row, b.labels[r], classification, &mut buf),
                }
                sent += 1;
                if sent % a.rows_per_record as u64 == 0 {
                    send_record(&mut w, &mut buf, format.is_some())?;
                }
            }
        }
        if !buf.is_empty() {
            send_record(&mut w, &mut buf, format.is_some())?;
        }
    } else {
        ensure!(a.encoding == Encoding::Text || a.format.is_none(), "text input is sent as text lines (--encoding row is for .ssgd)");
        ensure!(a.rows_per_record == 1, "--rows-per-record groups the rows of a .ssgd file: text input is sent a line per record");
        let format = if a.data == Path::new("-") { a.format.unwrap_or(TextFormat::Csv) } else { resolve_format(&a.data, a.format)? };
        let reader: Box<dyn BufRead> = if a.data == Path::new("-") {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(BufReader::with_capacity(1 << 20, std::fs::File::open(&a.data).with_context(|| format!("{}", a.data.display()))?))
        };
        let mut first = format == TextFormat::Csv;
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line.with_context(|| format!("{}: line {}", a.data.display(), i + 1))?;
            let body = line.strip_suffix(b"\r").unwrap_or(&line);
            if body.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if std::mem::take(&mut first) {
                eprintln!("consume with: --format csv --columns {}", String::from_utf8_lossy(body));
                continue;
            }
            if sent == limit {
                break;
            }
            w.send(body)?;
            sent += 1;
        }
    }
    let name = a.topic.clone();
    let r = w.finish()?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "produced {sent} rows in {} records ({:.1} MB) to {name} in {:.3} s: {:.0} records/s, every one acknowledged",
            r.records,
            r.bytes as f64 / 1e6,
            r.seconds,
            r.records_per_sec
        );
    }
    Ok(())
}
