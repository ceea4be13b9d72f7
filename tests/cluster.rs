//! Training across processes on timely dataflow, on loopback: three processes give the model of
//! one process with three workers, and the pipeline's with three shards; a peer that dies or
//! never starts makes the others fail with a clear error within stated timeouts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use streamsgd::model::ModelFile;

const BIN: &str = env!("CARGO_BIN_EXE_streamsgd");

fn gen(dir: &Path, rows: u64) -> PathBuf {
    let p = dir.join(format!("c{rows}.ssgd"));
    let out = Command::new(BIN).args(["gen", "--rows", &rows.to_string(), "--output", p.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    p
}

/// A hostfile of `n` free loopback ports (bound, then released for timely).
fn hostfile(dir: &Path, n: usize) -> PathBuf {
    let socks: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let text: String = socks.iter().map(|s| format!("{}\n", s.local_addr().unwrap())).collect();
    let p = dir.join("hosts.txt");
    std::fs::write(&p, text).unwrap();
    p
}

fn process(data: &Path, extra: &[&str], n: usize, p: usize, hosts: &Path) -> Child {
    Command::new(BIN)
        .arg("cluster-train")
        .arg(data)
        .args(extra)
        .args(["--", "-n", &n.to_string(), "-p", &p.to_string(), "-h", hosts.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child at most `limit`; kills it and fails the test after that.
fn finish(mut c: Child, limit: Duration) -> (bool, String, String) {
    let t = Instant::now();
    loop {
        if c.try_wait().unwrap().is_some() {
            let out = c.wait_with_output().unwrap();
            return (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into());
        }
        if t.elapsed() > limit {
            let _ = c.kill();
            panic!("a cluster process still runs after {limit:?}: hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn weights(p: &Path) -> Vec<f32> {
    ModelFile::load(p).unwrap().model.weights
}

#[test]
fn three_processes_train_the_model_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = gen(dir.path(), 100_000);
    let hosts = hostfile(dir.path(), 3);
    let m3 = dir.path().join("m3.model");
    let procs: Vec<Child> = (0..3)
        .map(|p| {
            let save = ["--save", m3.to_str().unwrap()];
            let mut extra = vec!["--holdout", "0.1", "--merge-every", "4", "--json"];
            if p == 0 {
                extra.extend(save);
            }
            process(&data, &extra, 3, p, &hosts)
        })
        .collect();
    let outs: Vec<_> = procs.into_iter().map(|c| finish(c, Duration::from_secs(120))).collect();
    for (ok, _, err) in &outs {
        assert!(ok, "{err}");
    }
    let report: serde_json::Value = serde_json::from_str(outs[0].1.lines().last().unwrap()).unwrap();
    assert_eq!((report["workers"].as_u64(), report["rows"].as_u64()), (Some(3), Some(90_000)));
    assert!(!outs[1].1.contains("rows") && !outs[2].1.contains("rows"), "only worker 0 reports");
    // One process with three workers: the same merges in the same order, the same model.
    let m1 = dir.path().join("m1.model");
    let out = Command::new(BIN)
        .arg("cluster-train")
        .arg(&data)
        .args(["--holdout", "0.1", "--merge-every", "4", "--save", m1.to_str().unwrap(), "--", "-w", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(weights(&m3), weights(&m1));
    // The single-process pipeline with three shards and sync merges every 4 batches, on raw
    // features as cluster-train has no feature stage.
    let mp = dir.path().join("mp.model");
    let out = Command::new(BIN)
        .arg("train")
        .arg(&data)
        .args(["--holdout", "0.1", "--merge-every", "4", "--threads", "3", "--scale", "none", "--save", mp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (a, b) in weights(&m3).iter().zip(weights(&mp)) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    assert!(report["holdout"]["accuracy"].as_f64().unwrap() > 0.75, "{report}");
}

#[test]
fn a_peer_that_dies_or_never_starts_fails_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = gen(dir.path(), 3_000_000);
    // Never started: processes 0 and 1 of 3 give up after --peer-timeout 3s.
    let hosts = hostfile(dir.path(), 3);
    let waiting: Vec<Child> = (0..2).map(|p| process(&data, &["--peer-timeout", "3s"], 3, p, &hosts)).collect();
    for c in waiting {
        let (ok, _, err) = finish(c, Duration::from_secs(30));
        assert!(!ok && err.contains("no merge completed for 3.0 s"), "{err}");
    }
    // Dies mid-run: process 2 is killed half a second in (a run merging every batch takes
    // seconds); the others stop at once on the broken connection, or at the timeout.
    let hosts = hostfile(dir.path(), 3);
    let extra = ["--merge-every", "1", "--peer-timeout", "5s"];
    let survivors: Vec<Child> = (0..2).map(|p| process(&data, &extra, 3, p, &hosts)).collect();
    let mut victim = process(&data, &extra, 3, 2, &hosts);
    std::thread::sleep(Duration::from_millis(500));
    victim.kill().unwrap();
    let _ = victim.wait();
    for c in survivors {
        let (ok, _, err) = finish(c, Duration::from_secs(30));
        assert!(!ok && (err.contains("lost the connection to a peer") || err.contains("no merge completed")), "{err}");
    }
}

#[test]
fn sparse_workers_share_only_what_changed_and_learn_the_model_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ctr.ssgd");
    let out =
        Command::new(BIN).args(["gen", "--task", "ctr", "--rows", "60000", "--seed", "5", "-o", data.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let flags = ["--holdout", "0.1", "--interactions", "cd", "--bits", "16", "--merge-every", "4", "--json"];
    let run = |workers: &str, save: &Path| -> serde_json::Value {
        let out = Command::new(BIN)
            .arg("cluster-train")
            .arg(&data)
            .args(flags)
            .args(["--save", save.to_str().unwrap(), "--", "-w", workers])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap()
    };
    // One worker is the single-process learner: the same holdout as `train --threads 1`.
    let one = run("1", &dir.path().join("one.model"));
    let out = Command::new(BIN).arg("train").arg(&data).args(flags).args(["--threads", "1"]).output().unwrap();
    let train: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(one["holdout"]["loss"], train["holdout"]["loss"]);
    // Two processes of one worker and one process of two merge the same shares in the same
    // order: the same model, bit for bit.
    let two = run("2", &dir.path().join("two.model"));
    let hosts = hostfile(dir.path(), 2);
    let m2 = dir.path().join("m2.model");
    let procs: Vec<Child> = (0..2)
        .map(|p| {
            let mut extra = flags.to_vec();
            if p == 0 {
                extra.extend(["--save", m2.to_str().unwrap()]);
            }
            process(&data, &extra, 2, p, &hosts)
        })
        .collect();
    let outs: Vec<_> = procs.into_iter().map(|c| finish(c, Duration::from_secs(120))).collect();
    for (ok, _, err) in &outs {
        assert!(ok, "{err}");
    }
    assert_eq!(weights(&m2), weights(&dir.path().join("two.model")));
    // As good as one learner, and each merge sent the slots that changed, not the table.
    let loss = |r: &serde_json::Value| r["holdout"]["loss"].as_f64().unwrap();
    assert!(loss(&two) < loss(&one) + 0.005, "{} vs {}", loss(&two), loss(&one));
    let (sent, table) = (two["merge_bytes_per_worker"].as_u64().unwrap(), two["table_bytes_per_worker"].as_u64().unwrap());
    assert!(sent > 0 && sent < table / 2, "{sent} of {table}");
    // The merged model predicts as its holdout was scored.
    let out = Command::new(BIN).args(["predict", "--model", m2.to_str().unwrap(), data.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 60_000);
}
