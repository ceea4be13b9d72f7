//! Any bytes as a whole sparse file: opening it, checking each block and verifying the
//! checksums must never panic; a block that opens is consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("ssgd-sparse-fuzz-{}.ssgd", std::process::id()));
    std::fs::File::create(&path).unwrap().write_all(data).unwrap();
    if let Ok(ds) = streamsgd::dataset::SparseDataset::open(&path) {
        let _ = ds.verify();
        for b in 0..ds.blocks().min(1000) {
            if let Ok(rows) = ds.block(b) {
                for r in 0..rows.len() {
                    let row = rows.row(r);
                    assert_eq!(row.ids.len(), row.ns.len());
                    let _ = rows.weight(r);
                }
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
