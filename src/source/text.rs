//! Line-oriented text formats: CSV (header row), LibSVM/svmlight, and Vowpal Wabbit text.
//!
//! A [`TextParser`] turns lines into dense rows (`d` features, a label, a weight). Every bad
//! line is a [`ParseError`] naming the source, the line number and the field; the caller decides
//! whether to stop or to count and skip it (`--skip-bad`). Missing cells (empty, `NA`, `NaN`)
//! become NaN and are counted. No `unsafe` here.

use super::hash;
use crate::dataset::header::MAX_FEATURES;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, Read};
use std::path::Path;

/// A supported text format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// `label idx:val ...` with 1-based indices.
    Libsvm,
    /// Vowpal Wabbit text: `label [importance] [tag]|ns name[:value] ...`.
    Vw,
}

impl std::fmt::Display for TextFormat {
    /// As `--format` names it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TextFormat::Csv => "csv",
            TextFormat::Libsvm => "libsvm",
            TextFormat::Vw => "vw",
        })
    }
}

impl TextFormat {
    /// The format implied by a file extension (`.csv`, `.libsvm`/`.svm`/`.svmlight`, `.vw`).
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(TextFormat::Csv),
            "libsvm" | "svm" | "svmlight" => Some(TextFormat::Libsvm),
            "vw" => Some(TextFormat::Vw),
            _ => None,
        }
    }
}

/// Which CSV column holds the label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelColumn {
    /// By header name.
    Name(String),
    /// By 0-based index.
    Index(usize),
    /// No label column (data to predict on): every column is a feature, labels are NaN.
    Absent,
    /// The column of this name if the header has one, else none (a saved model's label: data
    /// to predict on may come with it or without).
    IfPresent(String),
}

impl LabelColumn {
    /// Parses `--label`: `none` means no label column, a number is an index, anything else a
    /// name.
    pub fn parse(s: &str) -> Self {
        if s == "none" {
            return LabelColumn::Absent;
        }
        s.parse().map_or_else(|_| LabelColumn::Name(s.to_string()), LabelColumn::Index)
    }
}

/// How text lines map to columns.
#[derive(Clone, Debug, Default)]
pub struct TextOptions {
    /// CSV label column; default: a column named `label`, `target` or `y`, else the last one.
    pub label: Option<LabelColumn>,
    /// D for LibSVM (indices 1..=D) and VW (hash into D columns). `None`: discovered by a scan.
    pub features: Option<usize>,
    /// VW feature names mapped to columns, in column order (from a discovery scan).
    pub vw_names: Option<Vec<String>>,
    /// CSV event-time column (by name or index), excluded from the features: seconds since the
    /// Unix epoch (fractions allowed) or an RFC 3339 date-time.
    pub timestamp: Option<LabelColumn>,
    /// CSV: the feature columns by header name, in the order rows are to have them (a saved
    /// model's schema). The header must have exactly these besides the label and timestamp,
    /// in any order; `None`: the header's order.
    pub feature_order: Option<Vec<String>>,
}

/// A line that could not be parsed, or the stream failing underneath the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// File name, or `<stdin>` / a socket address.
    pub source: String,
    /// 1-based line number (0, not shown, for errors before the first line or of the stream).
    pub line: u64,
    /// The field (column name, token, or index) at fault, when one is.
    pub field: Option<String>,
    /// What is wrong, with the offending text.
    pub what: String,
    /// True when the stream itself failed (I/O): such an error cannot be skipped.
    pub fatal: bool,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.what)
    }
}

impl std::error::Error for ParseError {}

/// One parsed row's label and importance weight (features go to the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParsedRow {
    /// The label.
    pub label: f32,
    /// Importance weight (1 unless the format gives one).
    pub weight: f32,
    /// Line number it came from.
    pub line: u64,
    /// Event time, seconds since the Unix epoch (NaN without a timestamp column).
    pub time: f64,
}

#[derive(Clone)]
enum Layout {
    Csv {
        columns: Vec<String>,
        label: usize,
        /// Timestamp column (`usize::MAX`: none).
        ts: usize,
        /// The feature each column fills (`usize::MAX`: the label or the timestamp).
        slot: Vec<usize>,
    },
    Libsvm,
    VwHashed,
    VwNamed(HashMap<Vec<u8>, usize>),
    /// Discovery scan: learns D (LibSVM max index) or VW names in first-seen order.
    Discover {
        names: HashMap<Vec<u8>, usize>,
        order: Vec<String>,
        max_index: usize,
    },
}

/// Streaming parser of one text source.
pub struct TextParser<R> {
    reader: R,
    source: String,
    format: TextFormat,
    layout: Layout,
    d: usize,
    line_no: u64,
    line: Vec<u8>,
    nan_cells: u64,
    bytes: u64,
    require_newline: bool,
    /// Scratch: a LibSVM line's indices.
    indices: Vec<usize>,
}

fn is_missing(cell: &[u8]) -> bool {
    cell.is_empty() || cell.eq_ignore_ascii_case(b"na") || cell.eq_ignore_ascii_case(b"nan") || cell == b"?"
}

pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'"', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'"' | b'\r' | b'\n'] = s {
        s = rest;
    }
    s
}

/// Whether a line (trimmed) is a record of `format`: not blank, and not a `#` comment outside
/// CSV.
pub fn is_record(body: &[u8], format: TextFormat) -> bool {
    !body.is_empty() && (format == TextFormat::Csv || body[0] != b'#')
}

