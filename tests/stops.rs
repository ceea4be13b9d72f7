//! Stops a user makes: Ctrl-C and SIGTERM end a run gracefully (what was learned is saved and
//! reported, the exit code says which signal); a closed pipe ends output quietly; an input that
//! fails mid-run still leaves the model of the rows before it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use streamsgd::model::ModelFile;

const BIN: &str = env!("CARGO_BIN_EXE_streamsgd");

fn gen(dir: &Path, name: &str, rows: u64) -> String {
    let p = dir.join(name).to_str().unwrap().to_string();
    let out = Command::new(BIN).args(["gen", "--rows", &rows.to_string(), "--features", "8", "-o", &p]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    p
}

/// Starts `train` paced slowly enough to be stopped, sends `signal` once it has learned for a
/// while, and returns (exit code, stdout, stderr).
fn stopped_run(args: &[&str], signal: i32) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: kill(2) on the pid of a child this test spawned and has not waited for yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit 30 s after the signal");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), out, err)
}

#[test]
fn sigint_and_sigterm_save_report_and_exit_130_143() {
    let dir = tempfile::tempdir().unwrap();
    let data = gen(dir.path(), "d.ssgd", 1_000_000);
    let csv = gen(dir.path(), "d.csv", 200_000);
    for (signal, code, input) in [(libc::SIGINT, 130, &data), (libc::SIGTERM, 143, &data), (libc::SIGINT, 130, &csv)] {
        let model = dir.path().join(format!("m{signal}.model"));
        let ck = dir.path().join(format!("ck{signal}.model"));
        let args = ["train", input, "--rate", "200000", "--save", model.to_str().unwrap(), "--checkpoint", ck.to_str().unwrap()];
        let (status, out, err) = stopped_run(&args, signal);
        assert_eq!(status, Some(code), "{input}: {err}");
        assert!(out.contains("stopped early"), "{out}");
        assert!(err.contains(&format!("stopped by signal {signal}")) && !err.contains("panicked"), "{err}");
        // The report's rows were learned, fewer than the input has, and the model loads.
        let rows: u64 = out.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(rows > 0 && rows < 1_000_000, "{out}");
        for saved in [&model, &ck] {
            let m = ModelFile::load(saved).unwrap();
            assert!(m.model.weights.iter().all(|w| w.is_finite()) && m.model.weights.iter().any(|&w| w != 0.0));
        }
    }
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = gen(dir.path(), "p.ssgd", 200_000);
    let model = dir.path().join("p.model");
    let ok = Command::new(BIN).args(["train", &data, "--save", model.to_str().unwrap()]).output().unwrap();
    assert!(ok.status.success());
    let mut child = Command::new(BIN)
        .args(["predict", "--model", model.to_str().unwrap(), &data])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe: the process ends on SIGPIPE without a word.
    let mut first = [0u8; 16];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert_ne!(status.code(), Some(101), "{err}");
}

/// Serves 5000 good CSV lines, then half a line, then closes; returns the address.
fn cut_stream() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut text = String::from("x0,x1,label\n");
        for i in 0..5000 {
            text += &format!("{},{},{}\n", i % 7, i % 3, i % 2);
        }
        text += "1.5,2";
        s.write_all(text.as_bytes()).unwrap();
    });
    (addr, sender)
}

#[test]
fn a_stream_cut_mid_line_keeps_what_was_learned() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("s.model");
    // Without --skip-bad: an error, after the 5000 rows before it are learned and saved.
    let (addr, sender) = cut_stream();
    let out =
        Command::new(BIN).args(["train", &format!("tcp://{addr}"), "--format", "csv", "--save", model.to_str().unwrap()]).output().unwrap();
    sender.join().unwrap();
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{err}");
    assert!(err.contains("the input failed") && err.contains("saved in") && err.contains("middle of a record"), "{err}");
    assert!(stdout.contains("trained on 5000 rows (5000 learned"), "{stdout}");
    assert!(ModelFile::load(&model).is_ok());
    // With --skip-bad: the half line is counted as rejected and the run ends well.
    let (addr, sender) = cut_stream();
    let out = Command::new(BIN).args(["train", &format!("tcp://{addr}"), "--format", "csv", "--skip-bad"]).output().unwrap();
    sender.join().unwrap();
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{err}");
    assert!(stdout.contains("trained on 5001 rows (5000 learned, 1 rejected)"), "{stdout}");
}

#[test]
fn a_stalled_sender_ends_at_the_idle_timeout_or_a_signal() {
    // A socket that sends 3000 lines and then nothing, without closing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let sender = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut text = String::from("x0,x1,label\n");
        for i in 0..3000 {
            text += &format!("{},{},{}\n", i % 7, i % 3, i % 2);
        }
        s.write_all(text.as_bytes()).unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(60));
    });
    let t = Instant::now();
    let out = Command::new(BIN).args(["train", &format!("tcp://{addr}"), "--format", "csv", "--idle-timeout", "1s"]).output().unwrap();
    let _ = done_tx.send(());
    sender.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("trained on 3000 rows"), "{stdout}");
    assert!(t.elapsed() < Duration::from_secs(20));
    // stdin that stalls (a pipe whose writer keeps it open): Ctrl-C ends the run gracefully.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("in.model");
    let mut child = Command::new(BIN)
        .args(["train", "-", "--format", "csv", "--save", model.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"x0,x1,label\n").unwrap();
    for i in 0..2000 {
        writeln!(input, "{},{},{}", i % 5, i % 3, i % 2).unwrap();
    }
    input.flush().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: kill(2) on the pid of a child this test spawned and has not waited for yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    drop(input);
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(out.contains("trained on 2000 rows"), "{out}");
    assert!(ModelFile::load(&model).is_ok());
}

#[test]
fn a_stopped_gen_or_convert_leaves_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let csv = gen(dir.path(), "in.csv", 2_000_000);
    for args in [
        vec!["gen".to_string(), "--rows".into(), "400000000".into(), "-o".into(), dir.path().join("big.ssgd").to_str().unwrap().into()],
        vec!["gen".to_string(), "--rows".into(), "400000000".into(), "-o".into(), dir.path().join("big.csv").to_str().unwrap().into()],
        vec!["convert".to_string(), csv.clone(), "-o".into(), dir.path().join("c.ssgd").to_str().unwrap().into()],
    ] {
        let mut child = Command::new(BIN).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on the pid of a child this test spawned and has not waited for yet.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        let status = child.wait().unwrap();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        if status.success() {
            continue; // finished before the signal (a fast convert): nothing to clean
        }
        assert_eq!(status.code(), Some(130), "{args:?}: {err}");
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "in.csv")
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}
