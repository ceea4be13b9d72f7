//! Text into sparse rows: VW lines with namespaces hashed to 32-bit feature ids, LibSVM lines
//! whose indices are the ids. Every bad line is an error naming the source, line and field;
//! after one that is not fatal the next call goes on with the following line.
//!
//! VW: `label [importance] ['tag] |ns[:scale] name[:value] ... |ns2 ...`; a space right after
//! `|` is the default namespace; a value of 0 is left out (as Vowpal Wabbit does); a line with
//! no label is unlabelled (label NaN: what `predict` reads). The namespace tag is the
//! namespace's first byte (a space for the default one), which `--interactions` names.
//! LibSVM: `label index:value ...` with any index up to 2^32 − 1 (`qid:` is skipped).
//! CSV (with `--categorical`): a header row; a categorical column's cell `v` is the feature `v`
//! of the namespace named as the column (as VW's `|column v`), a numeric column's cell `x` the
//! feature of empty name and value x (`|column :x`); an empty or NaN cell is left out.
//! No `unsafe` here.

use super::rows::SparseRows;
use crate::source::hash::{namespace_hash, NamespaceKey, Seeded};
use crate::source::text::{
    column_index, csv_cells, cut, is_record, number, read_csv_header, read_record, split_ws, timestamp, trim, LabelColumn,
};
use crate::source::{ParseError, TextFormat};
use crate::transform::Missing;
use std::io::BufRead;

/// The tag of VW's default namespace (and of every LibSVM feature).
pub const DEFAULT_NS: u8 = b' ';

/// Reads sparse rows from VW or LibSVM text.
pub struct SparseParser<R> {
    reader: R,
    source: String,
    format: TextFormat,
    seed: u64,
    line: Vec<u8>,
    line_no: u64,
    bytes: u64,
    require_newline: bool,
    /// The largest LibSVM index seen.
    pub max_index: u64,
    /// Cached namespaces (name, key): lines repeat the same few namespaces.
    ns_cache: Vec<(Vec<u8>, NamespaceKey)>,
    /// With [`SparseParser::keep_names`]: the last row's feature names (`ns^name`, LibSVM: the
    /// index), in feature order.
    names: Option<Vec<String>>,
    /// CSV: the columns and the label's position.
    csv: Option<CsvColumns>,
    /// What a NaN value is ([`SparseParser::set_missing`]).
    missing: Missing,
    /// The line being parsed has a NaN value and is dropped (`Missing::Drop`).
    drop_row: bool,
    /// NaN values left out (`Missing::Zero`), and rows dropped for one (`Missing::Drop`).
    pub missing_cells: u64,
    /// Rows dropped for a NaN value.
    pub missing_rows: u64,
    /// The last row's event time (a CSV timestamp column; NaN without one).
    time: f64,
}

/// How a CSV's columns become sparse features.
#[derive(Clone)]
struct CsvColumns {
    /// Per column: its name, namespace key and tag, and whether it is categorical.
    columns: Vec<(String, NamespaceKey, u8, bool)>,
    /// The label's column (`usize::MAX`: none).
    label: usize,
    /// The event time's column (`usize::MAX`: none): not a feature.
    time: usize,
}

impl<R: BufRead> SparseParser<R> {
    /// A parser of `format` (VW or LibSVM) text from `reader`, named `source` in errors, VW
    /// names hashed with `seed`.
    pub fn new(reader: R, source: impl Into<String>, format: TextFormat, seed: u64) -> Result<Self, ParseError> {
        let source = source.into();
        if format == TextFormat::Csv {
            return Err(ParseError {
                source,
                line: 0,
                field: None,
                what: "a CSV is read as sparse rows with --categorical COLUMNS (otherwise as dense columns)".into(),
                fatal: true,
            });
        }
        Ok(SparseParser {
            reader,
            source,
            format,
            seed,
            line: Vec::new(),
            line_no: 0,
            bytes: 0,
            require_newline: false,
            max_index: 0,
            ns_cache: Vec::new(),
            names: None,
            csv: None,
            missing: Missing::Reject,
            drop_row: false,
            missing_cells: 0,
            missing_rows: 0,
            time: f64::NAN,
        })
    }

