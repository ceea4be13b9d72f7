//! Moving rows between representations: text → `.ssgd` ([`convert_text`]) and generator →
//! any format ([`write_generated`]). Both stream with memory bounded by a block.

use crate::dataset::{DatasetWriter, FormatError};
use crate::source::gen::{Generator, Task, CHUNK_ROWS};
use crate::source::live::{LiveReader, Patience};
use crate::source::text::{csv_header, format_row, is_record, trim};
use crate::source::{ParseError, TextFormat, TextOptions, TextParser};
use indicatif::ProgressBar;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How many skipped lines are reported individually.
pub const SKIP_EXAMPLES: usize = 5;
const READ_BUF: usize = 1 << 20;

/// Errors of conversion and generation.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A malformed line (without `--skip-bad`) or a failing input stream.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Writing the output dataset failed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Opening or writing a plain file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Settings that cannot work together.
    #[error("{0}")]
    Usage(String),
    /// Stopped from outside (a signal): nothing is left at the output path.
    #[error("stopped before the end: {0} was not written")]
    Stopped(PathBuf),
}

/// Settings of a text → `.ssgd` conversion.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Input format (`None`: from the extension).
    pub format: Option<TextFormat>,
    /// Column mapping.
    pub text: TextOptions,
    /// Count and skip malformed lines instead of stopping at the first.
    pub skip_bad: bool,
    /// Rows per block of the output.
    pub block_rows: u32,
    /// Set from outside (a signal handler) to stop: the partial output is removed.
    pub stop: Option<Arc<AtomicBool>>,
}

/// What a conversion did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ConvertSummary {
    /// Rows written.
    pub rows: u64,
    /// Feature columns.
    pub features: usize,
    /// Missing cells (NaN) written.
    pub nan_cells: u64,
    /// Malformed lines skipped.
    pub skipped: u64,
    /// The first few skipped lines: (line number, reason).
    pub skipped_examples: Vec<(u64, String)>,
    /// Input bytes parsed.
    pub bytes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Feature names (CSV header, VW names) when the format has them.
    pub feature_names: Option<Vec<String>>,
}

impl ConvertSummary {
    /// Counts a bad line when `skip_bad` allows it (and keeps the first few), else the error.
    fn skip(&mut self, e: ParseError, skip_bad: bool) -> Result<(), ConvertError> {
        if !skip_bad || e.fatal {
            return Err(e.into());
        }
        self.skipped += 1;
        if self.skipped_examples.len() < SKIP_EXAMPLES {
            self.skipped_examples.push((e.line, e.to_string()));
        }
        Ok(())
    }

    /// Parse speed in MB/s (10^6 bytes).
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }
}

/// The bytes of `path`, or of stdin for `-` (ended early as `patience` says).
/// A buffered reader of `path` (stdin for `-`, ended early as `patience` says).
pub fn open_input(path: &Path, patience: &Patience) -> Result<Box<dyn BufRead>, ConvertError> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::with_capacity(READ_BUF, LiveReader::new(std::io::stdin(), patience.clone()))));
    }
    let f = File::open(path).map_err(|source| ConvertError::Io { path: path.into(), source })?;
    Ok(Box::new(BufReader::with_capacity(READ_BUF, f)))
}

/// True for a path naming a regular file (not `-`, a pipe, a socket or a device): one that can
/// be read twice.
pub fn is_regular_file(path: &Path) -> bool {
    path != Path::new("-") && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// The name a source has in error messages.
pub fn source_name(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".into()
    } else {
        path.display().to_string()
    }
}

/// Resolves the format from the option or the extension.
pub fn resolve_format(path: &Path, format: Option<TextFormat>) -> Result<TextFormat, ConvertError> {
    format.or_else(|| TextFormat::from_path(path)).ok_or_else(|| {
        ConvertError::Usage(format!("{}: cannot tell the format from the name; pass --format csv|libsvm|vw", source_name(path)))
    })
}

