//! `OnlineModel`, the API a program learns through: it learns what `streamsgd train` learns
//! from the same rows (dense with its feature stage, sparse), its files are the CLI's (both
//! ways), and bad rows and settings are typed errors.

use std::path::Path;
use std::process::Command;
use streamsgd::dataset::sparse::SparseDataset;
use streamsgd::dataset::Dataset;
use streamsgd::learner::{BadRows, LearnError};
use streamsgd::loss::Loss;
use streamsgd::model::ModelFile;
use streamsgd::online::{Features, OnlineConfig, OnlineError, OnlineModel};
use streamsgd::predictor::Predictor;
use streamsgd::sparse::parse::Named;
use streamsgd::transform::{Missing, Scaling, TransformConfig};

fn streamsgd(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_streamsgd")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into()
}

/// The rows and labels of a CSV whose last column is the label (empty cells: NaN).
fn csv_rows(path: &str) -> (Vec<f32>, Vec<f32>) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for line in std::fs::read_to_string(path).unwrap().lines().skip(1) {
        let cells: Vec<f32> = line.split(',').map(|c| if c.is_empty() { f32::NAN } else { c.parse().unwrap() }).collect();
        let (label, row) = cells.split_last().unwrap();
        x.extend_from_slice(row);
        y.push(*label);
    }
    (x, y)
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(p, q)| (p - q).abs() <= tol * (1.0 + q.abs()))
}

#[test]
fn dense_rows_with_mean_imputation_and_scaling_learn_what_train_learns() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    streamsgd(&["gen", "--task", "regression", "--rows", "6000", "--features", "5", "--missing-rate", "0.1", "-o", &p("r.csv")]);
    streamsgd(&["convert", &p("r.csv"), "-o", &p("r.ssgd")]);
    let flags = ["--loss", "squared", "--missing", "mean", "--scale", "standard", "--threads", "1", "--batch", "16"];
    streamsgd(&[&["train", &p("r.ssgd"), "--save", &p("cli.model")][..], &flags].concat());
    let cli = ModelFile::load(Path::new(&p("cli.model"))).unwrap();

    let stage = TransformConfig { missing: Missing::Mean, scaling: Scaling::Standard, ..TransformConfig::default() };
    let cfg =
        OnlineConfig { features: Features::Dense { features: 5, stage }, batch: 16, grow: false, ..OnlineConfig::dense(Loss::Squared, 5) };
    let mut model = OnlineModel::new(cfg).unwrap();
    // Block by block as the shard learns the mapped file: the stage's statistics advance
    // once per batch, so the same batches give the same model.
    let data = Dataset::open(p("r.ssgd")).unwrap();
    for b in data.iter() {
        model.learn_columns(b.data, b.stride, b.labels, b.weights).unwrap();
    }
    let stats = model.stats();
    assert_eq!(stats.rows_learned, 6000);
    let ours = model.to_file();
    assert!(close(&ours.model.weights, &cli.model.weights, 1e-6), "{:?} vs {:?}", ours.model.weights, cli.model.weights);
    // Row-major rows in other pieces: other statistics' boundaries, nearly the same model.
    let (x, y) = csv_rows(&p("r.csv"));
    let mut rows = OnlineModel::new(model.config().clone()).unwrap();
    let mut r = 0;
    for n in [1usize, 700, 3000, 2299] {
        rows.learn_batch(&x[r * 5..(r + n) * 5], &y[r..r + n], None).unwrap();
        r += n;
    }
    assert_eq!(r, 6000);
    assert!(close(&rows.to_file().model.weights, &cli.model.weights, 0.02));

    // Saved, it predicts from `Predictor` and the CLI as it does itself (stage frozen).
    model.save(Path::new(&p("api.model"))).unwrap();
    let printed: Vec<f32> = streamsgd(&["predict", "--model", &p("api.model"), &p("r.csv")]).lines().map(|l| l.parse().unwrap()).collect();
    let predictor = Predictor::load(Path::new(&p("api.model"))).unwrap();
    let snapshot = model.snapshot();
    for (r, want) in printed.iter().enumerate() {
        let row = &x[r * 5..(r + 1) * 5];
        let got = model.predict(row).unwrap();
        assert_eq!(got, *want, "row {r}");
        assert_eq!(predictor.predict(row).unwrap(), got);
        assert_eq!(snapshot.predict(row).unwrap(), got);
    }
}

