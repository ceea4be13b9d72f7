//! Streaming rows into a new `.ssgd` file with memory bounded by one block.
//!
//! Rows are scattered into a column-major block buffer; full blocks are written as they fill.
//! The file is written under a temporary name and renamed into place by [`DatasetWriter::finish`],
//! so a reader never sees a half-written file under the final name.

use super::header::{Header, HEADER_LEN};
use super::FormatError;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Default rows per block.
pub const DEFAULT_BLOCK_ROWS: u32 = 1024;

/// Writes a `.ssgd` file row by row (or block by block).
#[derive(Debug)]
pub struct DatasetWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: File,
    features: usize,
    block_rows: usize,
    weights: bool,
    /// Column-major buffer of one block: features, label, \[weight\], each `block_rows` long.
    buf: Vec<f32>,
    filled: usize,
    rows: u64,
    /// CRC-32 of each block written, for the table after the last one.
    checksums: Vec<u32>,
}

impl DatasetWriter {
    /// Creates `path` (through a temporary file beside it) for rows of `features` values.
    pub fn create(path: impl AsRef<Path>, features: usize, block_rows: u32, weights: bool) -> Result<Self, FormatError> {
        let path = path.as_ref().to_path_buf();
        let inv = |what: String| FormatError::Write { path: path.clone(), what };
        let features32 = u32::try_from(features).map_err(|_| inv(format!("{features} features is too many")))?;
        Header::new(0, features32, block_rows, weights).map_err(|e| inv(e.to_string()))?;
        let bytes = (features as u64 + 2) * block_rows as u64 * 4;
        crate::batch::check_memory(bytes, || format!("{features} features: a block of {block_rows} rows")).map_err(inv)?;
        let mut name = path.file_name().ok_or_else(|| inv("not a file path".into()))?.to_os_string();
        name.push(format!(".tmp{}", std::process::id()));
        let tmp = path.with_file_name(name);
        let mut file = File::create(&tmp).map_err(|source| FormatError::Io { path: tmp.clone(), op: "create", source })?;
        file.write_all(&[0u8; HEADER_LEN]).map_err(|source| FormatError::Io { path: tmp.clone(), op: "write", source })?;
        let cols = features + 1 + usize::from(weights);
        let block_rows = block_rows as usize;
        Ok(DatasetWriter {
            path,
            tmp,
            file,
            features,
            block_rows,
            weights,
            buf: vec![0.0; cols * block_rows],
            filled: 0,
            rows: 0,
            checksums: Vec::new(),
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends one row. `features.len()` must equal the writer's feature count.
    pub fn push(&mut self, features: &[f32], label: f32, weight: f32) -> Result<(), FormatError> {
        if features.len() != self.features {
            return Err(FormatError::Write {
                path: self.path.clone(),
                what: format!("row has {} features, file has {}", features.len(), self.features),
            });
        }
        let (b, r) = (self.block_rows, self.filled);
        for (j, &x) in features.iter().enumerate() {
            self.buf[j * b + r] = x;
        }
        self.buf[self.features * b + r] = label;
        if self.weights {
            self.buf[(self.features + 1) * b + r] = weight;
        }
        self.filled += 1;
        self.rows += 1;
        if self.filled == b {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Appends a full block given column-major with stride `block_rows` (features, label,
    /// (weight)); the fast path for generators. Falls back to row pushes mid-block.
    pub fn push_block(&mut self, columns: &[f32]) -> Result<(), FormatError> {
        if columns.len() != self.buf.len() {
            return Err(FormatError::Write {
                path: self.path.clone(),
                what: format!("block has {} values, expected {}", columns.len(), self.buf.len()),
            });
        }
        if self.filled == 0 {
            self.rows += self.block_rows as u64;
            return self.write_floats(columns);
        }
        let b = self.block_rows;
        let mut row = vec![0.0; self.features];
        for r in 0..b {
            for (j, x) in row.iter_mut().enumerate() {
                *x = columns[j * b + r];
            }
            let w = if self.weights { columns[(self.features + 1) * b + r] } else { 1.0 };
            self.push(&row, columns[self.features * b + r], w)?;
        }
        Ok(())
    }

    /// Writes one whole block, and keeps its checksum for the table.
    fn write_floats(&mut self, floats: &[f32]) -> Result<(), FormatError> {
        let bytes: &[u8] = bytemuck::cast_slice(floats);
        self.checksums.push(crc32fast::hash(bytes));
        self.file.write_all(bytes).map_err(|source| FormatError::Io { path: self.tmp.clone(), op: "write", source })
    }

    fn flush_block(&mut self) -> Result<(), FormatError> {
        let n = self.filled;
        if n == 0 {
            return Ok(());
        }
        let b = self.block_rows;
        let stride = Header::stride_for(n as u64) as usize;
        let buf = std::mem::take(&mut self.buf);
        let result = if stride == b {
            self.write_floats(&buf)
        } else {
            let mut out = Vec::with_capacity(stride * buf.len() / b);
            for col in buf.chunks_exact(b) {
                out.extend_from_slice(&col[..n]);
                out.resize(out.len() + stride - n, 0.0);
            }
            self.write_floats(&out)
        };
        self.buf = buf;
        self.filled = 0;
        result
    }

    /// Writes the last (partial) block and the final header, then renames the file into place.
    pub fn finish(mut self) -> Result<u64, FormatError> {
        self.flush_block()?;
        let header = Header::new(self.rows, self.features as u32, self.block_rows as u32, self.weights)
            .map_err(|e| FormatError::Write { path: self.path.clone(), what: e.to_string() })?;
        let tmp = self.tmp.clone();
        let io = |op, source| FormatError::Io { path: tmp.clone(), op, source };
        let table: Vec<u8> = self.checksums.iter().flat_map(|c| c.to_le_bytes()).collect();
        self.file.write_all(&table).map_err(|e| io("write", e))?;
        self.file.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
        self.file.write_all(&header.encode()).map_err(|e| io("write", e))?;
        self.file.flush().map_err(|e| io("flush", e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|source| FormatError::Io { path: self.path.clone(), op: "rename", source })?;
        Ok(self.rows)
    }
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        // An unfinished writer leaves no temporary file behind (after `finish` this is a no-op).
        let _ = std::fs::remove_file(&self.tmp);
    }
}