/// The longest line read (64 MiB): a longer one is an error, not a buffer that grows with
/// whatever is read (`/dev/zero`, a binary file), and no record of rows is that long.
pub const MAX_LINE: usize = 64 << 20;

/// The error of a stream's last record cut short (`n` bytes without a newline).
pub(crate) fn cut_short(n: usize) -> String {
    format!("stream closed in the middle of a record ({n} bytes without a newline)")
}

pub(crate) fn too_long() -> String {
    format!("a line longer than {} MiB: not text rows (a binary file, or a stream without line breaks?)", MAX_LINE >> 20)
}

/// Reads the next record (line `line_no` of `source`) into `line`: its length, 0 at the end. A
/// line over [`MAX_LINE`] and a read failure are fatal errors; with `require_newline` (sockets)
/// a last line without its newline is a non-fatal one (with --skip-bad it is counted, and the
/// next call ends the stream).
pub(crate) fn read_record<R: BufRead>(
    reader: &mut R,
    line: &mut Vec<u8>,
    source: &str,
    line_no: u64,
    require_newline: bool,
) -> Result<usize, ParseError> {
    let err = |what: String, fatal: bool| ParseError { source: source.to_string(), line: line_no, field: None, what, fatal };
    line.clear();
    let n = reader.take(MAX_LINE as u64 + 1).read_until(b'\n', line).map_err(|e| err(format!("read failed: {e}"), true))?;
    if n > MAX_LINE {
        return Err(err(too_long(), true));
    }
    if n > 0 && require_newline && line.last() != Some(&b'\n') {
        return Err(err(cut_short(n), false));
    }
    Ok(n)
}

/// A CSV header: its column names, the label's position (`usize::MAX`: no label column) and
/// the bytes it took.
pub(crate) struct CsvHeader {
    pub(crate) columns: Vec<String>,
    pub(crate) label: usize,
    pub(crate) bytes: u64,
}

/// Reads and checks a CSV header row (a BOM is dropped, names must be unique, the first cell
/// must not be a number) and finds the label: `label`, else a column named label, target or y,
/// else the last. Errors name `source`, line 1.
pub(crate) fn read_csv_header<R: BufRead>(reader: &mut R, source: &str, label: Option<&LabelColumn>) -> Result<CsvHeader, ParseError> {
    let err = |what: String| ParseError { source: source.to_string(), line: 1, field: None, what, fatal: false };
    let mut head = Vec::new();
    let n = reader.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut head).map_err(|e| ParseError { fatal: true, ..err(e.to_string()) })?;
    if n > MAX_LINE {
        return Err(ParseError { fatal: true, ..err(too_long()) });
    }
    if n == 0 {
        return Err(err("empty input: a CSV needs a header row".into()));
    }
    // A byte-order mark (spreadsheets write one) is not part of the first name.
    let head_trim = trim(head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&head));
    let columns: Vec<String> = csv_cells(head_trim).map_err(err)?.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    // Column positions by name (a hash map: headers of a million columns occur).
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        if let Some(first) = position.insert(c.as_str(), i) {
            return Err(err(format!("the header names column '{}' twice (columns {} and {})", cut(c), first + 1, i + 1)));
        }
    }
    let absent = match label {
        Some(LabelColumn::Absent) => true,
        Some(LabelColumn::IfPresent(n)) => !position.contains_key(n.as_str()),
        _ => false,
    };
    if columns.len() < 2 - usize::from(absent) {
        return Err(err(format!("header has {} column(s); need a label and at least one feature", columns.len())));
    }
    if number(trim(head_trim.split(|&c| c == b',').next().unwrap_or_default())).is_ok() {
        return Err(err(format!("the first line '{}' looks like data, not a header row", String::from_utf8_lossy(head_trim))));
    }
    let label = match label {
        _ if absent => usize::MAX,
        Some(LabelColumn::IfPresent(n)) => column_index(&columns, &LabelColumn::Name(n.clone()), "label").map_err(err)?,
        Some(spec) => column_index(&columns, spec, "label").map_err(err)?,
        None => columns.iter().position(|c| matches!(c.as_str(), "label" | "target" | "y")).unwrap_or(columns.len() - 1),
    };
    Ok(CsvHeader { columns, label, bytes: n as u64 })
}