    /// A parser of CSV text whose `categorical` columns are hashed (the others are numeric):
    /// reads the header row. `label`: the label column (default: label, target, y, else the
    /// last).
    pub fn csv(
        mut reader: R,
        source: impl Into<String>,
        seed: u64,
        label: Option<&LabelColumn>,
        categorical: &[String],
    ) -> Result<Self, ParseError> {
        let source = source.into();
        let head = read_csv_header(&mut reader, &source, label)?;
        let bad = |what: String| ParseError { source: source.clone(), line: 1, field: None, what, fatal: false };
        for c in categorical {
            match head.columns.iter().position(|n| n == c) {
                None => return Err(bad(format!("--categorical {c}: no such column in the header ({})", cut(&head.columns.join(","))))),
                Some(i) if i == head.label => return Err(bad(format!("--categorical {c}: it is the label column"))),
                Some(_) => {}
            }
        }
        let columns = head
            .columns
            .iter()
            .map(|n| {
                let key = NamespaceKey::new(namespace_hash(n.as_bytes(), seed));
                (n.clone(), key, n.bytes().next().unwrap_or(DEFAULT_NS), categorical.contains(n))
            })
            .collect();
        let mut p = SparseParser::new(reader, source, TextFormat::Vw, seed)?;
        p.format = TextFormat::Csv;
        p.line_no = 1;
        p.bytes = head.bytes;
        p.csv = Some(CsvColumns { columns, label: head.label, time: usize::MAX });
        Ok(p)
    }

    /// A parser of the same text (format, seed, CSV columns) over `reader`, numbering lines
    /// from `line` + 1: a shard parsing its own ranges of a file, or the held-out lines.
    pub fn detached<R2>(&self, reader: R2, line: u64) -> SparseParser<R2> {
        SparseParser {
            reader,
            source: self.source.clone(),
            format: self.format,
            seed: self.seed,
            line: Vec::new(),
            line_no: line,
            bytes: 0,
            require_newline: false,
            max_index: 0,
            ns_cache: Vec::new(),
            names: None,
            csv: self.csv.clone(),
            missing: self.missing,
            drop_row: false,
            missing_cells: 0,
            missing_rows: 0,
            time: f64::NAN,
        }
    }

    /// What a NaN value of VW or LibSVM text is: an error (`Reject`, the default), a feature
    /// left out (`Zero`: an absent sparse feature is zero), or a row dropped (`Drop`); both
    /// counted ([`SparseParser::missing_cells`], [`SparseParser::missing_rows`]). `Mean` has no
    /// meaning for hashed features: the caller refuses it.
    pub fn set_missing(&mut self, missing: Missing) {
        self.missing = missing;
    }

    /// Numbers the lines that follow from `line` + 1.
    pub fn restart_lines(&mut self, line: u64) {
        self.line_no = line;
    }

    /// A record must end with a newline (sockets: a sender that closes mid-line loses it).
    pub fn require_newline(&mut self) {
        self.require_newline = true;
    }

    /// Keeps each row's feature names (for `inspect`: slower, off by default).
    pub fn keep_names(&mut self) {
        self.names = Some(Vec::new());
    }

    /// The names of the last row's features, with [`SparseParser::keep_names`].
    pub fn names(&self) -> &[String] {
        self.names.as_deref().unwrap_or_default()
    }