/// Opens a parser over `path` (stdin for `-`, ended early as `patience` says); LibSVM/VW
/// without `--features` first scan the file for D (LibSVM's largest index, VW's feature
/// names), which only a regular file allows: stdin and pipes cannot be read twice.
pub fn open_parser(
    path: &Path,
    format: TextFormat,
    opts: &TextOptions,
    patience: &Patience,
) -> Result<TextParser<Box<dyn BufRead>>, ConvertError> {
    let name = source_name(path);
    let mut opts = opts.clone();
    if format != TextFormat::Csv && opts.features.is_none() && opts.vw_names.is_none() {
        if !is_regular_file(path) {
            return Err(ConvertError::Usage(format!(
                "{name}: {format} from stdin or a pipe needs --features D (finding D would read the stream twice)"
            )));
        }
        let mut scan = TextParser::new(open_input(path, patience)?, name.clone(), format, &opts)?;
        let mut first_error = None;
        loop {
            match scan.next_row(&mut []) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if e.fatal => return Err(e.into()),
                // Reported with its line by the real pass (or below, when no line is good).
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let (d, names) = scan.discovered();
        if d == 0 {
            return Err(match first_error {
                Some(e) => e.into(),
                None => ConvertError::Usage(format!("{name}: no features found")),
            });
        }
        opts.features = Some(d);
        opts.vw_names = names;
    }
    Ok(TextParser::new(open_input(path, patience)?, name, format, &opts)?)
}

/// Converts a text file (or `-` for stdin) into a `.ssgd` file.
pub fn convert_text(input: &Path, output: &Path, opts: &ConvertOptions, progress: &ProgressBar) -> Result<ConvertSummary, ConvertError> {
    let start = Instant::now();
    let format = resolve_format(input, opts.format)?;
    let mut parser = open_parser(input, format, &opts.text, &Patience::default())?;
    let d = parser.features();
    let mut writer = DatasetWriter::create(output, d, opts.block_rows, format == TextFormat::Vw)?;
    let mut row = vec![0.0f32; d];
    let mut summary = ConvertSummary { features: d, feature_names: parser.feature_names(), ..Default::default() };
    loop {
        match parser.next_row(&mut row) {
            Ok(Some(r)) => {
                writer.push(&row, r.label, r.weight)?;
                // Dropping the writer on a stop removes its temporary file.
                now_and_then(writer.rows(), parser.bytes(), opts, output, progress)?;
            }
            Ok(None) => break,
            Err(e) => summary.skip(e, opts.skip_bad)?,
        }
    }
    summary.rows = writer.finish()?;
    summary.nan_cells = parser.nan_cells();
    summary.bytes = parser.bytes();
    summary.seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    Ok(summary)
}

/// Every 65 536 rows written: the progress bar, and a stop (`Stopped`: the caller's writer,
/// dropped, removes its temporary file).
fn now_and_then(rows: u64, bytes: u64, opts: &ConvertOptions, output: &Path, progress: &ProgressBar) -> Result<(), ConvertError> {
    if rows % 65_536 == 0 {
        progress.set_position(bytes);
        if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) {
            return Err(ConvertError::Stopped(output.into()));
        }
    }
    Ok(())
}

/// Converts VW or LibSVM text, or a CSV with `categorical` columns, into a sparse `.ssgd` file
/// (names hashed with `seed`; `features` counts the nonzeros written). Memory: one block.
pub fn convert_sparse(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    seed: u64,
    categorical: &[String],
    progress: &ProgressBar,
) -> Result<ConvertSummary, ConvertError> {
    let start = Instant::now();
    let format = resolve_format(input, opts.format)?;
    let reader = open_input(input, &Patience::default())?;
    let mut parser = if format == TextFormat::Csv {
        crate::sparse::SparseParser::csv(reader, source_name(input), seed, opts.text.label.as_ref(), categorical)?
    } else {
        crate::sparse::SparseParser::new(reader, source_name(input), format, seed)?
    };
    let mut writer = crate::dataset::SparseWriter::create(output, opts.block_rows)?;
    let mut rows = crate::sparse::SparseRows::new();
    let mut summary = ConvertSummary::default();
    loop {
        rows.clear();
        match parser.next_row(&mut rows) {
            Ok(true) => {
                writer.push(&rows.as_ref(), 0)?;
                summary.features += rows.nnz();
                now_and_then(writer.rows(), parser.bytes(), opts, output, progress)?;
            }
            Ok(false) => break,
            Err(e) => summary.skip(e, opts.skip_bad)?,
        }
    }
    summary.rows = writer.finish()?;
    summary.bytes = parser.bytes();
    summary.seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    Ok(summary)
}

/// Writes the generator's rows to `path` in the format its extension names (`.ssgd`, `.csv`,
/// `.libsvm`, `.vw`). Chunks are generated in parallel, written in order.
pub fn write_generated(gen: &Generator, path: &Path, block_rows: u32, progress: &ProgressBar) -> Result<u64, ConvertError> {
    write_generated_until(gen, path, block_rows, progress, None)
}

