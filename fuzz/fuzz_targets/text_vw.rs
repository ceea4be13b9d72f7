//! Any bytes through the vw text parser (Vowpal Wabbit text — hashed into a fixed dimension, or names discovered by a scan): see common/dense_text.rs.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common/dense_text.rs"]
mod dense_text;

fuzz_target!(|data: &[u8]| dense_text::fuzz(streamsgd::source::TextFormat::Vw, data));