    /// Reads the CSV column `spec` names as each row's event time ([`SparseParser::time`]), not
    /// as a feature (`IfPresent`: only if the header has it).
    pub fn set_timestamp(&mut self, spec: &LabelColumn) -> Result<(), ParseError> {
        let bad = |what: String| ParseError { source: self.source.clone(), line: 1, field: None, what, fatal: false };
        let Some(csv) = self.csv.as_mut() else {
            return Err(bad("a timestamp column needs CSV input (VW and LibSVM lines have no named columns)".into()));
        };
        let names: Vec<String> = csv.columns.iter().map(|c| c.0.clone()).collect();
        let at = match spec {
            LabelColumn::IfPresent(n) => match names.iter().position(|c| c == n) {
                Some(i) => i,
                None => return Ok(()),
            },
            spec => column_index(&names, spec, "timestamp").map_err(bad)?,
        };
        if at == csv.label {
            return Err(bad(format!("column '{}' cannot be both the label and the timestamp", names[at])));
        }
        csv.time = at;
        Ok(())
    }

    /// The timestamp column's name, if one is read.
    pub fn timestamp_name(&self) -> Option<&str> {
        let csv = self.csv.as_ref()?;
        csv.columns.get(csv.time).map(|c| c.0.as_str())
    }

    /// The event time of the last row parsed, seconds since the epoch (NaN without a
    /// timestamp column).
    pub fn time(&self) -> f64 {
        self.time
    }

    /// A CSV's label column name (`None` for VW, LibSVM, or a CSV without one).
    pub fn label_name(&self) -> Option<&str> {
        let csv = self.csv.as_ref()?;
        csv.columns.get(csv.label).map(|c| c.0.as_str())
    }