/// The cells of a CSV line per RFC 4180: a field in double quotes may hold commas, and `""`
/// inside it is one quote. A quote left open at the end of the line is an error (a quoted line
/// break is not supported: every record is one line).
pub(crate) fn csv_cells(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut cells = Vec::new();
    let mut i = 0;
    loop {
        let mut cell = Vec::new();
        // Spaces before an opening quote are not part of the field.
        let start = i + line[i..].iter().take_while(|&&c| c == b' ' || c == b'\t').count();
        if line.get(start) == Some(&b'"') {
            i = start + 1;
            loop {
                match memchr::memchr(b'"', &line[i..]) {
                    None => {
                        return Err(format!(
                            "cell {}: a quoted field is not closed on its line (quoted line breaks are not supported)",
                            cells.len() + 1
                        ))
                    }
                    Some(q) => {
                        cell.extend_from_slice(&line[i..i + q]);
                        i += q + 1;
                        if line.get(i) == Some(&b'"') {
                            cell.push(b'"');
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            let rest = memchr::memchr(b',', &line[i..]).map_or(line.len(), |c| i + c);
            if !trim(&line[i..rest]).is_empty() {
                return Err(format!("cell {}: text after a closing quote", cells.len() + 1));
            }
            i = rest;
        } else {
            let end = memchr::memchr(b',', &line[i..]).map_or(line.len(), |c| i + c);
            cell.extend_from_slice(trim(&line[i..end]));
            i = end;
        }
        cells.push(cell);
        if i >= line.len() {
            return Ok(cells);
        }
        i += 1;
    }
}

/// The plain (unquoted) cell of `body` that starts at `at`, which moves to the next one
/// (`None` after the last).
fn next_cell<'b>(body: &'b [u8], at: &mut Option<usize>) -> Option<&'b [u8]> {
    let start = (*at)?;
    let end = memchr::memchr(b',', &body[start..]).map_or(body.len(), |c| start + c);
    *at = (end < body.len()).then_some(end + 1);
    Some(&body[start..end])
}

/// The CSV layout's column-to-feature map, to take out and put back around a row's parse.
fn slot_of(layout: &mut Layout) -> &mut Vec<usize> {
    match layout {
        Layout::Csv { slot, .. } => slot,
        _ => unreachable!("csv layout"),
    }
}

/// A name or value cut to 60 characters for a message (a 10 MB cell is not echoed).
pub fn cut(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// Names for a message: `'a', 'b'` (at most 8, then how many more), or `none`.
fn list(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    let shown: Vec<String> = names.iter().take(8).map(|n| format!("'{n}'")).collect();
    let more = names.len().saturating_sub(8);
    shown.join(", ") + &if more > 0 { format!(" and {more} more") } else { String::new() }
}

/// Parses a finite f32 (NaN comes back as NaN; ±inf and overflow are errors).
pub(crate) fn number(cell: &[u8]) -> Result<f32, String> {
    match super::float::parse_f32(cell).ok_or(()) {
        Ok(x) if x.is_infinite() => Err(format!("'{}' is infinite or out of f32 range", cut(&String::from_utf8_lossy(cell)))),
        Ok(x) => Ok(x),
        Err(_) if cell.len() > 60 => Err(format!("'{}…' ({} bytes) is not a number", cut(&String::from_utf8_lossy(cell)), cell.len())),
        Err(_) => Err(format!("'{}' is not a number", String::from_utf8_lossy(cell))),
    }
}

/// The header position of a column given by name or index (`what` names its role in errors).
pub(crate) fn column_index(columns: &[String], spec: &LabelColumn, what: &str) -> Result<usize, String> {
    match spec {
        LabelColumn::Index(i) if *i < columns.len() => Ok(*i),
        LabelColumn::Index(i) => Err(format!("{what} index {i} out of range: the header has {} columns", columns.len())),
        LabelColumn::Name(n) => columns
            .iter()
            .position(|c| c == n)
            .ok_or_else(|| format!("no column named '{n}' in the header ({}) for the {what}", columns.join(","))),
        LabelColumn::Absent | LabelColumn::IfPresent(_) => Err(format!("no {what} column given")),
    }
}

/// An event time: seconds since the Unix epoch (a finite number) or an RFC 3339 date-time.
pub(crate) fn timestamp(cell: &[u8]) -> Result<f64, String> {
    if let Ok(t) = fast_float2::parse::<f64, _>(cell) {
        return if t.is_finite() { Ok(t) } else { Err(format!("timestamp '{}' is not finite", String::from_utf8_lossy(cell))) };
    }
    let text = std::str::from_utf8(cell).map_err(|_| "timestamp is not UTF-8".to_string())?;
    let t = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("timestamp '{text}' is neither seconds since the epoch nor RFC 3339 ({e})"))?;
    Ok(match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    })
}

pub(crate) fn split_ws(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|&c| c == b' ' || c == b'\t').filter(|t| !t.is_empty())
}