#[test]
fn a_cli_model_is_continued_and_its_stage_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    streamsgd(&["gen", "--task", "classification", "--rows", "4000", "--features", "3", "-o", &p("c.csv")]);
    streamsgd(&["train", &p("c.csv"), "--scale", "minmax", "--save", &p("c.model")]);
    let mut model = OnlineModel::load(Path::new(&p("c.model"))).unwrap();
    assert_eq!(model.features(), Some(3));
    let Features::Dense { stage, .. } = model.config().features else { panic!("a dense model") };
    assert_eq!(stage.scaling, Scaling::Minmax);
    let before = Predictor::load(Path::new(&p("c.model"))).unwrap();
    let (x, y) = csv_rows(&p("c.csv"));
    assert_eq!(model.predict(&x[..3]).unwrap(), before.predict(&x[..3]).unwrap());
    let base = model.stats().rows_learned;
    model.learn_batch(&x, &y, None).unwrap();
    assert_eq!(model.stats().rows_learned, base + 4000);
    // As good a classifier after a second pass (the data's labels are noisy: about 72 %).
    let accuracy = |m: &dyn Fn(&[f32]) -> f32| (0..4000).filter(|&r| (m(&x[r * 3..r * 3 + 3]) > 0.5) == (y[r] > 0.5)).count();
    let (was, now) = (accuracy(&|x| before.predict(x).unwrap()), accuracy(&|x| model.predict(x).unwrap()));
    assert!(was > 2700 && now + 40 > was, "{was} then {now} of 4000");
}

#[test]
fn sparse_rows_learn_what_train_learns() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    streamsgd(&["gen", "--task", "ctr", "--rows", "20000", "--seed", "3", "-o", &p("c.vw")]);
    streamsgd(&["convert", &p("c.vw"), "-o", &p("c.ssgd")]);
    streamsgd(&["train", &p("c.ssgd"), "--bits", "16", "--interactions", "cd", "--threads", "1", "--save", &p("cli.model")]);
    let cli = ModelFile::load(Path::new(&p("cli.model"))).unwrap();

    let mut cfg = OnlineConfig::sparse(Loss::Logistic, 16);
    let Features::Sparse(meta) = &mut cfg.features else { unreachable!() };
    meta.interactions = vec!["cd".into()];
    let mut model = OnlineModel::new(cfg).unwrap();
    let data = SparseDataset::open(Path::new(&p("c.ssgd"))).unwrap();
    for b in 0..data.blocks() {
        model.learn_rows(&data.block(b).unwrap()).unwrap();
    }
    assert_eq!(model.stats().rows_learned, 20000);
    let ours = model.to_file();
    assert_eq!(ours.model.weights, cli.model.weights);
    assert!(model.stats().progress.mean_loss() < 0.6);

    // The CLI predicts from the API's file what the API predicts.
    model.save(Path::new(&p("api.model"))).unwrap();
    let printed: Vec<f32> = streamsgd(&["predict", "--model", &p("api.model"), &p("c.vw")]).lines().map(|l| l.parse().unwrap()).collect();
    let mut ours = Vec::new();
    for b in 0..data.blocks() {
        model.predict_rows(&data.block(b).unwrap(), &mut ours).unwrap();
    }
    assert_eq!(ours, printed);
}

#[test]
fn named_features_are_hashed_as_a_categorical_csv() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let mut csv = String::from("city,hour,y\n");
    for i in 0..3000 {
        let city = ["paris", "oslo", "rome", "lima"][i % 4];
        csv += &format!("{city},{},{}\n", i % 24, u8::from(city == "oslo" || i % 24 > 20));
    }
    std::fs::write(p("t.csv"), &csv).unwrap();
    streamsgd(&["train", &p("t.csv"), "--categorical", "city", "--save", &p("t.model")]);
    let printed: Vec<f32> = streamsgd(&["predict", "--model", &p("t.model"), &p("t.csv")]).lines().map(|l| l.parse().unwrap()).collect();
    let predictor = Predictor::load(Path::new(&p("t.model"))).unwrap();
    let mut continued = OnlineModel::load(Path::new(&p("t.model"))).unwrap();
    for (line, want) in csv.lines().skip(1).zip(&printed) {
        let cells: Vec<&str> = line.split(',').collect();
        let row = [("city", Named::Category(cells[0])), ("hour", Named::Number(cells[1].parse().unwrap()))];
        assert_eq!(predictor.predict_named(row).unwrap(), *want, "{line}");
        assert_eq!(continued.predict_named(row).unwrap(), *want, "{line}");
    }
    // Learned from dicts, a fresh model finds the same pattern.
    let mut fresh = OnlineModel::new(OnlineConfig::sparse(Loss::Logistic, 18)).unwrap();
    for line in csv.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let row = [("city", Named::Category(cells[0])), ("hour", Named::Number(cells[1].parse().unwrap()))];
        fresh.learn_named(row, cells[2].parse().unwrap()).unwrap();
        continued.learn_named(row, cells[2].parse().unwrap()).unwrap();
    }
    let oslo = fresh.predict_named([("city", Named::Category("oslo")), ("hour", Named::Number(3.0))]).unwrap();
    let rome = fresh.predict_named([("city", Named::Category("rome")), ("hour", Named::Number(3.0))]).unwrap();
    assert!(oslo > 0.8 && rome < 0.3, "{oslo} {rome}");
    assert_eq!(continued.stats().rows_learned, 3000);
}

