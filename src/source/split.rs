//! A text file cut into line-aligned byte ranges that shards parse on their own: no producer
//! thread, no hop through a ring. The file is mapped; range `i` nominally spans bytes
//! `[start + i·R, start + (i+1)·R)` of the body (after the header) and owns every line that
//! *starts* in that span, so ranges are found independently (one `memchr` each) and every line
//! belongs to exactly one range, whatever the cut points: a line longer than a range leaves the
//! ranges it spans after its own empty.
//!
//! Shards learn ranges out of order, so they number rows and lines within a range; a
//! [`Numbering`] built from every range's counts turns those into the stream's numbers once the
//! ranges are done (an error's line, the first rejected row) — exact, without a second scan.
//!
//! The last `holdout` fraction of the rows is held out, as from a `.ssgd` file. Quoted
//! line breaks in CSV are not supported by the parsers anyway, so a newline always ends a
//! record. No `unsafe` beyond the mapping's (in `memmap2`).

use crate::source::text::{is_record, trim};
use crate::source::TextFormat;
use memmap2::Mmap;
use std::fs::File;
use std::path::Path;

/// Nominal bytes per range: large enough that claiming one costs nothing, small enough that
/// threads finish close together (a 1 GB file has 1024 of them).
pub const RANGE_BYTES: usize = 1 << 20;

/// A mapped text file, cut into ranges of lines.
pub struct SplitText {
    map: Option<Mmap>,
    /// The body: after the header, up to the holdout.
    start: usize,
    end: usize,
    range: usize,
    header_lines: u64,
}

impl SplitText {
    /// Maps `path`, whose first `header_bytes` (`header_lines` lines) are a header the caller
    /// has read; the last `holdout` fraction (in [0, 1)) of its rows (records of `format`, as
    /// the parsers count them) is held out.
    pub fn open(path: &Path, header_bytes: u64, header_lines: u64, holdout: f64, format: TextFormat) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len() as usize;
        // An empty file cannot be mapped (and has nothing to split).
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the file is only read; one truncated by another process while mapped can
            // fault, the documented contract of mapped input (docs/bad-inputs.md).
            Some(unsafe { Mmap::map(&file)? })
        };
        let mut s = Self::with(map, len, header_bytes, header_lines, RANGE_BYTES);
        if holdout > 0.0 {
            s.hold_out(holdout, format);
        }
        Ok(s)
    }

    /// The same file cut into ranges of about `rows` lines each, as its first 64 KiB of lines
    /// measure them (4 KiB to 4 MiB): where the shards merge every so many ranges, a range is
    /// about a batch.
    pub fn with_rows_per_range(self, rows: usize) -> Self {
        let sample = &self.bytes()[self.start..self.end.min(self.start + (64 << 10))];
        let per_line = sample.len() as f64 / line_count(sample).max(1) as f64;
        let bytes = (per_line * rows as f64) as usize;
        self.with_range_bytes(bytes.clamp(4 << 10, 4 << 20))
    }

    /// The same file cut into ranges of `bytes` (at least 1) instead of [`RANGE_BYTES`].
    pub fn with_range_bytes(mut self, bytes: usize) -> Self {
        self.range = bytes.max(1);
        self
    }

    fn with(map: Option<Mmap>, len: usize, header_bytes: u64, header_lines: u64, range: usize) -> Self {
        let start = (header_bytes as usize).min(len);
        SplitText { map, start, end: len, range: range.max(1), header_lines }
    }

    /// Holds out the last `fraction` of the rows (rounded, as for a `.ssgd` file): two scans
    /// of the lines, one to count the rows and one to find where the held-out ones start.
    fn hold_out(&mut self, fraction: f64, format: TextFormat) {
        let body = &self.bytes()[self.start..];
        let is_row = |line: &&[u8]| is_record(trim(line), format);
        let rows = lines(body).filter(is_row).count() as u64;
        let keep = rows - ((rows as f64 * fraction).round() as u64).min(rows);
        let (mut at, mut seen) = (body.len(), 0u64);
        let mut offset = 0;
        for line in lines(body) {
            if is_row(&line) {
                if seen == keep {
                    at = offset;
                    break;
                }
                seen += 1;
            }
            offset += line.len();
        }
        self.end = self.start + at;
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }

    /// The first line start at or after `p` (within the body; the body's end if none).
    fn line_start(&self, p: usize) -> usize {
        let b = self.bytes();
        if p <= self.start {
            return self.start;
        }
        if p >= b.len() || b[p - 1] == b'\n' {
            return p.min(b.len());
        }
        memchr::memchr(b'\n', &b[p..]).map_or(b.len(), |i| p + i + 1)
    }

    /// How many ranges the training body has.
    pub fn ranges(&self) -> u64 {
        (self.end - self.start).div_ceil(self.range) as u64
    }

    /// Range `i`: the lines that start in its nominal span (maybe none).
    pub fn range(&self, i: u64) -> &[u8] {
        let nominal = |k: u64| (self.start + k as usize * self.range).min(self.end);
        let (a, b) = (self.line_start(nominal(i)).min(self.end), self.line_start(nominal(i + 1)).min(self.end));
        &self.bytes()[a..b.max(a)]
    }

    /// The held-out lines (after the training body).
    pub fn holdout(&self) -> &[u8] {
        &self.bytes()[self.end..]
    }

    /// Lines of the header.
    pub fn header_lines(&self) -> u64 {
        self.header_lines
    }

    /// Lines before the held-out ones (header included).
    pub fn lines_before_holdout(&self) -> u64 {
        self.header_lines + line_count(&self.bytes()[self.start..self.end])
    }

    /// Bytes of the training body.
    pub fn body_bytes(&self) -> u64 {
        (self.end - self.start) as u64
    }
}