impl<R: BufRead> TextParser<R> {
    /// A parser over `reader`; for CSV this reads the header row. `source` names it in errors.
    pub fn new(mut reader: R, source: impl Into<String>, format: TextFormat, opts: &TextOptions) -> Result<Self, ParseError> {
        let source = source.into();
        let err = |line, what: String| ParseError { source: source.clone(), line, field: None, what, fatal: false };
        let (layout, d, line_no, bytes) = match format {
            TextFormat::Csv => {
                let CsvHeader { columns, label, bytes: n } = read_csv_header(&mut reader, &source, opts.label.as_ref())?;
                let absent = label == usize::MAX;
                let position: HashMap<&str, usize> = columns.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
                let ts = match &opts.timestamp {
                    None => usize::MAX,
                    Some(LabelColumn::Absent) => return Err(err(1, "--timestamp-col names a column: 'none' is not one".into())),
                    Some(spec) => column_index(&columns, spec, "timestamp").map_err(|e| err(1, e))?,
                };
                if ts != usize::MAX && ts == label {
                    return Err(err(1, format!("column '{}' cannot be both the label and the timestamp", columns[ts])));
                }
                let d = columns.len() - usize::from(!absent) - usize::from(ts != usize::MAX);
                if d == 0 {
                    return Err(err(1, "no feature columns left besides the label and the timestamp".into()));
                }
                let features = columns.iter().enumerate().filter(|&(i, _)| i != label && i != ts);
                let slot = match &opts.feature_order {
                    None => {
                        let mut next = 0..;
                        (0..columns.len()).map(|i| if i == label || i == ts { usize::MAX } else { next.next().unwrap_or(0) }).collect()
                    }
                    Some(order) => {
                        let wanted: HashMap<&str, usize> = order.iter().enumerate().map(|(k, n)| (n.as_str(), k)).collect();
                        let missing: Vec<&str> = order.iter().filter(|n| !position.contains_key(n.as_str())).map(|n| cut(n)).collect();
                        let extra: Vec<&str> =
                            features.clone().filter(|(_, c)| !wanted.contains_key(c.as_str())).map(|(_, c)| cut(c)).collect();
                        if !missing.is_empty() || !extra.is_empty() {
                            return Err(err(
                                1,
                                format!(
                                    "the header's feature columns differ from the model's: missing {}; not in the model {}",
                                    list(&missing),
                                    list(&extra)
                                ),
                            ));
                        }
                        let at = |c: &String| wanted.get(c.as_str()).copied().unwrap_or(usize::MAX);
                        columns.iter().enumerate().map(|(i, c)| if i == label || i == ts { usize::MAX } else { at(c) }).collect()
                    }
                };
                (Layout::Csv { columns, label, ts, slot }, d, 1, n)
            }
            _ if opts.timestamp.is_some() => {
                return Err(err(0, "a timestamp column needs CSV input (LibSVM and VW lines have no named columns)".into()))
            }
            TextFormat::Libsvm | TextFormat::Vw => match (opts.features, &opts.vw_names) {
                (_, Some(names)) if format == TextFormat::Vw => {
                    let map = names.iter().enumerate().map(|(i, n)| (n.as_bytes().to_vec(), i)).collect();
                    (Layout::VwNamed(map), names.len(), 0, 0)
                }
                (Some(0), _) => return Err(err(0, "--features must be at least 1".into())),
                (Some(d), _) if format == TextFormat::Vw => (Layout::VwHashed, d, 0, 0),
                (Some(d), _) => (Layout::Libsvm, d, 0, 0),
                (None, _) => (Layout::Discover { names: HashMap::new(), order: Vec::new(), max_index: 0 }, 0, 0, 0),
            },
        };
        Ok(TextParser {
            reader,
            source,
            format,
            layout,
            d,
            line_no,
            line: Vec::with_capacity(256),
            nan_cells: 0,
            bytes,
            require_newline: false,
            indices: Vec::new(),
        })
    }

    /// Whether rows carry an event time (a CSV timestamp column).
    pub fn has_timestamps(&self) -> bool {
        matches!(self.layout, Layout::Csv { ts, .. } if ts != usize::MAX)
    }

    /// Number of feature columns each row fills (0 while discovering).
    pub fn features(&self) -> usize {
        self.d
    }

    /// The CSV label column's name (`None` without one, and for other formats).
    pub fn label_name(&self) -> Option<String> {
        match &self.layout {
            Layout::Csv { columns, label, .. } => columns.get(*label).cloned(),
            _ => None,
        }
    }

    /// CSV feature column names in column order (label excluded); `None` for other formats.
    pub fn feature_names(&self) -> Option<Vec<String>> {
        match &self.layout {
            Layout::Csv { columns, slot, .. } => {
                let mut named: Vec<(usize, String)> =
                    columns.iter().zip(slot).filter(|(_, &k)| k != usize::MAX).map(|(c, &k)| (k, c.clone())).collect();
                named.sort();
                Some(named.into_iter().map(|(_, c)| c).collect())
            }
            Layout::VwNamed(map) => {
                let mut v: Vec<(usize, String)> = map.iter().map(|(k, &i)| (i, String::from_utf8_lossy(k).into_owned())).collect();
                v.sort();
                Some(v.into_iter().map(|(_, n)| n).collect())
            }
            _ => None,
        }
    }

    /// A parser of the same text (format, columns, feature order) over `reader`, numbering
    /// lines from `line` + 1: a shard parsing its own ranges of a file, or the held-out lines.
    pub fn detached<R2>(&self, reader: R2, line: u64) -> TextParser<R2> {
        TextParser {
            reader,
            source: self.source.clone(),
            format: self.format,
            layout: self.layout.clone(),
            d: self.d,
            line_no: line,
            line: Vec::new(),
            nan_cells: 0,
            bytes: 0,
            require_newline: false,
            indices: Vec::new(),
        }
    }

    /// Numbers the lines that follow from `line` + 1.
    pub fn restart_lines(&mut self, line: u64) {
        self.line_no = line;
    }

    /// Lines read so far.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// The source's name in errors.
    pub fn source_name(&self) -> &str {
        &self.source
    }

    /// The reader, positioned after what was parsed (a CSV header): for a reader thread that
    /// deals the rest out in chunks of lines.
    pub fn reader_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    /// Whether a last line without its newline is an error ([`require_newline`](Self::require_newline)).
    pub fn requires_newline(&self) -> bool {
        self.require_newline
    }

    /// Makes a last line without a newline an error (for sockets: a peer that closes
    /// mid-record must not yield a silently truncated number).
    pub fn require_newline(&mut self) {
        self.require_newline = true;
    }

    /// Missing cells (NaN) seen so far.
    pub fn nan_cells(&self) -> u64 {
        self.nan_cells
    }

    /// Bytes consumed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// After a discovery scan (no `--features`): the feature count and, for VW, the names.
    pub fn discovered(&self) -> (usize, Option<Vec<String>>) {
        match &self.layout {
            Layout::Discover { order, max_index, .. } if self.format == TextFormat::Vw => (order.len(), Some(order.clone())),
            Layout::Discover { max_index, .. } => (*max_index, None),
            _ => (self.d, None),
        }
    }