    /// The source's name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Lines read so far.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    fn bad(&self, field: Option<&[u8]>, what: String) -> ParseError {
        let field = field.map(|f| cut(&String::from_utf8_lossy(f)).to_string());
        ParseError { source: self.source.clone(), line: self.line_no, field, what, fatal: false }
    }

    /// Appends the next row to `out`; `Ok(false)` at the end of the input. Blank lines and
    /// `#` comments are skipped.
    pub fn next_row(&mut self, out: &mut SparseRows) -> Result<bool, ParseError> {
        loop {
            if read_record(&mut self.reader, &mut self.line, &self.source, self.line_no + 1, self.require_newline)? == 0 {
                return Ok(false);
            }
            let line = std::mem::take(&mut self.line);
            let result = self.parse_record(&line, out);
            self.line = line;
            if result? {
                return Ok(true);
            }
        }
    }

    /// Parses one line (counted as read) into `out`; `Ok(false)` for a blank or comment line.
    /// On an error `out` is left as it was.
    pub fn parse_record(&mut self, line: &[u8], out: &mut SparseRows) -> Result<bool, ParseError> {
        self.bytes += line.len() as u64;
        self.line_no += 1;
        if let Some(n) = &mut self.names {
            n.clear();
        }
        let body = trim(line);
        if !is_record(body, self.format) {
            return Ok(false);
        }
        self.drop_row = false;
        let result = match self.format {
            TextFormat::Vw => self.parse_vw(body, out),
            TextFormat::Csv => self.parse_csv(body, out),
            TextFormat::Libsvm => self.parse_libsvm(body, out),
        };
        if result.is_err() {
            out.abandon_row();
        }
        result?;
        if self.drop_row {
            out.pop_row();
            self.missing_rows += 1;
            return Ok(false);
        }
        Ok(true)
    }

    fn value(&mut self, tok: &[u8], text: &[u8]) -> Result<f32, ParseError> {
        match number(text) {
            Ok(x) if x.is_finite() => Ok(x),
            Ok(x) if x.is_nan() => match self.missing {
                // Zero: left out, as an absent feature is (a zero value is never stored).
                Missing::Zero => {
                    self.missing_cells += 1;
                    Ok(0.0)
                }
                Missing::Drop => {
                    self.drop_row = true;
                    Ok(0.0)
                }
                Missing::Reject | Missing::Mean => Err(self.bad(
                    Some(tok),
                    "the value is NaN (missing): --missing zero leaves the feature out, --missing drop drops the row".into(),
                )),
            },
            Ok(_) => Err(self.bad(Some(tok), "the value is infinite".into())),
            Err(e) => Err(self.bad(Some(tok), e)),
        }
    }

    fn label(&self, tok: &[u8]) -> Result<f32, ParseError> {
        match number(tok) {
            Ok(y) if !y.is_nan() => Ok(y),
            Ok(_) => Err(self.bad(Some(b"label"), "label is missing (NaN)".into())),
            Err(e) => Err(self.bad(Some(b"label"), e)),
        }
    }

    fn parse_libsvm(&mut self, body: &[u8], out: &mut SparseRows) -> Result<(), ParseError> {
        let body = body.split(|&c| c == b'#').next().unwrap_or_default();
        let mut tokens = split_ws(body);
        let y = self.label(tokens.next().unwrap_or_default())?;
        for tok in tokens {
            let Some(colon) = memchr::memchr(b':', tok) else {
                return Err(self.bad(Some(tok), "expected index:value".into()));
            };
            let (idx, val) = (&tok[..colon], &tok[colon + 1..]);
            if idx == b"qid" {
                continue;
            }
            let idx = parse_index(idx).ok_or_else(|| {
                self.bad(Some(tok), "the index is not an integer from 0 to 4294967295 (sparse feature ids are 32-bit)".into())
            })?;
            let x = self.value(tok, val)?;
            self.max_index = self.max_index.max(u64::from(idx));
            if x != 0.0 {
                out.push_feature(idx, x, DEFAULT_NS);
                if let Some(n) = &mut self.names {
                    n.push(idx.to_string());
                }
            }
        }
        check_duplicates(out).map_err(|id| self.bad(None, format!("index {id} appears twice on the line")))?;
        out.end_row(y, 1.0);
        Ok(())
    }

    fn parse_csv(&mut self, body: &[u8], out: &mut SparseRows) -> Result<(), ParseError> {
        let csv = self.csv.take().expect("a CSV parser has its columns");
        let result = self.csv_row(&csv, body, out);
        self.csv = Some(csv);
        result
    }

    fn csv_row(&mut self, csv: &CsvColumns, body: &[u8], out: &mut SparseRows) -> Result<(), ParseError> {
        let cells = csv_cells(body).map_err(|e| self.bad(None, e))?;
        if cells.len() != csv.columns.len() {
            return Err(self.bad(None, format!("{} cells, the header has {} columns", cells.len(), csv.columns.len())));
        }
        let mut y = f32::NAN;
        for (i, (cell, (name, ns, tag, categorical))) in cells.iter().zip(&csv.columns).enumerate() {
            let cell = trim(cell);
            if i == csv.label {
                y = self.label(cell).map_err(|e| ParseError { field: Some(cut(name).to_string()), ..e })?;
                continue;
            }
            if i == csv.time {
                self.time = timestamp(cell).map_err(|e| self.bad(Some(name.as_bytes()), e))?;
                continue;
            }
            if cell.is_empty() {
                continue;
            }
            if *categorical {
                out.push_feature(ns.feature_id(cell), 1.0, *tag);
                if let Some(n) = &mut self.names {
                    n.push(format!("{name}^{}", String::from_utf8_lossy(cell)));
                }
                continue;
            }
            let x = match number(cell) {
                Ok(x) if x.is_nan() => continue,
                Ok(x) => x,
                Err(e) => return Err(self.bad(Some(name.as_bytes()), format!("{e} (a text column is read with --categorical {name})"))),
            };
            if x != 0.0 {
                out.push_feature(ns.feature_id(b""), x, *tag);
                if let Some(n) = &mut self.names {
                    n.push(format!("{name}^"));
                }
            }
        }
        out.end_row(y, 1.0);
        Ok(())
    }

    fn namespace(&mut self, name: &[u8]) -> NamespaceKey {
        // Compared byte by byte: names are a few bytes, shorter than a `memcmp` call costs.
        let same = |n: &[u8]| n.len() == name.len() && n.iter().zip(name).all(|(a, b)| a == b);
        if let Some((_, key)) = self.ns_cache.iter().find(|(n, _)| same(n)) {
            return *key;
        }
        let key = NamespaceKey::new(namespace_hash(name, self.seed));
        if self.ns_cache.len() < 64 {
            self.ns_cache.push((name.to_vec(), key));
        }
        key
    }

    fn parse_vw(&mut self, body: &[u8], out: &mut SparseRows) -> Result<(), ParseError> {
        let bar = memchr::memchr(b'|', body).unwrap_or(body.len());
        let mut head = split_ws(&body[..bar]);
        let y = match head.next() {
            Some(tok) => self.label(tok)?,
            None => f32::NAN,
        };
        let mut weight = 1.0;
        if let Some(tok) = head.next().filter(|t| t[0] != b'\'') {
            // An importance weight when numeric, otherwise a tag.
            if let Ok(w) = number(tok) {
                if !(w.is_finite() && w >= 0.0) {
                    return Err(self.bad(Some(b"importance"), format!("importance {w} is not a finite non-negative number")));
                }
                weight = w;
            }
        }
        if bar == body.len() {
            return Err(self.bad(None, "no '|': a VW line needs at least one namespace of features".into()));
        }
        for part in body[bar + 1..].split(|&c| c == b'|') {
            // `|ns[:scale] feat[:value] ...`; a space right after '|' is the default namespace.
            let (ns_tok, rest) = match part.first() {
                Some(b' ' | b'\t') | None => (&b""[..], part),
                _ => {
                    let end = part.iter().position(|&c| c == b' ' || c == b'\t').unwrap_or(part.len());
                    (&part[..end], &part[end..])
                }
            };
            let (ns, scale) = match memchr::memchr(b':', ns_tok) {
                Some(c) => (&ns_tok[..c], self.value(ns_tok, &ns_tok[c + 1..])?),
                None => (ns_tok, 1.0),
            };
            let tag = ns.first().copied().unwrap_or(DEFAULT_NS);
            let h = self.namespace(ns);
            for tok in split_ws(rest) {
                // Tokens are short: a plain scan beats `memrchr`'s call.
                let (name, x) = match tok.iter().rposition(|&c| c == b':') {
                    Some(c) => (&tok[..c], self.value(tok, &tok[c + 1..])? * scale),
                    None => (tok, scale),
                };
                if x != 0.0 {
                    out.push_feature(h.feature_id(name), x, tag);
                    if let Some(n) = &mut self.names {
                        n.push(format!("{}^{}", String::from_utf8_lossy(ns), String::from_utf8_lossy(name)));
                    }
                }
            }
        }
        out.end_row(y, weight);
        Ok(())
    }
}