#[test]
fn keyed_rows_learn_and_predict_as_named_rows() {
    let cfg = || {
        let mut c = OnlineConfig::sparse(Loss::Logistic, 14);
        let Features::Sparse(meta) = &mut c.features else { unreachable!() };
        (meta.hash_seed, meta.interactions) = (7, vec!["ch".into()]);
        c
    };
    let (mut named, mut keyed) = (OnlineModel::new(cfg()).unwrap(), OnlineModel::new(cfg()).unwrap());
    let (city, hour) = (keyed.name_key("city").unwrap(), keyed.name_key("hour").unwrap());
    for i in 0..2000 {
        let (c, h) = (["paris", "oslo", "rome"][i % 3], (i % 24) as f32);
        let y = f32::from(c == "oslo" || h > 20.0);
        named.learn_named([("city", Named::Category(c)), ("hour", Named::Number(h))], y).unwrap();
        keyed.learn_keyed([(city, Named::Category(c)), (hour, Named::Number(h))], y).unwrap();
    }
    assert_eq!(named.to_file().encode(), keyed.to_file().encode());
    let row = [(city, Named::Category("lima")), (hour, Named::Number(22.0))];
    assert_eq!(
        keyed.predict_keyed(row).unwrap(),
        named.predict_named([("city", Named::Category("lima")), ("hour", Named::Number(22.0))]).unwrap()
    );
    // An error names the feature by its position (by name through learn_named); the row is
    // not learned.
    let bad = [(city, Named::Category("oslo")), (hour, Named::Number(f32::INFINITY))];
    match keyed.learn_keyed(bad, 1.0) {
        Err(OnlineError::Keyed(e)) => assert_eq!(e.position, 1),
        other => panic!("{other:?}"),
    }
    let err = named.learn_named([("city", Named::Category("oslo")), ("hour", Named::Number(f32::NAN))], 1.0).unwrap_err();
    assert!(err.to_string().starts_with("feature hour: "), "{err}");
    assert_eq!(keyed.stats().rows_learned, 2000);
    let dense = OnlineModel::new(OnlineConfig::dense(Loss::Logistic, 2)).unwrap();
    assert!(dense.name_key("a").is_err());
}

#[test]
fn an_atomic_batch_with_a_bad_row_leaves_the_model_as_it_was() {
    let rows: Vec<f32> = (0..3 * 5000).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let labels: Vec<f32> = rows.chunks(3).map(|r| f32::from(r[0] > 0.0)).collect();
    let [mut m, mut plain] = [0; 2].map(|_| {
        let mut m = OnlineModel::new(OnlineConfig::dense(Loss::Logistic, 3)).unwrap();
        m.learn_batch(&rows[..3 * 2000], &labels[..2000], None).unwrap();
        m
    });
    let before = m.to_file().encode();
    // The bad value is in a late chunk of the batch: those before it were learned, then undone.
    let mut bad = rows.clone();
    bad[3 * 4500 + 1] = f32::NAN;
    assert!(m.learn_batch_atomic(&bad, &labels, None).is_err());
    assert_eq!(m.to_file().encode(), before);
    assert_eq!(m.stats().rows_learned, 2000);
    // Without a bad row it learns what learn_batch learns.
    m.learn_batch_atomic(&rows, &labels, None).unwrap();
    plain.learn_batch(&rows, &labels, None).unwrap();
    assert_eq!(m.to_file().encode(), plain.to_file().encode());
}

