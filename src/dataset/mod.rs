//! The native dataset format (`.ssgd`): memory-mapped, column-major blocks, zero-copy reads.
//!
//! The byte layout is specified in `docs/FORMAT.md`; [`header`] parses and validates the fixed
//! header, [`reader`] maps a file and hands out [`Block`] views, [`writer`] streams rows into a
//! new file with memory bounded by one block.

pub mod header;
pub mod reader;
pub mod sparse;
pub mod stats;
pub mod writer;

pub use header::{Header, HEADER_LEN, MAGIC, VERSION};
pub use reader::{Block, Dataset};
pub use sparse::{SparseDataset, SparseWriter};
pub use writer::DatasetWriter;

use std::path::PathBuf;

/// Everything that can be wrong with a `.ssgd` file or its creation.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file could not be opened, mapped, read or written.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The header or the size of the file is not a valid `.ssgd` file.
    #[error("{path}: not a valid .ssgd file: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the offending values.
        what: String,
    },
    /// A valid file that uses a feature this build does not implement (sparse blocks).
    #[error("{path}: unsupported .ssgd feature: {what}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// Which feature.
        what: String,
    },
    /// Writer misuse: a row of the wrong width, bad parameters.
    #[error("{path}: {what}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}
