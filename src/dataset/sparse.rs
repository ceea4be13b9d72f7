//! Sparse `.ssgd` files (format version 2, flag bit 0): blocks of CSR rows, memory-mapped and
//! read in place, and their bounded-memory writer. The byte layout is in docs/FORMAT.md.
//!
//! A block is a 64-byte block header (rows, nnz, block flags), then 64-byte-aligned sections:
//! row offsets (rows + 1 u32), feature ids (nnz u32), namespace tags (nnz u8), values (nnz
//! f32, left out when every value is 1.0), labels (rows f32) and weights (rows f32, left out
//! when every weight is 1.0). A block index (a u64 offset per block) and the block checksums follow the
//! blocks. Opening checks the header, the size and the index; each block is checked whole
//! (offsets monotone and in range, ids below 2^bits, labels and weights valid, its size) before
//! a slice of it is handed out. No `unsafe` here except the mapping itself.

use super::header::{Header, HeaderError, ALIGN, HEADER_LEN, INDEX_ENTRY};
use super::FormatError;
use crate::sparse::rows::{RowsRef, SparseRows};
use memmap2::Mmap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes of a sparse block's own header.
pub const BLOCK_HEADER: usize = 64;
/// Block flag: the block stores values (otherwise every value is 1.0).
pub const BLOCK_VALUES: u32 = 1 << 0;
/// Block flag: the block stores importance weights (otherwise every weight is 1.0).
pub const BLOCK_WEIGHTS: u32 = 1 << 1;

