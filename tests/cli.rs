//! The `streamsgd` binary: exit codes and messages a user sees.

use std::process::Command;

fn streamsgd(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_streamsgd")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn gen_info_convert_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (ok, out, err) = streamsgd(&["gen", "--rows", "5000", "--features", "4", "-o", &p("a.ssgd")]);
    assert!(ok, "{err}");
    assert!(out.contains("5000 rows"), "{out}");
    let (ok, out, _) = streamsgd(&["info", &p("a.ssgd"), "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["rows"].as_u64(), v["features"].as_u64()), (Some(5000), Some(4)));
    // Same seed, same bytes.
    assert!(streamsgd(&["gen", "--rows", "5000", "--features", "4", "-o", &p("b.ssgd")]).0);
    assert_eq!(std::fs::read(p("a.ssgd")).unwrap(), std::fs::read(p("b.ssgd")).unwrap());
    // A truncated file is an error with a non-zero exit.
    let bytes = std::fs::read(p("a.ssgd")).unwrap();
    std::fs::write(p("t.ssgd"), &bytes[..bytes.len() - 4]).unwrap();
    let (ok, _, err) = streamsgd(&["info", &p("t.ssgd")]);
    assert!(!ok);
    assert!(err.contains("t.ssgd") && err.contains("truncated"), "{err}");
    // The bundled data converts.
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data/breast_cancer.csv");
    let (ok, out, err) = streamsgd(&["convert", data, "--label", "target", "-o", &p("bc.ssgd")]);
    assert!(ok, "{err}");
    assert!(out.contains("569 rows × 30 features"), "{out}");
    let (ok, _, err) = streamsgd(&["convert", data, "--label", "nope", "-o", &p("x.ssgd")]);
    assert!(!ok && err.contains("no column named 'nope'"), "{err}");
    // A duplicate window too large to allocate is a message, not an allocation abort.
    let (ok, _, err) = streamsgd(&["train", &p("a.ssgd"), "--dedup-window", "100000000000"]);
    assert!(!ok && err.contains("--dedup-window 100000000000") && err.contains("GB") && !err.contains("panicked"), "{err}");
}

#[test]
fn streams_that_cannot_be_read_twice_are_refused() {
    // A named pipe: finding LibSVM's D for dense rows or counting rows for --holdout would eat
    // the stream (it used to, then train on 0 rows and exit 0). Refused before the pipe is
    // opened. (LibSVM and VW without --features are sparse rows: no scan, a pipe is fine.)
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let f = fifo.to_str().unwrap();
    for (args, want) in [
        (vec!["train", f, "--format", "libsvm", "--holdout", "0.1"], "--holdout"),
        (vec!["train", f, "--format", "vw", "--holdout", "0.1"], "--holdout"),
        (vec!["train", f, "--format", "csv", "--holdout", "0.1"], "--holdout"),
    ] {
        let (ok, _, err) = streamsgd(&args);
        assert!(!ok && err.contains(want) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn nothing_learned_is_an_error_and_saves_nothing() {
    // A header-only CSV, a zero-row .ssgd, and rows that are all rejected: each used to exit 0
    // with loss NaN (and --save wrote an untrained model).
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    std::fs::write(p("h.csv"), "a,b,label\n").unwrap();
    std::fs::write(p("bad.csv"), "a,b,label\n1,2,5\n3,4,7\n").unwrap();
    assert!(streamsgd(&["gen", "--rows", "0", "--features", "3", "-o", &p("z.ssgd")]).0);
    for (args, want) in [
        (vec!["train", &p("h.csv")], "has no rows to learn"),
        (vec!["train", &p("z.ssgd")], "has no rows to learn"),
        (vec!["train", &p("bad.csv"), "--skip-bad"], "all 2 rows of"),
    ] {
        let mut args = args.clone();
        let model = p("m.model");
        args.extend(["--save", &model]);
        let (ok, _, err) = streamsgd(&args);
        assert!(!ok && err.contains("nothing was learned") && err.contains(want), "{args:?}: {err}");
        assert!(!std::path::Path::new(&model).exists(), "{args:?} saved a model");
    }
    // Rejected rows are numbered from 1, as lines are.
    let (_, _, err) = streamsgd(&["train", &p("bad.csv"), "--skip-bad"]);
    assert!(err.contains("the first rejected: row 1: label 5 is out of range"), "{err}");
}

#[test]
fn models_keep_their_schema_and_data_is_mapped_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let mut train = String::from("a,b,c,label\n");
    for i in 0..400 {
        train += &format!("{},{},{},{}\n", i % 7, (i * 3) % 5, i % 2, u8::from(i % 7 > 3));
    }
    std::fs::write(p("t.csv"), &train).unwrap();
    // Columns swapped, with or without the label; a column missing; another column count.
    std::fs::write(p("swapped.csv"), "c,label,a,b\n1,0,6,2\n0,1,2,4\n").unwrap();
    std::fs::write(p("nolabel.csv"), "b,c,a\n2,1,6\n4,0,2\n").unwrap();
    std::fs::write(p("same.csv"), "a,b,c,label\n6,2,1,0\n2,4,0,1\n").unwrap();
    std::fs::write(p("short.csv"), "a,b,label\n6,2,0\n").unwrap();
    let (ok, _, err) = streamsgd(&["train", &p("t.csv"), "--save", &p("m.model")]);
    assert!(ok, "{err}");
    let predict = |f: &str| streamsgd(&["predict", "--model", &p("m.model"), &p(f)]);
    let (ok, want, err) = predict("same.csv");
    assert!(ok, "{err}");
    for f in ["swapped.csv", "nolabel.csv"] {
        let (ok, got, err) = predict(f);
        assert!(ok && got == want, "{f}: {got} vs {want}: {err}");
    }
    let (ok, _, err) = predict("short.csv");
    assert!(!ok && err.contains("missing 'c'") && !err.contains("panicked"), "{err}");
    // --test is checked before training (it used to panic in the kernel after it), and
    // --resume on other columns is refused.
    let (ok, out, err) = streamsgd(&["train", &p("t.csv"), "--test", &p("short.csv")]);
    assert!(!ok && err.contains("short.csv") && err.contains("missing 'c'") && !out.contains("trained"), "{err}");
    let (ok, _, err) = streamsgd(&["train", &p("short.csv"), "--resume", &p("m.model")]);
    assert!(!ok && err.contains("missing 'c'"), "{err}");
    // A .ssgd test set of another width: an error, not a panic.
    assert!(streamsgd(&["gen", "--rows", "100", "--features", "5", "-o", &p("w.ssgd")]).0);
    let (ok, _, err) = streamsgd(&["train", &p("t.csv"), "--test", &p("w.ssgd")]);
    assert!(!ok && err.contains("the model has 3 input features, the data 5") && !err.contains("panicked"), "{err}");
}

#[test]
fn more_shards_than_cores_warn_and_do_not_spin() {
    // 300 shards on the machine's cores: a warning, and the run ends in seconds (parked waits
    // woke every millisecond, and merge waiters spun: 1000 shards took 24 s for 10^5 rows).
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("o.ssgd").to_str().unwrap().to_string();
    assert!(streamsgd(&["gen", "--rows", "100000", "--features", "8", "-o", &p]).0);
    let t = std::time::Instant::now();
    let (ok, out, err) = streamsgd(&["train", &p, "--threads", "300", "--merge-every", "1"]);
    assert!(ok && out.contains("300 thread(s)"), "{err}");
    assert!(err.contains("--threads 300 is more than the"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(15), "{:?}", t.elapsed());
}

#[test]
fn inputs_too_big_for_memory_are_errors_not_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    // A stream without line breaks: stopped at 64 MiB (it grew without bound).
    let (ok, _, err) = streamsgd(&["train", "/dev/zero", "--format", "csv"]);
    assert!(!ok && err.contains("longer than 64 MiB"), "{err}");
    // Read as dense rows (--features D): a LibSVM index past 2^24, and a D whose dense rows
    // would not fit: errors that say so (they aborted the process on 32–65 GB allocations).
    // Without --features such files are sparse rows (tests/sparse.rs).
    std::fs::write(p("huge.libsvm"), "1 4000000000:1\n0 3:1\n").unwrap();
    let (ok, _, err) = streamsgd(&["train", &p("huge.libsvm"), "--features", "10"]);
    assert!(!ok && err.contains("huge.libsvm:1") && err.contains("index 4000000000 exceeds"), "{err}");
    std::fs::write(p("wide.libsvm"), "1 16000000:1\n0 3:1\n").unwrap();
    for cmd in [
        vec!["train", &p("wide.libsvm"), "--features", "16000000"],
        vec!["convert", &p("wide.libsvm"), "-o", &p("w.ssgd"), "--features", "16000000"],
    ] {
        let (ok, _, err) = streamsgd(&cmd);
        assert!(!ok && err.contains("16000000 features") && err.contains("GB, more than half"), "{cmd:?}: {err}");
    }
}

#[test]
fn passes_over_text_replay_a_cache_rebuilt_when_the_text_changes() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    for f in ["a.csv", "a.ssgd"] {
        assert!(streamsgd(&["gen", "--rows", "20000", "--features", "4", "--seed", "5", "-o", &p(f)]).0);
    }
    let train = |data: &str, extra: &[&str]| {
        let mut args = vec!["train", data, "--passes", "3", "--holdout", "0.2", "--threads", "1", "--json"];
        args.extend_from_slice(extra);
        let (ok, out, err) = streamsgd(&args);
        assert!(ok, "{err}");
        (serde_json::from_str::<serde_json::Value>(&out).unwrap(), err)
    };
    // The passes over the text learn what the passes over its converted file learn.
    let (mapped, _) = train(&p("a.ssgd"), &[]);
    let (text, err) = train(&p("a.csv"), &["--cache", &p("c.ssgd")]);
    assert!(err.contains("parsed") && err.contains("c.ssgd"), "{err}");
    assert_eq!(text["rows"], 48_000);
    assert_eq!(text["holdout"]["loss"], mapped["holdout"]["loss"]);
    let (again, err) = train(&p("a.csv"), &["--cache", &p("c.ssgd")]);
    assert!(err.contains("replaying the cache"), "{err}");
    assert_eq!(again["holdout"]["loss"], text["holdout"]["loss"]);
    // Other options, or another text, rebuild it.
    let (_, err) = train(&p("a.csv"), &["--cache", &p("c.ssgd"), "--skip-bad"]);
    assert!(err.contains("parsed"), "{err}");
    assert!(streamsgd(&["gen", "--rows", "10000", "--features", "4", "--seed", "6", "-o", &p("a.csv")]).0);
    let (changed, err) = train(&p("a.csv"), &["--cache", &p("c.ssgd")]);
    assert!(err.contains("parsed"), "{err}");
    assert_eq!(changed["rows"], 24_000);
    // Without --cache the cache is temporary: nothing is left beside the text.
    train(&p("a.csv"), &[]);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(left.iter().all(|n| !n.contains("streamsgd-cache")), "{left:?}");
}
