//! The native encoding of sparse rows, for Kafka records (`produce` of a sparse `.ssgd` file):
//! rows back to back, each `label f32 | importance f32 | n u32 | n ids u32 | n values f32 |
//! n namespace tags u8`, little-endian. A record holds whole rows; decoding checks every
//! length and value and names the row (1-based within the record) and field at fault. No
//! `unsafe` here.

use super::rows::{RowsRef, SparseRows};

/// The most features a native row may claim (a larger count is a damaged record, not a row).
pub const MAX_FEATURES: u32 = 1 << 24;

/// Bytes of a row's fixed part (label, importance, count).
const HEAD: usize = 12;

/// Appends row `r` of `rows` in the native encoding.
pub fn encode_row(rows: &RowsRef<'_>, r: usize, out: &mut Vec<u8>) {
    let row = rows.row(r);
    let n = row.ids.len();
    out.reserve(HEAD + 9 * n);
    out.extend_from_slice(&rows.labels[r].to_le_bytes());
    out.extend_from_slice(&rows.weight(r).to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for id in row.ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    for k in 0..n {
        out.extend_from_slice(&row.value(k).to_le_bytes());
    }
    out.extend_from_slice(row.ns);
}

/// A row of a record that cannot be read: which (1-based), the field, what is wrong, and
/// whether the rest of the record is lost too (a length that does not fit).
#[derive(Debug, Clone, PartialEq)]
pub struct NativeError {
    /// The row within the record, from 1.
    pub row: u64,
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong.
    pub what: String,
    /// The record's remaining bytes cannot be read as rows.
    pub fatal: bool,
}

/// Decodes the rows of `bytes` into `out`, calling `bad` for each row whose values cannot be
/// learned (it is left out) and stopping at a length that does not fit (every row before it
/// kept). Returns the rows decoded.
pub fn decode(bytes: &[u8], out: &mut SparseRows, mut bad: impl FnMut(NativeError)) -> usize {
    let (mut at, mut row, mut kept) = (0usize, 0u64, 0usize);
    let f32_at = |b: &[u8], i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    while at < bytes.len() {
        row += 1;
        let rest = &bytes[at..];
        let fatal = |what: String| NativeError { row, field: "length", what, fatal: true };
        if rest.len() < HEAD {
            bad(fatal(format!("the record ends {} bytes into a row (a row starts with {HEAD})", rest.len())));
            return kept;
        }
        let (label, weight) = (f32_at(rest, 0), f32_at(rest, 4));
        let n = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if n > MAX_FEATURES {
            bad(fatal(format!("a row of {n} features (at most {MAX_FEATURES}): not a native sparse record")));
            return kept;
        }
        let len = HEAD + 9 * n as usize;
        if rest.len() < len {
            bad(fatal(format!("a row of {n} features takes {len} bytes, the record has {} left", rest.len())));
            return kept;
        }
        at += len;
        let value = |k: usize| f32_at(rest, HEAD + 4 * n as usize + 4 * k);
        let problem = if label.is_nan() {
            Some(("label", "label is missing (NaN)".to_string()))
        } else if !(weight.is_finite() && weight >= 0.0) {
            Some(("importance", format!("importance {weight} is not a finite non-negative number")))
        } else {
            (0..n as usize).find(|&k| !value(k).is_finite()).map(|k| ("value", format!("feature {} has value {}", k + 1, value(k))))
        };
        if let Some((field, what)) = problem {
            bad(NativeError { row, field, what, fatal: false });
            continue;
        }
        let ids = &rest[HEAD..HEAD + 4 * n as usize];
        let ns = &rest[HEAD + 8 * n as usize..len];
        for (k, (id, &tag)) in ids.chunks_exact(4).zip(ns).enumerate() {
            let x = value(k);
            if x != 0.0 {
                out.push_feature(u32::from_le_bytes([id[0], id[1], id[2], id[3]]), x, tag);
            }
        }
        out.end_row(label, weight);
        kept += 1;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SparseRows {
        let mut rows = SparseRows::new();
        rows.push_feature(7, 1.0, b'a');
        rows.push_feature(u32::MAX, -2.5, b'b');
        rows.end_row(1.0, 1.0);
        rows.end_row(0.0, 3.0); // no features
        rows.push_feature(42, 0.25, 0);
        rows.end_row(-1.0, 0.5);
        rows
    }

    #[test]
    fn rows_round_trip() {
        let rows = sample();
        let mut bytes = Vec::new();
        for r in 0..rows.len() {
            encode_row(&rows.as_ref(), r, &mut bytes);
        }
        let mut back = SparseRows::new();
        let mut errors = Vec::new();
        assert_eq!(decode(&bytes, &mut back, |e| errors.push(e)), 3);
        assert!(errors.is_empty());
        assert_eq!((back.offsets, back.ids, back.values, back.ns), (rows.offsets, rows.ids, rows.values, rows.ns));
        assert_eq!((back.labels, back.weights), (rows.labels, rows.weights));
    }

    #[test]
    fn bad_rows_are_named_and_truncation_stops_the_record() {
        let rows = sample();
        let mut bytes = Vec::new();
        for r in 0..rows.len() {
            encode_row(&rows.as_ref(), r, &mut bytes);
        }
        // Every cut short of the end loses the cut row, names it, and keeps the rows before.
        let first = HEAD + 9 * 2;
        for cut in 1..bytes.len() {
            let (mut out, mut errors) = (SparseRows::new(), Vec::new());
            let kept = decode(&bytes[..cut], &mut out, |e| errors.push(e));
            assert_eq!(errors.len(), usize::from(cut != first && cut != first + HEAD), "cut {cut}");
            assert!(errors.iter().all(|e| e.fatal && e.field == "length" && e.row == kept as u64 + 1), "{errors:?}");
        }
        // A NaN label, a negative importance and an infinite value: the row is left out.
        for (offset, v, field) in [(0, f32::NAN, "label"), (4, -1.0, "importance"), (HEAD + 8 + 4, f32::INFINITY, "value")] {
            let mut b = bytes.clone();
            b[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
            let (mut out, mut errors) = (SparseRows::new(), Vec::new());
            assert_eq!(decode(&b, &mut out, |e| errors.push(e)), 2);
            assert_eq!((errors.len(), errors[0].row, errors[0].field, errors[0].fatal), (1, 1, field, false), "{errors:?}");
            assert_eq!(out.labels, vec![0.0, -1.0]);
        }
        // A count no record could hold.
        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut errors = Vec::new();
        assert_eq!(decode(&b, &mut SparseRows::new(), |e| errors.push(e)), 0);
        assert!(errors[0].what.contains("not a native sparse record"), "{errors:?}");
    }
}
