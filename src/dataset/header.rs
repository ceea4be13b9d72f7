//! The 64-byte `.ssgd` header: encoding, decoding and the arithmetic of block sizes.
//!
//! This module has no `unsafe`: it is pure byte parsing, and it is the target of the
//! `header` fuzz target (`fuzz/fuzz_targets/header.rs`).

/// File magic: the first eight bytes of every `.ssgd` file.
pub const MAGIC: [u8; 8] = *b"SSGDv\0\r\n";
/// The newest format version this build reads and writes: 2 adds sparse blocks. Dense files
/// are still written as version 1 (their layout did not change), so older readers read them.
pub const VERSION: u32 = 2;
/// The version of dense files.
pub const VERSION_DENSE: u32 = 1;
/// Length of the fixed header; blocks start right after it.
pub const HEADER_LEN: usize = 64;
/// Every block starts on, and every column inside a block starts on, this alignment (bytes).
pub const ALIGN: usize = 64;
/// Column stride granularity in rows: 16 f32 = 64 bytes.
pub const STRIDE_ROWS: usize = ALIGN / 4;
/// Flag bit: blocks hold sparse CSR rows (version 2; see docs/FORMAT.md).
pub const FLAG_SPARSE: u32 = 1 << 0;
/// Flag bit: every block carries a per-row weight (importance) column after the labels.
pub const FLAG_WEIGHTS: u32 = 1 << 1;
/// Flag bit: a table of CRC-32s, one little-endian u32 per block, follows the last block.
pub const FLAG_CHECKSUMS: u32 = 1 << 2;
/// The flag bits this version knows.
pub const KNOWN_FLAGS: u32 = FLAG_SPARSE | FLAG_WEIGHTS | FLAG_CHECKSUMS;
/// Largest block size accepted (rows).
pub const MAX_BLOCK_ROWS: u32 = 1 << 20;
/// Largest feature count accepted.
pub const MAX_FEATURES: u32 = 1 << 24;
/// Bytes of a sparse file's block index entry (a u64 offset per block).
pub const INDEX_ENTRY: u64 = 8;

/// The decoded header of a `.ssgd` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Number of rows in the file.
    pub rows: u64,
    /// Dense: number of feature columns (d ≥ 1). Sparse: the id space's bits (every feature
    /// id is below 2^features, 1 ≤ features ≤ 32).
    pub features: u32,
    /// Rows per block (B, a power of two, 16 ≤ B ≤ 2^20).
    pub block_rows: u32,
    /// Layout flags ([`FLAG_SPARSE`], [`FLAG_WEIGHTS`], [`FLAG_CHECKSUMS`]).
    pub flags: u32,
    /// Sparse: byte offset of the block index (0 for dense files).
    pub index_at: u64,
}

