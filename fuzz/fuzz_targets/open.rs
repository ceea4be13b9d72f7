//! Any bytes as a whole file: opening and scanning must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("ssgd-fuzz-{}.ssgd", std::process::id()));
    std::fs::File::create(&path).unwrap().write_all(data).unwrap();
    if let Ok(ds) = streamsgd::dataset::Dataset::open(&path) {
        let _ = streamsgd::dataset::stats::scan(&ds);
    }
    let _ = std::fs::remove_file(&path);
});
