//! Any bytes through the csv text parser (CSV — the header and every line, the label by name or by default, columns by a model's names): see common/dense_text.rs.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common/dense_text.rs"]
mod dense_text;

fuzz_target!(|data: &[u8]| dense_text::fuzz(streamsgd::source::TextFormat::Csv, data));
