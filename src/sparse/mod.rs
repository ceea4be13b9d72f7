//! Sparse, hashed rows end to end: CSR batches ([`rows`]), VW and LibSVM text into them
//! ([`parse`]), and the Hogwild training loop over a shared hashed table ([`mod@train`]). The
//! kernel is `kernel::sparse`, the file format `dataset::sparse`, the hash `source::hash`.

pub mod file;
pub mod native;
pub mod parse;
pub mod rows;
pub mod train;

pub use parse::SparseParser;
pub use rows::{Row, RowsRef, SparseRows};
pub use train::{train, SparseConfig, SparseInput, SparseModel, SparseOutcome, SparseReport};