/// [`write_generated`], stopping when `stop` is set (a signal): nothing is left at `path`.
pub fn write_generated_until(
    gen: &Generator,
    path: &Path,
    block_rows: u32,
    progress: &ProgressBar,
    stop: Option<&AtomicBool>,
) -> Result<u64, ConvertError> {
    let d = gen.config().features;
    let classification = gen.config().task == Task::Classification;
    let is_ssgd = path.extension().is_some_and(|e| e == "ssgd");
    let text = if is_ssgd { None } else { Some(resolve_format(path, None)?) };
    let par = rayon::current_num_threads().max(1) * 4;
    let mut bufs = vec![Vec::new(); par];
    let mut ssgd = if is_ssgd { Some(DatasetWriter::create(path, d, block_rows, false)?) } else { None };
    let io = |source| ConvertError::Io { path: path.into(), source };
    let mut out = match text {
        Some(_) => Some(BufWriter::with_capacity(READ_BUF, File::create(path).map_err(io)?)),
        None => None,
    };
    if let (Some(TextFormat::Csv), Some(w)) = (text, out.as_mut()) {
        w.write_all(csv_header(d).as_bytes()).map_err(io)?;
    }
    let mut row = vec![0.0f32; d];
    let mut block = Vec::new();
    let chunks = gen.chunks();
    let mut next = vec![Vec::new(); par];
    let mut counts = gen.chunks_par(0..(par as u64).min(chunks), &mut bufs);
    let mut k = 0;
    // Double-buffered: the next group of chunks is generated while this one is written.
    while k < chunks {
        if stop.is_some_and(|s| s.load(Ordering::Acquire)) {
            // The .ssgd writer removes its temporary file when dropped; a text output is partial.
            drop(out);
            if text.is_some() {
                let _ = std::fs::remove_file(path);
            }
            return Err(ConvertError::Stopped(path.into()));
        }
        let end = (k + par as u64).min(chunks);
        let after = end..(end + par as u64).min(chunks);
        let (next_counts, written) = rayon::join(
            || gen.chunks_par(after, &mut next),
            || -> Result<(), ConvertError> {
                // Row `r` of a column-major chunk into `row`; returns its label.
                let gather = |buf: &[f32], r: usize, row: &mut [f32]| {
                    for (j, x) in row.iter_mut().enumerate() {
                        *x = buf[j * CHUNK_ROWS + r];
                    }
                    buf[d * CHUNK_ROWS + r]
                };
                for (buf, &rows) in bufs.iter().zip(&counts) {
                    if let Some(w) = ssgd.as_mut() {
                        if rows == CHUNK_ROWS && block_rows as usize == CHUNK_ROWS {
                            w.push_block(buf)?;
                            continue;
                        }
                        for r in 0..rows {
                            let y = gather(buf, r, &mut row);
                            w.push(&row, y, 1.0)?;
                        }
                    } else if let (Some(fmt), Some(w)) = (text, out.as_mut()) {
                        block.clear();
                        for r in 0..rows {
                            let y = gather(buf, r, &mut row);
                            format_row(fmt, &row, y, classification, &mut block);
                        }
                        w.write_all(&block).map_err(io)?;
                    }
                }
                Ok(())
            },
        );
        written?;
        std::mem::swap(&mut bufs, &mut next);
        counts = next_counts;
        progress.set_position(end * CHUNK_ROWS as u64);
        k = end;
    }
    let rows = gen.config().rows;
    if let Some(w) = ssgd {
        w.finish()?;
    }
    if let Some(mut w) = out {
        w.flush().map_err(io)?;
    }
    progress.finish_and_clear();
    Ok(rows)
}

/// Data rows in a text file: non-empty lines, less the CSV header and `#` comment lines of
/// LibSVM/VW (what `--holdout` needs to know where the last fraction starts).
pub fn count_rows(path: &Path, format: TextFormat) -> Result<u64, ConvertError> {
    if !is_regular_file(path) {
        return Err(ConvertError::Usage(format!(
            "{}: counting the rows (for --holdout) would read the stream twice: use a regular file, or --test FILE",
            source_name(path)
        )));
    }
    let mut r = open_input(path, &Patience::default())?;
    let (mut rows, mut line) = (0u64, Vec::new());
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).map_err(|source| ConvertError::Io { path: path.into(), source })? == 0 {
            break;
        }
        rows += u64::from(is_record(trim(&line), format));
    }
    Ok(if format == TextFormat::Csv { rows.saturating_sub(1) } else { rows })
}