    fn bad(&self, field: Option<String>, what: String) -> ParseError {
        ParseError { source: self.source.clone(), line: self.line_no, field, what, fatal: false }
    }

    /// Parses the next non-empty line into `feats` (length = [`features`](Self::features));
    /// `Ok(None)` at end of input. After an `Err` that is not fatal the next call continues with
    /// the following line, so callers can count and skip bad lines.
    pub fn next_row(&mut self, feats: &mut [f32]) -> Result<Option<ParsedRow>, ParseError> {
        loop {
            if read_record(&mut self.reader, &mut self.line, &self.source, self.line_no + 1, self.require_newline)? == 0 {
                return Ok(None);
            }
            let line = std::mem::take(&mut self.line);
            let result = self.parse_record(&line, feats);
            self.line = line;
            if let Some(r) = result.transpose() {
                return r.map(Some);
            }
        }
    }

    /// Parses one line that did not come from the reader (a Kafka record's line) and counts it
    /// like a read one; `Ok(None)` for a blank or comment line.
    pub fn parse_record(&mut self, line: &[u8], feats: &mut [f32]) -> Result<Option<ParsedRow>, ParseError> {
        self.bytes += line.len() as u64;
        self.line_no += 1;
        let body = trim(line);
        if !is_record(body, self.format) {
            return Ok(None);
        }
        self.parse_line(body, feats).map(Some)
    }

    fn parse_line(&mut self, body: &[u8], feats: &mut [f32]) -> Result<ParsedRow, ParseError> {
        if !matches!(self.layout, Layout::Discover { .. }) && feats.len() != self.d {
            return Err(self.bad(None, format!("internal: row buffer of {} for {} features", feats.len(), self.d)));
        }
        match self.format {
            TextFormat::Csv => self.parse_csv(body, feats),
            TextFormat::Libsvm => self.parse_libsvm(body, feats),
            TextFormat::Vw => self.parse_vw(body, feats),
        }
    }

    fn label(&self, field: impl FnOnce() -> String, cell: &[u8]) -> Result<f32, ParseError> {
        match number(cell) {
            Ok(y) if !y.is_nan() => Ok(y),
            Ok(_) => Err(self.bad(Some(field()), "label is missing (NaN)".into())),
            Err(_) if is_missing(cell) => Err(self.bad(Some(field()), "label is missing".into())),
            Err(e) => Err(self.bad(Some(field()), e)),
        }
    }

    fn csv_column(&self, i: usize) -> String {
        match &self.layout {
            Layout::Csv { columns, .. } => columns[i].clone(),
            _ => i.to_string(),
        }
    }

    /// A feature cell: missing → NaN (counted); the error message names the bad text.
    fn feature(&mut self, cell: &[u8]) -> Result<f32, String> {
        if is_missing(cell) {
            self.nan_cells += 1;
            return Ok(f32::NAN);
        }
        let x = number(cell)?;
        if x.is_nan() {
            self.nan_cells += 1;
        }
        Ok(x)
    }

    fn parse_csv(&mut self, body: &[u8], feats: &mut [f32]) -> Result<ParsedRow, ParseError> {
        let Layout::Csv { columns, label, ts, .. } = &self.layout else { unreachable!("csv layout") };
        let (ncol, label_col, ts_col) = (columns.len(), *label, *ts);
        let slot = std::mem::take(&mut *slot_of(&mut self.layout));
        let mut y = f32::NAN;
        let mut time = f64::NAN;
        let mut count = 0;
        // Quoted fields (RFC 4180) take the slow path; plain lines split on commas.
        let quoted = memchr::memchr(b'"', body).is_some();
        let cells = if quoted { csv_cells(body).map_err(|e| self.bad(None, e)) } else { Ok(Vec::new()) };
        let result = (|| {
            let cells = cells?;
            // Plain cells: where the next comma-separated cell starts (`None` after the last).
            let mut at = Some(0);
            loop {
                let i = count;
                // A feature cell that is a plain decimal ending at its comma: read in place (the
                // general path below would read the same number, after a split and a trim).
                if let Some(start) = at.filter(|_| !quoted && i < ncol && i != label_col && i != ts_col) {
                    if let Some((x, n)) = super::float::plain_prefix(&body[start..]) {
                        let end = start + n;
                        if end == body.len() || body[end] == b',' {
                            feats[slot[i]] = x;
                            count += 1;
                            at = (end < body.len()).then_some(end + 1);
                            continue;
                        }
                    }
                }
                let Some(cell) = (if quoted { cells.get(i).map(|c| &c[..]) } else { next_cell(body, &mut at) }) else { break };
                count += 1;
                if i >= ncol {
                    continue;
                }
                let cell = trim(cell);
                if i == label_col {
                    y = self.label(|| self.csv_column(i), cell)?;
                } else if i == ts_col {
                    time = timestamp(cell).map_err(|e| self.bad(Some(self.csv_column(i)), e))?;
                } else {
                    feats[slot[i]] = self.feature(cell).map_err(|e| self.bad(Some(self.csv_column(i)), e))?;
                }
            }
            if count != ncol {
                return Err(self.bad(None, format!("{count} cells, the header has {ncol} columns")));
            }
            Ok(())
        })();
        *slot_of(&mut self.layout) = slot;
        result?;
        Ok(ParsedRow { label: y, weight: 1.0, line: self.line_no, time })
    }

