//! Where rows come from: text parsers (CSV, LibSVM, VW), the synthetic generator, and the
//! feature hash used for VW names.

pub mod gen;
pub mod hash;
pub mod text;

pub use text::{ParseError, TextFormat, TextOptions, TextParser};