/// A feature as a program names it (a River `dict` entry, a JSON field): a number, or a
/// category.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Named<'a> {
    /// A numeric feature's value (NaN: missing).
    Number(f32),
    /// A categorical feature's value.
    Category(&'a str),
}

/// A named feature that cannot be learned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("feature {name}: {what}")]
pub struct NamedError {
    /// The feature.
    pub name: String,
    /// What is wrong.
    pub what: &'static str,
}

/// A named feature that cannot be learned, by its position in the row (see [`push_keyed`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("feature {position} of the row: {what}")]
pub struct KeyedError {
    /// The feature's position in the row (from 0).
    pub position: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl KeyedError {
    /// The error with the feature's name in place of its position.
    pub fn named(self, name: &str) -> NamedError {
        NamedError { name: name.to_string(), what: self.what }
    }
}

/// A feature name hashed under a model's seed, once: a program that keeps the keys of the
/// names it sees (a dict's keys, a schema's columns) hashes each value only (see
/// [`push_keyed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameKey {
    key: NamespaceKey,
    /// The id of the name's numeric feature.
    number: u32,
    /// Its namespace tag for crosses: the name's first byte.
    tag: u8,
}

impl NameKey {
    /// The key of feature `name` under hash seed `seed`.
    pub fn new(seed: Seeded, name: &str) -> Self {
        let key = NamespaceKey::new(seed.namespace_hash(name.as_bytes()));
        NameKey { key, number: key.feature_id(b""), tag: name.bytes().next().unwrap_or(DEFAULT_NS) }
    }
}