fn pad(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Section offsets (from the block's start) of a block of `rows` rows and `nnz` features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    offsets: usize,
    ids: usize,
    ns: usize,
    values: usize,
    labels: usize,
    weights: usize,
    end: usize,
}

impl Layout {
    fn of(rows: usize, nnz: usize, values: bool, weights: bool) -> Layout {
        let offsets = BLOCK_HEADER;
        let ids = offsets + pad(4 * (rows + 1));
        let ns = ids + pad(4 * nnz);
        let values_at = ns + pad(nnz);
        let labels = values_at + if values { pad(4 * nnz) } else { 0 };
        let weights_at = labels + pad(4 * rows);
        let end = weights_at + if weights { pad(4 * rows) } else { 0 };
        Layout { offsets, ids, ns, values: values_at, labels, weights: weights_at, end }
    }
}

/// Whether `path` starts with a valid header of a sparse file (its first 64 bytes only: a
/// dense file is not mapped and read to find out).
pub fn is_sparse_file(path: &Path) -> bool {
    let mut head = [0u8; HEADER_LEN];
    File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok()
        && Header::decode(&head).is_ok_and(|h| h.is_sparse())
}

/// A memory-mapped sparse `.ssgd` file.
#[derive(Debug)]
pub struct SparseDataset {
    path: PathBuf,
    header: Header,
    map: Mmap,
    /// Byte offset of each block, and of the end of the last.
    starts: Vec<usize>,
}

impl SparseDataset {
    /// Maps `path` and checks its header, size and block index.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FormatError> {
        let path = path.as_ref().to_path_buf();
        let inv = |what: String| FormatError::Invalid { path: path.clone(), what };
        let io = |op, source| FormatError::Io { path: path.clone(), op, source };
        let file = File::open(&path).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if len < HEADER_LEN as u64 {
            return Err(inv(format!("truncated: {len} bytes, shorter than the {HEADER_LEN}-byte header")));
        }
        // Prefaulted only when it fits in half of memory (as `reader` explains); a larger file
        // is read as the shards claim its blocks, sequentially advised.
        let mut options = memmap2::MmapOptions::new();
        if crate::batch::physical_memory().is_none_or(|m| len <= m / 2) {
            options.populate();
        }
        // SAFETY: the mapping is read-only; every byte is validated before a typed view of it
        // exists. A file shrunk by another process while mapped is the trust boundary
        // documented in `reader`.
        let map = unsafe { options.map(&file) }.map_err(|e| io("mmap", e))?;
        let header = Header::decode(&map).map_err(|e| match e {
            HeaderError::Invalid(what) => inv(what),
            HeaderError::Unsupported(what) => FormatError::Unsupported { path: path.clone(), what },
        })?;
        if !header.is_sparse() {
            return Err(inv("dense blocks: not a sparse file".into()));
        }
        let want = header.file_size().expect("validated by decode");
        if want != len {
            return Err(inv(format!("{len} bytes, but the header's block index and checksums end at {want}")));
        }
        if map.as_ptr() as usize % ALIGN != 0 {
            return Err(inv("mapping is not 64-byte aligned".into()));
        }
        let blocks = header.blocks() as usize;
        let at = header.index_at as usize;
        let mut starts: Vec<usize> = map[at..at + blocks * INDEX_ENTRY as usize]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as usize)
            .collect();
        starts.push(at);
        if starts.first().is_some_and(|&s| s != HEADER_LEN) {
            return Err(inv(format!("block index: the first block starts at {}, not right after the header", starts[0])));
        }
        if let Some(i) = starts.windows(2).position(|w| w[1] <= w[0] || w[0] % ALIGN != 0) {
            return Err(inv(format!(
                "block index: block {} at byte {} does not start after block {} ends, 64-byte aligned",
                i + 2,
                starts[i + 1],
                i + 1
            )));
        }
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(SparseDataset { path, header, map, starts })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Rows.
    pub fn rows(&self) -> u64 {
        self.header.rows
    }

    /// Blocks.
    pub fn blocks(&self) -> u64 {
        self.header.blocks()
    }

    /// Rows per full block.
    pub fn block_rows(&self) -> u64 {
        self.header.block_rows as u64
    }

    /// Feature ids are below 2^id_bits.
    pub fn id_bits(&self) -> u32 {
        self.header.features
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn invalid(&self, block: u64, what: String) -> FormatError {
        FormatError::Invalid {
            path: self.path.clone(),
            what: format!("block {} (from row {}): {what}", block + 1, block * self.block_rows() + 1),
        }
    }

    /// Block `i`'s rows, checked whole first.
    pub fn block(&self, i: u64) -> Result<RowsRef<'_>, FormatError> {
        let (start, end) = (self.starts[i as usize], self.starts[i as usize + 1]);
        let b = &self.map[start..end];
        let bad = |what: String| self.invalid(i, what);
        if b.len() < BLOCK_HEADER {
            return Err(bad(format!("{} bytes, shorter than a block header", b.len())));
        }
        let word = |k: usize| u32::from_le_bytes(b[4 * k..4 * k + 4].try_into().expect("4 bytes"));
        let (rows, nnz, flags) = (word(0) as usize, word(1) as usize, word(2));
        if rows as u64 != self.header.rows_in_block(i) {
            return Err(bad(format!("{rows} rows, the header implies {}", self.header.rows_in_block(i))));
        }
        if flags & !(BLOCK_VALUES | BLOCK_WEIGHTS) != 0 || b[12..BLOCK_HEADER].iter().any(|&x| x != 0) {
            return Err(bad("unknown block flags or non-zero reserved bytes".into()));
        }
        let (values, has_weights) = (flags & BLOCK_VALUES != 0, flags & BLOCK_WEIGHTS != 0);
        let l = Layout::of(rows, nnz, values, has_weights);
        if l.end != b.len() {
            return Err(bad(format!("{} bytes, but {rows} rows and {nnz} features take {}", b.len(), l.end)));
        }
        let cast_u32 = |at: usize, n: usize| -> &[u32] { bytemuck::cast_slice(&b[at..at + 4 * n]) };
        let cast_f32 = |at: usize, n: usize| -> &[f32] { bytemuck::cast_slice(&b[at..at + 4 * n]) };
        let offsets = cast_u32(l.offsets, rows + 1);
        if offsets[0] != 0 || offsets[rows] as usize != nnz {
            return Err(bad(format!("row offsets run from {} to {}, not 0 to {nnz}", offsets[0], offsets[rows])));
        }
        if offsets.windows(2).fold(false, |a, w| a | (w[1] < w[0])) {
            let r = offsets.windows(2).position(|w| w[1] < w[0]).expect("one decreases");
            return Err(bad(format!("row offsets decrease at row {}", r + 1)));
        }
        let ids = cast_u32(l.ids, nnz);
        let bits = self.id_bits();
        // Branch-free folds first (they vectorise: a block is checked on every pass), the
        // culprit found only when one fails.
        if bits < 32 && ids.iter().fold(0, |a, &id| a | id) >> bits != 0 {
            let id = ids.iter().find(|&&id| id >> bits != 0).expect("one is out of range");
            return Err(bad(format!("feature id {id} is not below 2^{bits}")));
        }
        let values = values.then(|| cast_f32(l.values, nnz));
        if let Some(v) = values.filter(|v| v.iter().fold(false, |a, x| a | !x.is_finite())) {
            let x = v.iter().find(|x| !x.is_finite()).expect("one is not finite");
            return Err(bad(format!("value {x} is not finite")));
        }
        let labels = cast_f32(l.labels, rows);
        if let Some(r) = labels.iter().position(|y| y.is_infinite()) {
            return Err(bad(format!("row {}: label {} is infinite", r + 1, labels[r])));
        }
        let weights = has_weights.then(|| cast_f32(l.weights, rows));
        if let Some(r) = weights.and_then(|w| w.iter().position(|x| !(x.is_finite() && *x >= 0.0))) {
            return Err(bad(format!("row {}: weight {} is not finite and ≥ 0", r + 1, weights.expect("some")[r])));
        }
        Ok(RowsRef { offsets, ids, values, ns: &b[l.ns..l.ns + nnz], labels, weights })
    }

    /// Checks every block against its CRC-32.
    pub fn verify(&self) -> Result<(), FormatError> {
        let table = &self.map[self.header.checksums_at().expect("validated") as usize..];
        for i in 0..self.blocks() as usize {
            let want = u32::from_le_bytes(table[4 * i..4 * i + 4].try_into().expect("4 bytes"));
            if crc32fast::hash(&self.map[self.starts[i]..self.starts[i + 1]]) != want {
                return Err(self.invalid(i as u64, "does not match its checksum: the data is damaged".into()));
            }
        }
        Ok(())
    }
}

