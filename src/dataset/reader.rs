//! Opening a `.ssgd` file: map it, validate everything, then hand out zero-copy [`Block`] views.
//!
//! Trust boundary: the file is memory-mapped. Everything the header promises is checked against
//! the mapping before the first slice is handed out, so no byte pattern can cause a panic or UB.
//! A file truncated *by another process while mapped* can still fault (SIGBUS) as with any mmap;
//! `.ssgd` files are written to a temporary name and renamed, so a writer never does that.
//!
//! A file that fits in half of this machine's memory is prefaulted (`MAP_POPULATE`): page-table
//! work happens once at open instead of as minor faults inside the learning loop (measured: it
//! trims the latency median under `--rate`). A larger one is not (prefaulting it would read it
//! all before learning, evicting its own beginning): it is read as it is learned, with
//! read-ahead and drop-behind ([`Streaming`]), so memory stays bounded and the page cache
//! usable.

use super::header::{Header, HeaderError, ALIGN, HEADER_LEN};
use super::FormatError;
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A memory-mapped, validated `.ssgd` dataset.
#[derive(Debug)]
pub struct Dataset {
    path: PathBuf,
    header: Header,
    map: Mmap,
    /// The open file (drop-behind tells the kernel through it).
    file: File,
    /// Prefaulted at open (it fits in memory).
    populated: bool,
    /// Bytes of one full block.
    full_block_bytes: usize,
}

/// A zero-copy view of one block: `rows` rows stored column-major with a stride of `stride` rows.
#[derive(Clone, Copy, Debug)]
pub struct Block<'a> {
    /// Index of this block in its file (or source).
    pub index: u64,
    /// Number of valid rows.
    pub rows: usize,
    /// Column stride in rows (≥ rows, a multiple of 16); padding values are zero.
    pub stride: usize,
    /// Number of feature columns.
    pub features: usize,
    /// All feature columns, `features × stride` values, column `j` at `j*stride..`.
    pub data: &'a [f32],
    /// Labels, `rows` values.
    pub labels: &'a [f32],
    /// Per-row importance weights, `rows` values, when the file has them.
    pub weights: Option<&'a [f32]>,
}

impl<'a> Block<'a> {
    /// Feature column `j` (`rows` values, 64-byte aligned when the block comes from a file).
    #[inline]
    pub fn column(&self, j: usize) -> &'a [f32] {
        &self.data[j * self.stride..j * self.stride + self.rows]
    }

    /// Weight of row `r` (1 when the block has no weight column).
    #[inline]
    pub fn weight(&self, r: usize) -> f32 {
        self.weights.map_or(1.0, |w| w[r])
    }

    /// Copies row `r`'s features into `out` (`out.len() == features`).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.data[j * self.stride + r];
        }
    }
}

impl Dataset {
    /// Maps and validates `path`. Every way the bytes can disagree with the header is an error.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FormatError> {
        let path = path.as_ref().to_path_buf();
        let io = |op, source| FormatError::Io { path: path.clone(), op, source };
        let file = File::open(&path).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if len < HEADER_LEN as u64 {
            return Err(FormatError::Invalid { path, what: format!("truncated: {len} bytes, shorter than the {HEADER_LEN}-byte header") });
        }
        let populated = crate::batch::physical_memory().is_none_or(|m| len <= m / 2);
        let mut options = memmap2::MmapOptions::new();
        if populated {
            options.populate();
        }
        // SAFETY: the mapping is read-only; the bytes are validated
        // below before any typed view exists. Concurrent truncation by another process is the
        // documented trust boundary (module docs).
        let map = unsafe { options.map(&file) }.map_err(|e| io("mmap", e))?;
        let header = Header::decode(&map).map_err(|e| match e {
            HeaderError::Invalid(what) => FormatError::Invalid { path: path.clone(), what },
            HeaderError::Unsupported(what) => FormatError::Unsupported { path: path.clone(), what },
        })?;
        if header.is_sparse() {
            return Err(FormatError::Unsupported { path, what: "sparse rows: this reader maps dense blocks (use SparseDataset)".into() });
        }
        let want = header.file_size().expect("validated by decode");
        if want != len {
            let what = if len < want {
                format!("truncated: {len} bytes, the header's {} rows × {} columns need {want}", header.rows, header.columns())
            } else {
                format!(
                    "{len} bytes, but the header's {} rows × {} columns need exactly {want} (trailing bytes)",
                    header.rows,
                    header.columns()
                )
            };
            return Err(FormatError::Invalid { path, what });
        }
        if map.as_ptr() as usize % ALIGN != 0 {
            return Err(FormatError::Invalid { path, what: "mapping is not 64-byte aligned".into() });
        }
        let full_block_bytes = usize::try_from(header.block_bytes(header.block_rows as u64).expect("validated"))
            .map_err(|_| FormatError::Invalid { path: path.clone(), what: "block too large for this platform".into() })?;
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(Dataset { path, header, map, file, populated, full_block_bytes })
    }

    /// Read-ahead and drop-behind for reading the file front to back, when it was too large
    /// to prefault (`None` otherwise: it is all in memory already).
    pub fn streaming(&self) -> Option<Streaming<'_>> {
        (!self.populated).then_some(Streaming { ds: self, ahead: AHEAD, behind: BEHIND, step: DROP_STEP, ahead_to: 0, dropped_to: 0 })
    }

    /// The file offset where block `i` starts.
    pub fn block_offset(&self, i: u64) -> usize {
        HEADER_LEN + i as usize * self.full_block_bytes
    }

    /// Checks every block against its CRC-32 in the file's table: a flipped bit anywhere in
    /// the data is an error naming the block and its first row. `Ok(false)` for a file written
    /// without checksums (nothing to check against).
    pub fn verify(&self) -> Result<bool, FormatError> {
        let h = &self.header;
        if !h.has_checksums() {
            return Ok(false);
        }
        let at = h.checksums_at().expect("validated") as usize;
        let table = &self.map[at..];
        let mut start = HEADER_LEN;
        for i in 0..h.blocks() {
            let len = h.block_bytes(h.rows_in_block(i)).expect("validated") as usize;
            let want = u32::from_le_bytes(table[4 * i as usize..4 * i as usize + 4].try_into().expect("4 bytes"));
            if crc32fast::hash(&self.map[start..start + len]) != want {
                return Err(FormatError::Invalid {
                    path: self.path.clone(),
                    what: format!(
                        "block {} (rows {} to {}) does not match its checksum: the data is damaged",
                        i + 1,
                        i * h.block_rows as u64 + 1,
                        i * h.block_rows as u64 + h.rows_in_block(i)
                    ),
                });
            }
            start += len;
        }
        Ok(true)
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of rows.
    pub fn rows(&self) -> u64 {
        self.header.rows
    }

    /// Number of feature columns.
    pub fn features(&self) -> usize {
        self.header.features as usize
    }

    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        self.header.blocks()
    }

    /// The whole mapped file (header included), e.g. to measure raw streaming bandwidth.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Block `i` as a zero-copy view. Panics if `i >= blocks()`.
    pub fn block(&self, i: u64) -> Block<'_> {
        assert!(i < self.blocks(), "block {i} out of range ({} blocks)", self.blocks());
        let rows = self.header.rows_in_block(i) as usize;
        let stride = Header::stride_for(rows as u64) as usize;
        let start = HEADER_LEN + i as usize * self.full_block_bytes;
        let len = stride * self.header.columns() as usize * 4;
        // Cannot panic: `open` checked the file size equals the sum of block sizes, the mapping
        // is 64-byte aligned, and `start` and `len` are multiples of 64.
        let floats: &[f32] = bytemuck::cast_slice(&self.map[start..start + len]);
        let d = self.features();
        let (data, rest) = floats.split_at(d * stride);
        let labels = &rest[..rows];
        let weights = self.header.has_weights().then(|| &rest[stride..stride + rows]);
        Block { index: i, rows, stride, features: d, data, labels, weights }
    }

    /// All blocks in file order.
    pub fn iter(&self) -> impl Iterator<Item = Block<'_>> + '_ {
        (0..self.blocks()).map(move |i| self.block(i))
    }
}