/// Appends a row of `features`, labelled `y`, to `out`, hashed with `seed` as a CSV's columns
/// are (a number: column `name` of value x; a category: `name` = value, of value 1), so a model
/// trained on a CSV with `--categorical` gives the same predictions from them. A NaN number is
/// what `missing` says: left out (`Zero`), the row not appended (`Drop`: returns false), or an
/// error. Zero numbers are left out, as a sparse row stores none.
pub fn push_named<'a>(
    out: &mut SparseRows,
    seed: u64,
    missing: Missing,
    features: impl IntoIterator<Item = (&'a str, Named<'a>)>,
    y: f32,
) -> Result<bool, NamedError> {
    let seeded = Seeded::new(seed);
    // The name of the feature at fault is the last one hashed.
    let mut last = "";
    let keyed = features.into_iter().map(|(name, value)| {
        last = name;
        (NameKey::new(seeded, name), value)
    });
    push_keyed(out, missing, keyed, y).map_err(|e| e.named(last))
}

/// [`push_named`] with the names already hashed (their [`NameKey`]s, under the model's seed).
pub fn push_keyed<'a>(
    out: &mut SparseRows,
    missing: Missing,
    features: impl IntoIterator<Item = (NameKey, Named<'a>)>,
    y: f32,
) -> Result<bool, KeyedError> {
    for (position, (name, value)) in features.into_iter().enumerate() {
        let (id, x) = match value {
            Named::Category(c) => (name.key.feature_id(c.as_bytes()), 1.0),
            Named::Number(x) if x.is_nan() => match missing {
                Missing::Zero => continue,
                Missing::Drop => {
                    out.abandon_row();
                    return Ok(false);
                }
                Missing::Reject | Missing::Mean => {
                    out.abandon_row();
                    let what = "the value is NaN (missing): a model with missing = zero leaves it out, drop drops the row";
                    return Err(KeyedError { position, what });
                }
            },
            Named::Number(x) if x.is_infinite() => {
                out.abandon_row();
                return Err(KeyedError { position, what: "the value is infinite" });
            }
            Named::Number(x) => (name.number, x),
        };
        if x != 0.0 {
            out.push_feature(id, x, name.tag);
        }
    }
    out.end_row(y, 1.0);
    Ok(true)
}

fn parse_index(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |a, &c| Some(a * 10 + u64::from(c - b'0'))).and_then(|v| u32::try_from(v).ok())
}