/// Why a header is rejected; the caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a valid header, with a human explanation.
    #[error("{0}")]
    Invalid(String),
    /// A valid header that asks for a feature this build lacks.
    #[error("{0} (not supported by this build)")]
    Unsupported(String),
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Header {
    /// A dense header with block checksums (what this version writes); validates like
    /// [`Header::decode`] does.
    pub fn new(rows: u64, features: u32, block_rows: u32, weights: bool) -> Result<Self, HeaderError> {
        let h = Header { rows, features, block_rows, flags: FLAG_CHECKSUMS | if weights { FLAG_WEIGHTS } else { 0 }, index_at: 0 };
        h.validate()?;
        Ok(h)
    }

    /// A sparse header (ids below 2^`id_bits`, the block index at `index_at`), with block
    /// checksums.
    pub fn sparse(rows: u64, id_bits: u32, block_rows: u32, index_at: u64) -> Result<Self, HeaderError> {
        let flags = FLAG_SPARSE | FLAG_CHECKSUMS;
        let h = Header { rows, features: id_bits, block_rows, flags, index_at };
        h.validate()?;
        Ok(h)
    }

    /// True for sparse (CSR) blocks.
    pub fn is_sparse(&self) -> bool {
        self.flags & FLAG_SPARSE != 0
    }

    /// True when blocks carry a weight column.
    pub fn has_weights(&self) -> bool {
        self.flags & FLAG_WEIGHTS != 0
    }

    /// True when a CRC-32 per block follows the blocks.
    pub fn has_checksums(&self) -> bool {
        self.flags & FLAG_CHECKSUMS != 0
    }

    /// Byte offset of the checksum table (the end of the last block; sparse: of the index).
    pub fn checksums_at(&self) -> Option<u64> {
        if self.is_sparse() {
            return self.index_at.checked_add(self.blocks().checked_mul(INDEX_ENTRY)?);
        }
        let b = self.block_rows as u64;
        let (full, tail) = (self.rows / b, self.rows % b);
        let tail_bytes = if tail == 0 { 0 } else { self.block_bytes(tail)? };
        (HEADER_LEN as u64).checked_add(self.block_bytes(b)?.checked_mul(full)?)?.checked_add(tail_bytes)
    }

    /// Number of per-row columns stored in a block: features, label, optional weight.
    pub fn columns(&self) -> u64 {
        self.features as u64 + 1 + u64::from(self.has_weights())
    }

    /// Number of blocks (the last one may be partial).
    pub fn blocks(&self) -> u64 {
        self.rows.div_ceil(self.block_rows as u64)
    }

    /// Rows in block `i` (`i < blocks()`).
    pub fn rows_in_block(&self, i: u64) -> u64 {
        let b = self.block_rows as u64;
        (self.rows - i * b).min(b)
    }

    /// Column stride (rows, a multiple of 16) of a block holding `rows` rows.
    pub fn stride_for(rows: u64) -> u64 {
        rows.div_ceil(STRIDE_ROWS as u64) * STRIDE_ROWS as u64
    }

    /// Bytes of a block holding `rows` rows, or `None` on overflow.
    pub fn block_bytes(&self, rows: u64) -> Option<u64> {
        Self::stride_for(rows).checked_mul(self.columns())?.checked_mul(4)
    }

    /// The exact file size this header implies, or `None` when it overflows u64.
    pub fn file_size(&self) -> Option<u64> {
        let table = if self.has_checksums() { self.blocks().checked_mul(4)? } else { 0 };
        self.checksums_at()?.checked_add(table)
    }

    fn validate(&self) -> Result<(), HeaderError> {
        let inv = |s: String| Err(HeaderError::Invalid(s));
        if self.is_sparse() {
            if !(1..=32).contains(&self.features) {
                return inv(format!("sparse id bits {} out of 1..=32", self.features));
            }
            if self.has_weights() {
                return inv("flag bit 1 (a weight column) in a sparse file: its blocks say whether they hold weights".into());
            }
            if self.index_at < HEADER_LEN as u64 || self.index_at % ALIGN as u64 != 0 {
                return inv(format!("block index offset {} is not a multiple of {ALIGN} after the header", self.index_at));
            }
        } else if self.index_at != 0 {
            return inv("a dense file with a block index offset".into());
        }
        if self.features == 0 {
            return inv("zero features".into());
        }
        if !self.is_sparse() && self.features > MAX_FEATURES {
            return inv(format!("{} features exceeds the maximum {MAX_FEATURES}", self.features));
        }
        if !self.block_rows.is_power_of_two() || self.block_rows < STRIDE_ROWS as u32 || self.block_rows > MAX_BLOCK_ROWS {
            return inv(format!("rows per block {} is not a power of two in {STRIDE_ROWS}..={MAX_BLOCK_ROWS}", self.block_rows));
        }
        if self.flags & !KNOWN_FLAGS != 0 {
            return inv(format!("unknown layout flags {:#x}", self.flags & !KNOWN_FLAGS));
        }
        if self.file_size().is_none() {
            return inv(format!("{} rows × {} columns overflows the size arithmetic", self.rows, self.columns()));
        }
        Ok(())
    }

    /// Encodes the header, checksum included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        let version = if self.is_sparse() { VERSION } else { VERSION_DENSE };
        b[8..12].copy_from_slice(&version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.rows.to_le_bytes());
        b[24..28].copy_from_slice(&self.features.to_le_bytes());
        b[28..32].copy_from_slice(&self.block_rows.to_le_bytes());
        b[32..36].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[36..44].copy_from_slice(&self.index_at.to_le_bytes());
        // 44..60 reserved, zero.
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates a header from the first bytes of a file. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let inv = |s: String| Err(HeaderError::Invalid(s));
        if bytes.len() < HEADER_LEN {
            return inv(format!("truncated header: {} bytes, need {HEADER_LEN}", bytes.len()));
        }
        if bytes[0..8] != MAGIC {
            return inv(format!("wrong magic {:02x?} (expected {:02x?})", &bytes[0..8], MAGIC));
        }
        let version = le_u32(bytes, 8);
        if !(1..=VERSION).contains(&version) {
            return Err(HeaderError::Unsupported(format!("format version {version} (this build reads versions 1 to {VERSION})")));
        }
        let crc = le_u32(bytes, 60);
        let want = crc32fast::hash(&bytes[..60]);
        if crc != want {
            return inv(format!("header checksum {crc:#010x} does not match its contents ({want:#010x})"));
        }
        let header_len = le_u32(bytes, 32);
        if header_len as usize != HEADER_LEN {
            return inv(format!("header length {header_len}, expected {HEADER_LEN}"));
        }
        if bytes[44..60].iter().any(|&x| x != 0) {
            return inv("reserved header bytes 44..60 are not zero".into());
        }
        let h = Header {
            flags: le_u32(bytes, 12),
            rows: le_u64(bytes, 16),
            features: le_u32(bytes, 24),
            block_rows: le_u32(bytes, 28),
            index_at: le_u64(bytes, 36),
        };
        if h.is_sparse() && version < 2 {
            return inv("sparse blocks in a version-1 header".into());
        }
        h.validate()?;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_sizes() {
        let h = Header::new(1000, 3, 256, true).unwrap();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        // 3 full blocks of 256 rows × 5 columns, tail of 232 rows → stride 240, then a CRC-32
        // per block.
        assert_eq!(h.checksums_at(), Some(64 + 3 * 256 * 5 * 4 + 240 * 5 * 4));
        assert_eq!(h.file_size(), Some(64 + 3 * 256 * 5 * 4 + 240 * 5 * 4 + 4 * 4));
        // Without the flag (files written before checksums): no table.
        let old = Header { flags: FLAG_WEIGHTS, ..h };
        assert_eq!(old.file_size(), h.checksums_at());
        assert_eq!(h.blocks(), 4);
        assert_eq!(h.rows_in_block(3), 232);
    }

    #[test]
    fn rejects_bad_fields() {
        assert!(Header::new(10, 0, 1024, false).is_err());
        assert!(Header::new(10, 4, 1000, false).is_err());
        assert!(Header::new(10, 4, 8, false).is_err());
        assert!(Header::new(u64::MAX, MAX_FEATURES, 1024, false).is_err());
        let mut b = Header::new(10, 4, 1024, false).unwrap().encode();
        b[0] ^= 1;
        assert!(matches!(Header::decode(&b), Err(HeaderError::Invalid(m)) if m.contains("magic")));
        let mut b = Header::new(10, 4, 1024, false).unwrap().encode();
        b[20] ^= 1;
        assert!(matches!(Header::decode(&b), Err(HeaderError::Invalid(m)) if m.contains("checksum")));
        assert!(Header::decode(&b[..10]).is_err());
    }

    #[test]
    fn sparse_headers() {
        let h = Header::sparse(1000, 32, 256, 4096).unwrap();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        assert_eq!(h.encode()[8], 2, "sparse files are version 2");
        assert_eq!(Header::new(10, 4, 1024, false).unwrap().encode()[8], 1, "dense files stay version 1");
        assert_eq!(h.file_size(), Some(4096 + 4 * 8 + 4 * 4));
        assert!(Header::sparse(10, 33, 256, 4096).is_err());
        assert!(Header::sparse(10, 20, 256, 100).is_err());
        let mut b = h.encode();
        b[8] = 1;
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        assert!(Header::decode(&b).is_err(), "sparse needs version 2");
    }
}