/// Writes a sparse `.ssgd` file a block at a time (memory: one block).
#[derive(Debug)]
pub struct SparseWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: BufWriter<File>,
    block_rows: usize,
    block: SparseRows,
    /// The largest id written (the header's id bits cover it).
    max_id: u32,
    done: bool,
    at: u64,
    rows: u64,
    starts: Vec<u64>,
    checksums: Vec<u32>,
}

impl SparseWriter {
    /// Creates `path` (through a temporary file beside it, removed if the writer is dropped
    /// before [`SparseWriter::finish`]).
    pub fn create(path: impl AsRef<Path>, block_rows: u32) -> Result<Self, FormatError> {
        let path = path.as_ref().to_path_buf();
        let inv = |what: String| FormatError::Write { path: path.clone(), what };
        Header::sparse(0, 32, block_rows, HEADER_LEN as u64).map_err(|e| inv(e.to_string()))?;
        let mut name = path.file_name().ok_or_else(|| inv("not a file path".into()))?.to_os_string();
        name.push(format!(".tmp{}", std::process::id()));
        let tmp = path.with_file_name(name);
        let file = File::create(&tmp).map_err(|source| FormatError::Io { path: tmp.clone(), op: "create", source })?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(&[0u8; HEADER_LEN]).map_err(|source| FormatError::Io { path: tmp.clone(), op: "write", source })?;
        Ok(SparseWriter {
            path,
            tmp,
            file,
            block_rows: block_rows as usize,
            block: SparseRows::new(),
            max_id: 0,
            done: false,
            at: HEADER_LEN as u64,
            rows: 0,
            starts: Vec::new(),
            checksums: Vec::new(),
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends row `r` of `from`.
    pub fn push(&mut self, from: &RowsRef<'_>, r: usize) -> Result<(), FormatError> {
        self.max_id = from.row(r).ids.iter().fold(self.max_id, |m, &id| m.max(id));
        self.block.push_row(from, r);
        self.rows += 1;
        if self.block.len() == self.block_rows {
            self.write_block()?;
        }
        Ok(())
    }

    fn write_block(&mut self) -> Result<(), FormatError> {
        let b = &self.block;
        let (rows, nnz) = (b.len(), b.nnz());
        let values = b.values.iter().any(|&v| v != 1.0);
        let weights = b.weights.iter().any(|&w| w != 1.0);
        let l = Layout::of(rows, nnz, values, weights);
        let mut bytes = vec![0u8; l.end];
        let mut put = |at: usize, src: &[u8]| bytes[at..at + src.len()].copy_from_slice(src);
        put(0, &(rows as u32).to_le_bytes());
        put(4, &(nnz as u32).to_le_bytes());
        let flags = if values { BLOCK_VALUES } else { 0 } | if weights { BLOCK_WEIGHTS } else { 0 };
        put(8, &flags.to_le_bytes());
        put(l.offsets, bytemuck::cast_slice(&b.offsets));
        put(l.ids, bytemuck::cast_slice(&b.ids));
        put(l.ns, &b.ns);
        if values {
            put(l.values, bytemuck::cast_slice(&b.values));
        }
        put(l.labels, bytemuck::cast_slice(&b.labels));
        if weights {
            put(l.weights, bytemuck::cast_slice(&b.weights));
        }
        self.file.write_all(&bytes).map_err(|source| FormatError::Io { path: self.tmp.clone(), op: "write", source })?;
        self.starts.push(self.at);
        self.checksums.push(crc32fast::hash(&bytes));
        self.at += bytes.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Writes the last block, the index, the checksums and the header, and renames the file
    /// into place.
    pub fn finish(mut self) -> Result<u64, FormatError> {
        if !self.block.is_empty() {
            self.write_block()?;
        }
        let io = |op, source| FormatError::Io { path: self.tmp.clone(), op, source };
        let id_bits = (32 - self.max_id.leading_zeros()).max(1);
        let header = Header::sparse(self.rows, id_bits, self.block_rows as u32, self.at)
            .map_err(|e| FormatError::Write { path: self.path.clone(), what: e.to_string() })?;
        for s in &self.starts {
            self.file.write_all(&s.to_le_bytes()).map_err(|e| io("write", e))?;
        }
        for c in &self.checksums {
            self.file.write_all(&c.to_le_bytes()).map_err(|e| io("write", e))?;
        }
        self.file.flush().map_err(|e| io("write", e))?;
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
        file.write_all(&header.encode()).map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("fsync", e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|source| FormatError::Io { path: self.path.clone(), op: "rename", source })?;
        self.done = true;
        Ok(self.rows)
    }
}

impl Drop for SparseWriter {
    /// A writer dropped unfinished (an error, a stop) removes its temporary file.
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