/// The lines of `bytes` (a last one without its newline included), each with its newline.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(n);
        rest = tail;
        Some(line)
    })
}

/// Lines in `bytes` (a last one without its newline counts).
pub fn line_count(bytes: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', bytes).count() as u64;
    newlines + u64::from(bytes.last().is_some_and(|&c| c != b'\n'))
}

/// A position within a range: its index and a row (or line) number inside it, packed so that
/// positions order as the stream does.
pub fn position(range: u64, within: u64) -> u64 {
    debug_assert!(within < 1 << 32, "a range of 2^32 rows");
    range << 32 | within
}

/// Per range, the rows and lines it held: the prefix sums number a range's rows and lines in
/// the stream. Ranges not counted (never claimed) hold none.
#[derive(Debug, Default)]
pub struct Numbering {
    rows_before: Vec<u64>,
    lines_before: Vec<u64>,
}

impl Numbering {
    /// From `(range, rows, lines)` of every range done, after `header_lines` lines.
    pub fn new(ranges: u64, counts: impl IntoIterator<Item = (u64, u64, u64)>, header_lines: u64) -> Self {
        let mut rows = vec![0u64; ranges as usize + 1];
        let mut lines = vec![0u64; ranges as usize + 1];
        for (i, r, l) in counts {
            rows[i as usize + 1] = r;
            lines[i as usize + 1] = l;
        }
        lines[0] = header_lines;
        for i in 1..rows.len() {
            rows[i] += rows[i - 1];
            lines[i] += lines[i - 1];
        }
        Numbering { rows_before: rows, lines_before: lines }
    }

    /// The stream's 0-based row number of a [`position`] of a row.
    pub fn row(&self, pos: u64) -> u64 {
        self.rows_before.get((pos >> 32) as usize).copied().unwrap_or(0) + (pos & 0xffff_ffff)
    }

    /// The stream's 1-based line number of a range's 1-based line `line`.
    pub fn line(&self, range: u64, line: u64) -> u64 {
        self.lines_before.get(range as usize).copied().unwrap_or(0) + line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(text: &[u8], header: usize, holdout: f64, range: usize) -> SplitText {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("streamsgd-split-{}-{n}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let s = SplitText::open(&path, header as u64, 1, holdout, TextFormat::Vw).unwrap().with_range_bytes(range);
        // The mapping stays valid once the name is gone.
        let _ = std::fs::remove_file(&path);
        s
    }

    /// Every range's lines, in range order.
    fn all_lines(s: &SplitText) -> Vec<Vec<u8>> {
        (0..s.ranges()).flat_map(|i| lines(s.range(i)).map(<[u8]>::to_vec).collect::<Vec<_>>()).collect()
    }

    #[test]
    fn awkward_files_give_the_same_lines_as_one_reader() {
        let files: [&[u8]; 7] = [
            b"",
            b"h\n",
            b"h\na\nb\nc",
            b"h\r\na,1\r\nb,2\r\n",
            b"h\n\n\nx\n\n",
            b"h\nshort\na much longer line than any range here\nz\n",
            b"\xEF\xBB\xBFh\n\"q,1\",2\nlast",
        ];
        for text in files {
            let header = memchr::memchr(b'\n', text).map_or(text.len(), |i| i + 1);
            let want: Vec<Vec<u8>> = lines(&text[header..]).map(<[u8]>::to_vec).collect();
            for range in [1, 2, 3, 7, 64] {
                assert_eq!(all_lines(&split(text, header, 0.0, range)), want, "{:?} in ranges of {range}", String::from_utf8_lossy(text));
            }
        }
    }

    #[test]
    fn the_holdout_is_the_last_rows() {
        let text = b"h\n111\n\n# no row\n222\n333\n\n444\n";
        let s = split(text, 2, 0.5, 3);
        assert_eq!(s.holdout(), b"333\n\n444\n");
        assert_eq!(all_lines(&s), vec![b"111\n".to_vec(), b"\n".to_vec(), b"# no row\n".to_vec(), b"222\n".to_vec()]);
        assert_eq!(s.lines_before_holdout(), 5);
        // 4 rows × 0.4 = 1.6: 2 held out, as from a .ssgd file.
        assert_eq!(split(text, 2, 0.4, 3).holdout(), b"333\n\n444\n");
        assert_eq!(split(text, 2, 0.1, 3).holdout(), b"");
    }

    #[test]
    fn numbering_follows_the_ranges() {
        // Range 0: 3 rows on 4 lines; range 1: never claimed; range 2: 2 rows on 2 lines.
        let n = Numbering::new(3, [(2, 2, 2), (0, 3, 4)], 1);
        assert_eq!(n.row(position(0, 1)), 1);
        assert_eq!(n.row(position(2, 1)), 4);
        assert_eq!(n.line(2, 1), 6);
        assert_eq!(n.line(0, 1), 2);
        assert!(position(0, 5) < position(1, 0));
    }

    proptest! {
        #[test]
        fn any_cut_gives_every_line_once_in_order(
            lens in proptest::collection::vec(0usize..40, 0..40),
            range in 1usize..50,
            newline_at_end in any::<bool>(),
        ) {
            let mut text = b"header\n".to_vec();
            for (i, &n) in lens.iter().enumerate() {
                text.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, n));
                text.push(b'\n');
            }
            if !newline_at_end && text.len() > 7 {
                text.pop();
            }
            let want: Vec<Vec<u8>> = lines(&text[7..]).map(<[u8]>::to_vec).collect();
            prop_assert_eq!(all_lines(&split(&text, 7, 0.0, range)), want);
        }
    }
}