    fn parse_libsvm(&mut self, body: &[u8], feats: &mut [f32]) -> Result<ParsedRow, ParseError> {
        let body = body.split(|&c| c == b'#').next().unwrap_or_default();
        let mut tokens = split_ws(body);
        let first = tokens.next().ok_or_else(|| self.bad(None, "empty line".into()))?;
        let y = self.label(|| "label".into(), first)?;
        feats.fill(0.0);
        // Indices in ascending order cannot repeat; out of order, they are checked at the end.
        let (mut last, mut ascending) = (0usize, true);
        self.indices.clear();
        for tok in tokens {
            let field = || String::from_utf8_lossy(tok).into_owned();
            let Some(colon) = tok.iter().position(|&c| c == b':') else {
                return Err(self.bad(Some(field()), "expected index:value".into()));
            };
            let (idx, val) = (&tok[..colon], &tok[colon + 1..]);
            if idx == b"qid" {
                continue;
            }
            let idx: usize = std::str::from_utf8(idx)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.bad(Some(field()), "index is not a positive integer".into()))?;
            if idx == 0 {
                return Err(self.bad(Some(field()), "index 0: LibSVM indices are 1-based".into()));
            }
            let x = self.feature(val).map_err(|e| self.bad(Some(field()), e))?;
            if idx > MAX_FEATURES as usize {
                return Err(self.bad(
                    Some(cut(&field()).to_string()),
                    format!("index {idx} exceeds the largest feature index a dense row can have ({MAX_FEATURES})"),
                ));
            }
            ascending &= idx > last;
            last = idx;
            self.indices.push(idx);
            if let Layout::Discover { max_index, .. } = &mut self.layout {
                *max_index = (*max_index).max(idx);
            } else if idx > self.d {
                return Err(self.bad(Some(field()), format!("index {idx} exceeds the {} features (--features)", self.d)));
            } else {
                feats[idx - 1] = x;
            }
        }
        if !ascending {
            self.indices.sort_unstable();
            if let Some(w) = self.indices.windows(2).find(|w| w[0] == w[1]) {
                return Err(self.bad(None, format!("index {} appears twice on the line", w[0])));
            }
        }
        Ok(ParsedRow { label: y, weight: 1.0, line: self.line_no, time: f64::NAN })
    }

    fn parse_vw(&mut self, body: &[u8], feats: &mut [f32]) -> Result<ParsedRow, ParseError> {
        let mut parts = body.split(|&c| c == b'|');
        let head = parts.next().unwrap_or_default();
        let mut head_tokens = split_ws(head);
        let Some(label_tok) = head_tokens.next() else {
            return Err(self.bad(Some("label".into()), "no label before the first '|'".into()));
        };
        let y = self.label(|| "label".into(), label_tok)?;
        let mut weight = 1.0;
        if let Some(tok) = head_tokens.next() {
            // An importance weight when numeric, otherwise a tag.
            if let Ok(w) = number(tok) {
                if !(w.is_finite() && w >= 0.0) {
                    return Err(self.bad(Some("importance".into()), format!("importance {w} is not a finite non-negative number")));
                }
                weight = w;
            }
        }
        feats.fill(0.0);
        let d = self.d;
        for ns_part in parts {
            // `|ns[:scale] feat[:value] ...`; a space right after '|' is the default namespace.
            let (ns_tok, rest) = match ns_part.first() {
                Some(b' ' | b'\t') | None => (&b""[..], ns_part),
                _ => {
                    let end = ns_part.iter().position(|&c| c == b' ' || c == b'\t').unwrap_or(ns_part.len());
                    (&ns_part[..end], &ns_part[end..])
                }
            };
            let (ns, scale) = match ns_tok.iter().position(|&c| c == b':') {
                Some(c) => {
                    let s = number(&ns_tok[c + 1..]).map_err(|e| self.bad(Some(String::from_utf8_lossy(ns_tok).into_owned()), e))?;
                    (&ns_tok[..c], s)
                }
                None => (ns_tok, 1.0),
            };
            for tok in split_ws(rest) {
                let field = || String::from_utf8_lossy(tok).into_owned();
                let (name, x) = match tok.iter().rposition(|&c| c == b':') {
                    Some(c) => (&tok[..c], self.feature(&tok[c + 1..]).map_err(|e| self.bad(Some(field()), e))? * scale),
                    None => (tok, scale),
                };
                match &mut self.layout {
                    Layout::VwHashed => {
                        let (col, sign) = hash::bucket(ns, name, d);
                        feats[col] += sign * x;
                    }
                    Layout::VwNamed(map) => {
                        let key = vw_key(ns, name);
                        match map.get(&key) {
                            Some(&col) => feats[col] = x,
                            None => {
                                return Err(self.bad(Some(field()), "a feature name the model (or the names scan) does not know".into()))
                            }
                        }
                    }
                    Layout::Discover { names, order, .. } => {
                        let key = vw_key(ns, name);
                        if !names.contains_key(&key) {
                            names.insert(key.clone(), order.len());
                            order.push(String::from_utf8_lossy(&key).into_owned());
                        }
                    }
                    _ => unreachable!("vw layout"),
                }
            }
        }
        Ok(ParsedRow { label: y, weight, line: self.line_no, time: f64::NAN })
    }
}

