//! Any bytes through the sparse parser — VW, LibSVM and CSV with categorical columns: every
//! call appends a row or returns an error (never a panic), and an error leaves the batch as it
//! was (no half row).
#![no_main]
use libfuzzer_sys::fuzz_target;
use streamsgd::source::TextFormat;
use streamsgd::sparse::{SparseParser, SparseRows};

fn drain<R: std::io::BufRead>(mut p: SparseParser<R>) {
    let mut rows = SparseRows::new();
    for _ in 0..100_000 {
        let before = (rows.len(), rows.nnz());
        match p.next_row(&mut rows) {
            Ok(false) => break,
            Ok(true) => assert_eq!(rows.len(), before.0 + 1),
            Err(e) => {
                assert_eq!((rows.len(), rows.nnz()), before, "{e}");
                if e.fatal {
                    break;
                }
            }
        }
        assert_eq!(rows.offsets.len(), rows.len() + 1);
        assert_eq!(*rows.offsets.last().unwrap() as usize, rows.nnz());
    }
}

fuzz_target!(|data: &[u8]| {
    for format in [TextFormat::Vw, TextFormat::Libsvm] {
        let mut p = SparseParser::new(data, "fuzz", format, 7).unwrap();
        p.keep_names();
        drain(p);
    }
    if let Ok(p) = SparseParser::csv(data, "fuzz", 7, None, &["a".to_string(), "b".to_string()]) {
        drain(p);
    }
});
