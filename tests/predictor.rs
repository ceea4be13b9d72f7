//! The library's `Predictor` predicts what `streamsgd predict` prints, from the same model
//! files: a dense model with its feature stage (imputed means, standardised columns) and a
//! sparse one (hashed, crossed, with its NaN policy).

use std::path::Path;
use std::process::Command;
use streamsgd::predictor::Predictor;
use streamsgd::source::TextFormat;

fn streamsgd(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_streamsgd")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into()
}

/// `predict`'s lines as numbers (NaN as printed).
fn printed(out: &str) -> Vec<f32> {
    out.lines().map(|l| l.parse().unwrap()).collect()
}

fn same(a: f32, b: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

#[test]
fn a_dense_model_with_its_feature_stage_predicts_as_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    streamsgd(&["gen", "--task", "regression", "--rows", "3000", "--features", "4", "--missing-rate", "0.1", "-o", &p("r.csv")]);
    streamsgd(&["train", &p("r.csv"), "--loss", "squared", "--missing", "mean", "--scale", "standard", "--save", &p("r.model")]);
    let cli = printed(&streamsgd(&["predict", "--model", &p("r.model"), &p("r.csv")]));
    let predictor = Predictor::load(Path::new(&p("r.model"))).unwrap();
    assert_eq!(predictor.features(), Some(4));
    let text = std::fs::read_to_string(p("r.csv")).unwrap();
    let mut nan_cells = 0;
    for (line, want) in text.lines().skip(1).zip(&cli) {
        let cells: Vec<f32> = line.split(',').map(|c| if c.is_empty() { f32::NAN } else { c.parse().unwrap() }).collect();
        nan_cells += cells.iter().filter(|v| v.is_nan()).count();
        let got = predictor.predict(&cells[..4]).unwrap();
        assert!(same(got, *want), "{line}: {got} vs {want}");
    }
    assert_eq!(cli.len(), 3000);
    assert!(nan_cells > 500, "the data has missing cells to impute: {nan_cells}");
    assert!(predictor.predict(&[1.0, 2.0]).is_err());
    assert!(predictor.predict_line(TextFormat::Vw, "1 |a x").is_err());
}

#[test]
fn a_sparse_model_predicts_as_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    streamsgd(&["gen", "--task", "ctr", "--rows", "5000", "--seed", "2", "-o", &p("c.vw")]);
    // A few NaN values, left out as training left them out (--missing zero).
    let text: String = std::fs::read_to_string(p("c.vw"))
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| if i % 50 == 0 { format!("{l} |z w:nan\n") } else { format!("{l}\n") })
        .collect();
    std::fs::write(p("c.vw"), &text).unwrap();
    streamsgd(&["train", &p("c.vw"), "--interactions", "cd", "--missing", "zero", "--save", &p("c.model")]);
    let cli = printed(&streamsgd(&["predict", "--model", &p("c.model"), &p("c.vw")]));
    let predictor = Predictor::load(Path::new(&p("c.model"))).unwrap();
    assert_eq!(predictor.features(), None);
    for (line, want) in text.lines().zip(&cli) {
        let got = predictor.predict_line(TextFormat::Vw, line).unwrap();
        assert!(same(got, *want), "{line}: {got} vs {want}");
    }
    assert_eq!(cli.len(), 5000);
    assert!(predictor.predict(&[1.0]).is_err());
    assert!(predictor.predict_line(TextFormat::Vw, "1 |a x:oops").is_err());
}