/// Appends one row in `format` to `out` (the inverse of the parser: the shortest decimal that
/// round-trips each f32). CSV cells of NaN are left empty; LibSVM omits zeros; VW writes every
/// feature as `x{j}:value` in namespace `f`, classification labels as -1/+1.
pub fn format_row(format: TextFormat, feats: &[f32], label: f32, classification: bool, out: &mut Vec<u8>) {
    let mut num = ryu::Buffer::new();
    let mut int = itoa::Buffer::new();
    let mut put = |out: &mut Vec<u8>, x: f32| {
        if x.is_nan() {
            out.extend_from_slice(b"nan");
        } else {
            out.extend_from_slice(num.format(x).as_bytes());
        }
    };
    match format {
        TextFormat::Csv => {
            for &x in feats {
                if !x.is_nan() {
                    put(out, x);
                }
                out.push(b',');
            }
            put(out, label);
        }
        TextFormat::Libsvm => {
            put(out, label);
            for (j, &x) in feats.iter().enumerate() {
                if x != 0.0 {
                    out.push(b' ');
                    out.extend_from_slice(int.format(j + 1).as_bytes());
                    out.push(b':');
                    put(out, x);
                }
            }
        }
        TextFormat::Vw => {
            put(out, if classification && label == 0.0 { -1.0 } else { label });
            out.extend_from_slice(b" |f");
            for (j, &x) in feats.iter().enumerate() {
                out.extend_from_slice(b" x");
                out.extend_from_slice(int.format(j).as_bytes());
                out.push(b':');
                put(out, x);
            }
        }
    }
    out.push(b'\n');
}

/// The CSV header matching [`format_row`]: `x0,...,x{d-1},label`.
pub fn csv_header(d: usize) -> String {
    let mut h: Vec<String> = (0..d).map(|j| format!("x{j}")).collect();
    h.push("label".into());
    h.join(",") + "\n"
}