/// Bytes read ahead of the reading position (asked of the kernel in steps of half of it).
const AHEAD: usize = 256 << 20;
/// Bytes kept behind the reading position (batches still being learned read them; a page
/// dropped too early is only read again, never wrong).
const BEHIND: usize = 256 << 20;
/// Bytes dropped at a time.
const DROP_STEP: usize = 64 << 20;

/// A large mapped file read front to back: the next 256 MB are asked for ahead of time, and
/// what lies more than 256 MB back is unmapped and dropped from the page cache, so a file
/// larger than memory streams at the disk's speed in bounded memory.
#[derive(Debug)]
pub struct Streaming<'a> {
    ds: &'a Dataset,
    ahead: usize,
    behind: usize,
    step: usize,
    ahead_to: usize,
    dropped_to: usize,
}

impl Streaming<'_> {
    /// The reader has reached file offset `at`.
    pub fn at(&mut self, at: usize) {
        let len = self.ds.map.len();
        if at + self.ahead / 2 > self.ahead_to && self.ahead_to < len {
            let to = (at + self.ahead).min(len);
            let from = self.ahead_to.max(at);
            let _ = self.ds.map.advise_range(memmap2::Advice::WillNeed, from, to - from);
            self.ahead_to = to;
        }
        let behind = at.saturating_sub(self.behind) / self.step * self.step;
        if behind > self.dropped_to {
            let (from, n) = (self.dropped_to, behind - self.dropped_to);
            // SAFETY: the mapping is read-only and file-backed: unmapping its pages loses
            // nothing, and a later read faults them in from the file again.
            let _ = unsafe { self.ds.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, n) };
            drop_cached(&self.ds.file, from, n);
            self.dropped_to = behind;
        }
    }
}

/// Asks the kernel to drop `n` bytes of `file` from `from` out of the page cache (clean pages:
/// nothing is lost).
fn drop_cached(file: &File, from: usize, n: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), from as libc::off_t, n as libc::off_t, libc::POSIX_FADV_DONTNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_read_after_their_pages_were_dropped_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ssgd");
        let mut w = crate::dataset::DatasetWriter::create(&path, 3, 64, false).unwrap();
        for r in 0..20_000u32 {
            w.push(&[r as f32, (r % 7) as f32, 1.5], (r % 2) as f32, 1.0).unwrap();
        }
        w.finish().unwrap();
        let ds = Dataset::open(&path).unwrap();
        let sums = |ds: &Dataset| ds.iter().map(|b| b.data.iter().map(|&x| f64::from(x)).sum::<f64>()).collect::<Vec<_>>();
        let want = sums(&ds);
        // Windows of a page or two: every block is read after the pages behind it were dropped.
        let mut st = Streaming { ds: &ds, ahead: 8192, behind: 4096, step: 4096, ahead_to: 0, dropped_to: 0 };
        let got: Vec<f64> = (0..ds.blocks())
            .map(|i| {
                st.at(ds.block_offset(i));
                ds.block(i).data.iter().map(|&x| f64::from(x)).sum()
            })
            .collect();
        assert!(st.dropped_to > 0);
        assert_eq!(got, want);
        assert_eq!(sums(&ds), want);
    }
}
