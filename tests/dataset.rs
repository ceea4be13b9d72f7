//! The dataset format, converters and generator, end to end.

use indicatif::ProgressBar;
use proptest::prelude::*;
use std::path::Path;
use streamsgd::convert::{convert_text, write_generated, ConvertOptions};
use streamsgd::dataset::{stats, Dataset, DatasetWriter, FormatError};
use streamsgd::source::gen::{GenConfig, Generator, Task};
use streamsgd::source::TextOptions;

fn gen(task: Task, rows: u64, missing: f32) -> Generator {
    Generator::new(GenConfig { task, rows, features: 7, seed: 3, noise: 0.5, missing_rate: missing, duplicate_rate: 0.05, drift_at: None })
}

fn opts() -> ConvertOptions {
    ConvertOptions { format: None, text: TextOptions::default(), skip_bad: false, block_rows: 1024, stop: None }
}

/// All (features, label) of a file, bitwise.
fn rows_of(path: &Path) -> Vec<(Vec<u32>, f32)> {
    let ds = Dataset::open(path).unwrap();
    let mut out = Vec::new();
    let mut row = vec![0.0; ds.features()];
    for b in ds.iter() {
        for r in 0..b.rows {
            b.row_into(r, &mut row);
            out.push((row.iter().map(|x| x.to_bits()).collect(), b.labels[r]));
        }
    }
    out
}

#[test]
fn text_roundtrips_give_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    for task in [Task::Classification, Task::Regression] {
        let g = gen(task, 2500, 0.02);
        let direct = dir.path().join("direct.ssgd");
        write_generated(&g, &direct, 1024, &ProgressBar::hidden()).unwrap();
        let want = rows_of(&direct);
        assert_eq!(want.len(), 2500);
        for ext in ["csv", "libsvm", "vw"] {
            let text = dir.path().join(format!("g.{ext}"));
            write_generated(&g, &text, 1024, &ProgressBar::hidden()).unwrap();
            let conv = dir.path().join(format!("conv-{ext}.ssgd"));
            let s = convert_text(&text, &conv, &opts(), &ProgressBar::hidden()).unwrap();
            assert_eq!(s.rows, 2500, "{ext}");
            let got = rows_of(&conv);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.0, w.0, "{ext} {task:?} row {i} features");
                let label = if ext == "vw" && task == Task::Classification && g.1 == -1.0 { 0.0 } else { g.1 };
                assert_eq!(label.to_bits(), w.1.to_bits(), "{ext} {task:?} row {i} label");
            }
            let nan = stats::scan(&Dataset::open(&conv).unwrap()).unwrap().nan_cells;
            assert_eq!(nan, stats::scan(&Dataset::open(&direct).unwrap()).unwrap().nan_cells, "{ext}");
            assert!(nan > 0);
        }
    }
}

#[test]
fn every_flipped_or_truncated_byte_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.ssgd");
    write_generated(&gen(Task::Regression, 100, 0.0), &good, 16, &ProgressBar::hidden()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.path().join("bad.ssgd");
    for i in 0..64 {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            std::fs::write(&bad, &b).unwrap();
            let e = Dataset::open(&bad).expect_err(&format!("flipped byte {i}"));
            assert!(e.to_string().contains("bad.ssgd"), "{e}");
        }
    }
    for len in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        std::fs::write(&bad, &bytes[..len]).unwrap();
        let e = Dataset::open(&bad).expect_err(&format!("truncated to {len}"));
        assert!(matches!(e, FormatError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");
    }
    let mut long = bytes.clone();
    long.extend_from_slice(&[0; 64]);
    std::fs::write(&bad, &long).unwrap();
    assert!(Dataset::open(&bad).unwrap_err().to_string().contains("trailing"));
    // A file written before checksums (no flag, no table) opens as before, with nothing to verify.
    let at = bytes.len() - 4 * Dataset::open(&good).unwrap().blocks() as usize;
    let mut head = streamsgd::dataset::Header::decode(&bytes).unwrap();
    head.flags &= !streamsgd::dataset::header::FLAG_CHECKSUMS;
    let old = [&head.encode()[..], &bytes[64..at]].concat();
    std::fs::write(&bad, &old).unwrap();
    assert!(!Dataset::open(&bad).unwrap().verify().unwrap());
    // Flipped data bytes keep the file structurally valid: a scan still never panics, and the
    // block checksums find every flip (in the data or in the table).
    assert!(Dataset::open(&good).unwrap().verify().unwrap());
    for i in 64..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            std::fs::write(&bad, &b).unwrap();
            let ds = Dataset::open(&bad).unwrap();
            let _ = stats::scan(&ds);
            let e = ds.verify().expect_err(&format!("flipped data byte {i}"));
            assert!(e.to_string().contains("does not match its checksum"), "{e}");
        }
    }
}

#[test]
fn converter_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.ssgd");
    let cases: &[(&str, &str, &str)] = &[
        ("a.csv", "x,y,label\n1,2,0\n1,oops,1\n", "a.csv:3: field y: 'oops' is not a number"),
        ("b.csv", "x,label\n1,0\n1,2,3\n", "b.csv:3: 3 cells, the header has 2 columns"),
        ("c.csv", "x,label\n1,\n", "c.csv:2: field label: label is missing"),
        ("d.csv", "x,label\n1e40,1\n", "d.csv:2: field x: '1e40' is infinite"),
        ("e.libsvm", "1 1:2\n0 x:1\n", "e.libsvm:2: field x:1: index is not a positive integer"),
        ("f.vw", "1 |f a:1\n|f a:2\n", "f.vw:2: field label: no label"),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let e = convert_text(&p, &out, &opts(), &ProgressBar::hidden()).unwrap_err();
        assert!(e.to_string().contains(want), "{name}: got '{e}', want '{want}'");
        assert!(!out.exists(), "no output after an error");
    }
    let p = dir.path().join("a.csv");
    std::fs::write(&p, "x,label\n1,0\nbad,1\n2,1\n").unwrap();
    let s = convert_text(&p, &out, &ConvertOptions { skip_bad: true, ..opts() }, &ProgressBar::hidden()).unwrap();
    assert_eq!((s.rows, s.skipped, s.skipped_examples[0].0), (2, 1, 3));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn writer_reader_roundtrip(rows in 0usize..300, d in 1usize..9, shift in 4u32..8, weights: bool, seed: u64) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.ssgd");
        let mut w = DatasetWriter::create(&p, d, 1 << shift, weights).unwrap();
        let val = |r: usize, j: usize| (seed.wrapping_mul(31).wrapping_add((r * 131 + j) as u64) % 1000) as f32 - 500.0;
        for r in 0..rows {
            let row: Vec<f32> = (0..d).map(|j| val(r, j)).collect();
            w.push(&row, r as f32, 0.5).unwrap();
        }
        prop_assert_eq!(w.finish().unwrap(), rows as u64);
        let ds = Dataset::open(&p).unwrap();
        prop_assert_eq!(ds.rows(), rows as u64);
        let mut seen = 0;
        for b in ds.iter() {
            prop_assert_eq!(b.data.as_ptr() as usize % 64, 0);
            for j in 0..d {
                prop_assert_eq!(b.column(j).as_ptr() as usize % 64, 0);
                for r in 0..b.rows {
                    prop_assert_eq!(b.column(j)[r], val(seen + r, j));
                }
            }
            for r in 0..b.rows {
                prop_assert_eq!(b.labels[r], (seen + r) as f32);
                prop_assert_eq!(b.weight(r), if weights { 0.5 } else { 1.0 });
            }
            seen += b.rows;
        }
        prop_assert_eq!(seen, rows);
    }
}