fn vw_key(ns: &[u8], name: &[u8]) -> Vec<u8> {
    if ns.is_empty() {
        name.to_vec()
    } else {
        [ns, b"^", name].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (Vec<f32>, f32, f32);

    fn parse_all(fmt: TextFormat, text: &str, opts: &TextOptions) -> Vec<Result<Row, ParseError>> {
        let mut p = TextParser::new(text.as_bytes(), "t", fmt, opts).unwrap();
        let mut row = vec![0.0; p.features()];
        let mut out = Vec::new();
        loop {
            match p.next_row(&mut row) {
                Ok(None) => break,
                Ok(Some(r)) => out.push(Ok((row.clone(), r.label, r.weight))),
                Err(e) => out.push(Err(e)),
            }
        }
        out
    }

    #[test]
    fn libsvm_indices_twice_on_a_line_are_an_error() {
        let opts = TextOptions { features: Some(4), ..Default::default() };
        let rows = parse_all(TextFormat::Libsvm, "1 3:1 1:2 3:5\n0 1:1 4:2\n1 2:1 2:1\n", &opts);
        assert!(rows[0].as_ref().unwrap_err().what.contains("index 3 appears twice"));
        assert_eq!(rows[1].as_ref().unwrap(), &(vec![1.0, 0.0, 0.0, 2.0], 0.0, 1.0));
        assert!(rows[2].as_ref().unwrap_err().what.contains("index 2 appears twice"));
    }

    #[test]
    fn csv_quotes_bom_duplicate_names_and_column_order() {
        // RFC 4180: quoted commas and doubled quotes; a quote left open is an error naming the line.
        assert_eq!(csv_cells(b"1,\"2,5\", \"a\"\"b\",").unwrap(), vec![b"1".to_vec(), b"2,5".to_vec(), b"a\"b".to_vec(), vec![]]);
        assert!(csv_cells(b"1,\"2").unwrap_err().contains("not closed"));
        assert!(csv_cells(b"\"2\"x,1").unwrap_err().contains("after a closing quote"));
        let rows = parse_all(TextFormat::Csv, "\u{feff}\"a\",\"b,c\",label\n\"1.5\",\"2\",1\n3,\"4,5\",0\n", &TextOptions::default());
        assert_eq!(rows[0].as_ref().unwrap(), &(vec![1.5, 2.0], 1.0, 1.0));
        let e = rows[1].as_ref().unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (3, Some("b,c")), "{e}");
        // The BOM is not part of the first name.
        let p = TextParser::new(&b"\xEF\xBB\xBFx,label\n"[..], "t", TextFormat::Csv, &TextOptions::default()).unwrap();
        assert_eq!(p.feature_names().unwrap(), vec!["x".to_string()]);
        // A name twice is an error.
        let e = TextParser::new(&b"x,y,x,label\n"[..], "t", TextFormat::Csv, &TextOptions::default()).err().unwrap();
        assert!(e.what.contains("'x' twice (columns 1 and 3)"), "{e}");
        // Columns by a model's names: reordered; a missing or an extra one is an error naming it.
        let order = TextOptions { feature_order: Some(vec!["b".into(), "a".into()]), ..Default::default() };
        let rows = parse_all(TextFormat::Csv, "a,b,label\n1,2,0\n", &order);
        assert_eq!(rows[0].as_ref().unwrap(), &(vec![2.0, 1.0], 0.0, 1.0));
        let e = TextParser::new(&b"a,c,label\n"[..], "t", TextFormat::Csv, &order).err().unwrap();
        assert!(e.what.contains("missing 'b'") && e.what.contains("not in the model 'c'"), "{e}");
        // A long bad cell is cut in the message.
        let long = "9".repeat(100) + "x";
        let rows = parse_all(TextFormat::Csv, &format!("a,label\n{long},1\n"), &TextOptions::default());
        let e = rows[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("(101 bytes) is not a number") && e.len() < 200, "{e}");
    }

    #[test]
    fn csv_label_by_name_and_missing() {
        let opts = TextOptions { label: Some(LabelColumn::Name("y".into())), ..Default::default() };
        let rows = parse_all(TextFormat::Csv, "a,y,b\n1,0,2\n,1,NA\n3.5,1,x\n1,2\n", &opts);
        assert_eq!(rows[0].as_ref().unwrap(), &(vec![1.0, 2.0], 0.0, 1.0));
        let r1 = rows[1].as_ref().unwrap();
        assert!(r1.0[0].is_nan() && r1.0[1].is_nan());
        let e = rows[2].as_ref().unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (4, Some("b")));
        assert!(e.to_string().contains("t:4: field b: 'x' is not a number"), "{e}");
        assert!(rows[3].as_ref().unwrap_err().what.contains("2 cells"));
    }

    #[test]
    fn csv_without_a_label_column() {
        let opts = TextOptions { label: Some(LabelColumn::parse("none")), ..Default::default() };
        let rows = parse_all(TextFormat::Csv, "a,b\n1,2\n3,\n", &opts);
        let r0 = rows[0].as_ref().unwrap();
        assert_eq!((&r0.0, r0.1.is_nan()), (&vec![1.0, 2.0], true));
        assert!(rows[1].as_ref().unwrap().0[1].is_nan());
    }

    #[test]
    fn csv_timestamp_column() {
        let opts = TextOptions { timestamp: Some(LabelColumn::Name("ts".into())), ..Default::default() };
        let text = "ts,a,label\n1700000000.5,1,0\n2026-11-24T10:00:00.250Z,2,1\n2026-11-24 10:00:01,3,1\n";
        let rows = parse_all(TextFormat::Csv, text, &opts);
        let parser = TextParser::new(text.as_bytes(), "t", TextFormat::Csv, &opts).unwrap();
        assert_eq!((parser.features(), parser.feature_names()), (1, Some(vec!["a".to_string()])));
        assert_eq!(rows[0].as_ref().unwrap().0, vec![1.0]);
        let mut p = TextParser::new(text.as_bytes(), "t", TextFormat::Csv, &opts).unwrap();
        let mut x = [0.0];
        let times: Vec<f64> = std::iter::from_fn(|| p.next_row(&mut x).unwrap()).map(|r| r.time).collect();
        assert_eq!(times, vec![1_700_000_000.5, 1_795_514_400.25, 1_795_514_401.0]);
        let bad = TextParser::new(
            "ts,label\n".as_bytes(),
            "t",
            TextFormat::Csv,
            &TextOptions { timestamp: Some(LabelColumn::Index(1)), ..Default::default() },
        );
        assert!(bad.is_err_and(|e| e.what.contains("both the label and the timestamp")));
        let vw = TextParser::new("".as_bytes(), "t", TextFormat::Vw, &opts);
        assert!(vw.is_err_and(|e| e.what.contains("needs CSV")));
    }

    #[test]
    fn csv_header_errors() {
        let opts = TextOptions { label: Some(LabelColumn::Name("nope".into())), ..Default::default() };
        assert!(TextParser::new("a,b\n".as_bytes(), "t", TextFormat::Csv, &opts).is_err());
        assert!(TextParser::new("1,2\n".as_bytes(), "t", TextFormat::Csv, &TextOptions::default()).is_err());
        assert!(TextParser::new("".as_bytes(), "t", TextFormat::Csv, &TextOptions::default()).is_err());
    }

    #[test]
    fn libsvm_rows_and_errors() {
        let opts = TextOptions { features: Some(3), ..Default::default() };
        let rows = parse_all(TextFormat::Libsvm, "1 1:0.5 3:2\n-1 2:1 # c\n0 0:1\n1 4:1\n1 2:abc\n", &opts);
        assert_eq!(rows[0].as_ref().unwrap().0, vec![0.5, 0.0, 2.0]);
        assert_eq!(rows[1].as_ref().unwrap().1, -1.0);
        assert!(rows[2].as_ref().unwrap_err().what.contains("1-based"));
        assert!(rows[3].as_ref().unwrap_err().what.contains("exceeds"));
        assert_eq!(rows[4].as_ref().unwrap_err().line, 5);
    }

    #[test]
    fn vw_named_hashed_and_discovery() {
        let text = "1 2.0 'tag|f a:1 b:2 |g c\n-1 |f b:3\n";
        let mut p = TextParser::new(text.as_bytes(), "t", TextFormat::Vw, &TextOptions::default()).unwrap();
        while p.next_row(&mut []).unwrap().is_some() {}
        let (d, names) = p.discovered();
        assert_eq!(d, 3);
        let opts = TextOptions { vw_names: names, ..Default::default() };
        let rows = parse_all(TextFormat::Vw, text, &opts);
        assert_eq!(rows[0].as_ref().unwrap(), &(vec![1.0, 2.0, 1.0], 1.0, 2.0));
        assert_eq!(rows[1].as_ref().unwrap(), &(vec![0.0, 3.0, 0.0], -1.0, 1.0));
        let hashed = parse_all(TextFormat::Vw, text, &TextOptions { features: Some(1), ..Default::default() });
        let x = hashed[0].as_ref().unwrap().0[0];
        assert!([-4.0f32, -2.0, 0.0, 2.0, 4.0].contains(&x) || x.abs() <= 4.0);
        assert!(parse_all(TextFormat::Vw, "|f a:1\n", &opts)[0].is_err());
    }
}