#[test]
fn bad_rows_and_settings_are_typed_errors() {
    // Settings.
    let bad = |cfg: OnlineConfig| match OnlineModel::new(cfg) {
        Err(OnlineError::Config { field, .. }) => field,
        _ => panic!("accepted"),
    };
    assert_eq!(bad(OnlineConfig::dense(Loss::Logistic, 0)), "features");
    assert_eq!(bad(OnlineConfig::sparse(Loss::Logistic, 40)), "bits");
    let mut c = OnlineConfig::dense(Loss::Logistic, 2);
    c.optim.lr = -1.0;
    assert_eq!(bad(c), "optim");
    assert_eq!(bad(OnlineConfig { batch: 0, ..OnlineConfig::dense(Loss::Logistic, 2) }), "batch");
    assert_eq!(bad(OnlineConfig::dense(Loss::Quantile { tau: 1.5 }, 2)), "loss");
    let mut s = OnlineConfig::sparse(Loss::Logistic, 10);
    let Features::Sparse(meta) = &mut s.features else { unreachable!() };
    meta.interactions = vec!["abcd".into()];
    assert_eq!(bad(s), "interactions");

    // Dense rows.
    let mut m = OnlineModel::new(OnlineConfig::dense(Loss::Logistic, 2)).unwrap();
    assert!(matches!(m.learn(&[1.0, 2.0], 2.0), Err(OnlineError::Learn(LearnError::BadRow { row: 0, .. }))));
    assert!(matches!(m.learn(&[1.0, f32::NAN], 1.0), Err(OnlineError::Learn(LearnError::BadRow { .. }))));
    assert!(matches!(m.learn(&[1.0], 1.0), Err(OnlineError::Rows(_))));
    assert!(matches!(m.learn_batch(&[1.0, 2.0], &[1.0], Some(&[1.0, 1.0])), Err(OnlineError::Targets { what: "weights", .. })));
    assert!(matches!(m.learn_columns(&[1.0, 2.0, 3.0], 2, &[1.0, 0.0], None), Err(OnlineError::Rows(_))));
    assert!(m.learn_named([("a", Named::Number(1.0))], 1.0).is_err());
    assert!(m.predict_named([("a", Named::Number(1.0))]).is_err());
    // Skipped when asked, and counted.
    let mut skip = OnlineModel::new(OnlineConfig { bad_rows: BadRows::Skip, ..OnlineConfig::dense(Loss::Logistic, 2) }).unwrap();
    skip.learn_batch(&[1.0, 2.0, 1.0, f32::NAN, 3.0, 1.0], &[1.0, 0.0, 7.0], None).unwrap();
    let s = skip.stats();
    assert_eq!((s.rows_learned, s.rows_rejected), (1, 2));

    // Sparse rows.
    let mut m = OnlineModel::new(OnlineConfig::sparse(Loss::Logistic, 12)).unwrap();
    assert!(m.learn(&[1.0], 1.0).is_err());
    assert!(m.predict(&[1.0]).is_err());
    let e = m.learn_named([("a", Named::Number(f32::NAN))], 1.0).unwrap_err();
    assert!(e.to_string().contains("feature a"), "{e}");
    assert!(m.learn_named([("a", Named::Number(f32::INFINITY))], 1.0).is_err());
    assert!(matches!(m.learn_named([("a", Named::Number(1.0))], 0.5), Err(OnlineError::Learn(LearnError::BadRow { .. }))));
    m.learn_named([("a", Named::Number(1.0))], 1.0).unwrap();
    assert_eq!(m.stats().rows_learned, 1);
    // A NaN dropped as the model's policy says.
    let mut s = OnlineConfig::sparse(Loss::Logistic, 12);
    let Features::Sparse(meta) = &mut s.features else { unreachable!() };
    meta.missing = Missing::Drop;
    let mut m = OnlineModel::new(s).unwrap();
    m.learn_named([("a", Named::Number(f32::NAN))], 1.0).unwrap();
    assert_eq!(m.stats().rows_dropped, 1);
    assert!(m.predict_named([("a", Named::Number(f32::NAN))]).unwrap().is_nan());

    // Files.
    assert!(matches!(OnlineModel::load(Path::new("/nonexistent/m.model")), Err(OnlineError::File(_))));
}