/// The first id repeated in the row being built (LibSVM: an index twice is an error, not
/// "the last wins").
fn check_duplicates(out: &SparseRows) -> Result<(), u32> {
    let start = *out.offsets.last().expect("offsets start with 0") as usize;
    let ids = &out.ids[start..];
    if ids.windows(2).all(|w| w[0] < w[1]) {
        return Ok(());
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).find(|w| w[0] == w[1]).map_or(Ok(()), |w| Err(w[0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::hash::feature_id;

    fn parse(format: TextFormat, text: &str) -> (SparseRows, Vec<Result<bool, ParseError>>) {
        let mut p = SparseParser::new(text.as_bytes(), "t", format, 0).unwrap();
        let mut rows = SparseRows::new();
        let mut results = Vec::new();
        loop {
            let r = p.next_row(&mut rows);
            let end = matches!(r, Ok(false));
            results.push(r);
            if end {
                return (rows, results);
            }
        }
    }

    #[test]
    fn vw_namespaces_values_weights_tags() {
        let (rows, res) = parse(TextFormat::Vw, "1 2.5 'tag |user id=7 age:0.5 |ad:2 x z:0\n-1 |user id=7\n|user id=8\n");
        assert!(res.iter().all(|r| r.is_ok()));
        let v = rows.as_ref();
        assert_eq!(v.len(), 3);
        assert_eq!((v.labels[0], v.weight(0)), (1.0, 2.5));
        let r = v.row(0);
        assert_eq!(r.ns, b"uua", "z:0 is left out");
        assert_eq!((r.value(1), r.value(2)), (0.5, 2.0));
        let h = namespace_hash(b"user", 0);
        assert_eq!(r.ids[0], feature_id(h, b"id=7"));
        assert_eq!(v.row(1).ids[0], r.ids[0], "the same name in the same namespace: the same id");
        assert!(v.labels[2].is_nan(), "no label: unlabelled");
    }

    #[test]
    fn csv_categorical_hashes_as_vw_namespaces() {
        let text = "age,work,label\n39,\"Private, Inc\",1\n,State,0\n50,,1\n";
        let mut p = SparseParser::csv(text.as_bytes(), "t", 0, None, &["work".to_string()]).unwrap();
        let mut rows = SparseRows::new();
        while p.next_row(&mut rows).unwrap() {}
        let mut vw = SparseParser::new(&b"1 |age :39 |work Private, Inc\n0 |work State\n1 |age :50\n"[..], "v", TextFormat::Vw, 0).unwrap();
        let mut want = SparseRows::new();
        while vw.next_row(&mut want).unwrap() {}
        assert_eq!(rows.labels, [1.0, 0.0, 1.0]);
        assert_eq!(rows.as_ref().row(1).ids, want.as_ref().row(1).ids);
        assert_eq!(rows.as_ref().row(2).ids, want.as_ref().row(2).ids);
        assert_eq!(rows.as_ref().row(0).ids[0], want.as_ref().row(0).ids[0]);
        assert_eq!(rows.as_ref().row(0).ns, b"aw");
        let e = SparseParser::csv(&b"a,b,label\n"[..], "t", 0, None, &["c".to_string()]).err().unwrap();
        assert!(e.to_string().contains("--categorical c: no such column"), "{e}");
        let mut p = SparseParser::csv(&b"a,b,label\nx,1,1\n"[..], "t", 0, None, &["b".to_string()]).unwrap();
        let e = p.next_row(&mut rows).unwrap_err();
        assert!(e.to_string().contains("t:2: field a: 'x' is not a number (a text column is read with --categorical a)"), "{e}");
    }

    #[test]
    fn libsvm_ids_are_indices() {
        let (rows, res) = parse(TextFormat::Libsvm, "1 4000000000:1 3:0.5 qid:2\n0 1:1\n");
        assert!(res.iter().all(|r| r.is_ok()));
        assert_eq!(rows.as_ref().row(0).ids, &[4_000_000_000, 3]);
    }

    #[test]
    fn bad_lines_name_line_and_field_and_keep_the_batch() {
        for (format, text, want) in [
            (TextFormat::Libsvm, "1 1:1\n1 5000000000:1\n", "t:2: field 5000000000:1: the index is not an integer"),
            (TextFormat::Libsvm, "1 1:1\n1 2:1 2:3\n", "t:2: index 2 appears twice"),
            (TextFormat::Libsvm, "1 1:1\n1 2:nan\n", "t:2: field 2:nan: the value is NaN"),
            (TextFormat::Libsvm, "1 1:1\nx 2:1\n", "t:2: field label: 'x' is not a number"),
            (TextFormat::Vw, "1 |a x\n1 a b\n", "t:2: no '|'"),
            (TextFormat::Vw, "1 |a x\n1 -3 |a b\n", "t:2: field importance: importance -3"),
            (TextFormat::Vw, "1 |a x\n1 |a b:z\n", "t:2: field b:z: 'z' is not a number"),
        ] {
            let (rows, res) = parse(format, text);
            let e = res.iter().find_map(|r| r.as_ref().err()).unwrap_or_else(|| panic!("{text}"));
            assert!(e.to_string().starts_with(want), "{e} / {want}");
            assert_eq!((rows.len(), rows.nnz()), (1, 1), "the bad row left nothing behind");
        }
    }
}
