//! Kafka end to end, against a real Kafka-protocol broker (tansu, in-memory storage) that each
//! test starts on a free loopback port: `produce` then `train kafka://...` in native rows and in
//! CSV text; offsets committed only once learned (a second run of the group reads nothing, a
//! run that fails on a bad record replays it); errors that name the record; an unreachable
//! broker fails within the stated timeout.
//!
//! The broker is `tansu` (`cargo install tansu --features dynostore`, done by `.ci/run`), found
//! through `$STREAMSGD_TANSU`, the `PATH` or `~/.cargo/bin`. Without it these tests fail and say
//! so: they are never skipped.

#![cfg(feature = "kafka")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_streamsgd");

fn tansu() -> PathBuf {
    let candidates = std::env::var_os("STREAMSGD_TANSU")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).map(|d| d.join("tansu")))
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/tansu")));
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "no Kafka broker to test against: the `tansu` binary is not in $STREAMSGD_TANSU, the PATH or ~/.cargo/bin \
         (install it with `cargo install tansu --version 0.6.0 --locked --features dynostore`, as .ci/run does)"
    );
}

/// A tansu broker with in-memory storage on a free loopback port, killed on drop.
struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start() -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let child = Command::new(tansu())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        let t = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "tansu did not listen on {addr} within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, addr }
    }

    fn topic(&self, name: &str) -> String {
        format!("kafka://{}/{name}", self.addr)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs streamsgd, failing the test if it is still running after `limit`.
fn run(args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut c = Command::new(BIN).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let t = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = c.kill();
            let out = c.wait_with_output().unwrap();
            panic!("streamsgd {args:?} still ran after {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = c.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn ok(args: &[&str]) -> String {
    let (good, out, err) = run(args, Duration::from_secs(120));
    assert!(good, "streamsgd {args:?} failed: {err}");
    out
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The committed positions of the runs' reports (later runs win), summed over partitions.
fn committed_total(reports: &[&serde_json::Value]) -> i64 {
    let mut at = std::collections::BTreeMap::new();
    for r in reports {
        for (p, o) in r["source"]["committed"].as_object().into_iter().flatten() {
            at.insert(p.clone(), o.as_i64().unwrap());
        }
    }
    at.values().sum()
}

fn gen(dir: &Path, name: &str, rows: u64, seed: u64) -> String {
    let p = dir.join(name);
    ok(&["gen", "--rows", &rows.to_string(), "--features", "8", "--seed", &seed.to_string(), "-o", p.to_str().unwrap()]);
    p.to_str().unwrap().to_string()
}

#[test]
fn native_rows_train_commit_and_resume_where_the_group_stopped() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = gen(dir.path(), "a.ssgd", 30_000, 1);
    let topic = broker.topic("rows");
    let produced = json(&ok(&["produce", &data, &topic, "--partitions", "2", "--json"]));
    assert_eq!(produced["records"], 30_000);

    let model = dir.path().join("k.model");
    let learn = ["--encoding", "row", "--features", "8", "--group", "g1", "--until-end", "--threads", "2", "--json"];
    let mut args = vec!["train", &topic];
    args.extend(learn);
    args.extend(["--window-time", "1h", "--test", &data, "--save", model.to_str().unwrap()]);
    let r = json(&ok(&args));
    assert_eq!(r["rows"], 30_000, "{r}");
    assert_eq!(r["rows_learned"], 30_000);
    assert_eq!(committed_total(&[&r]), 30_000, "every record learned is committed: {r}");
    assert_eq!(r["source"]["committed"].as_object().unwrap().len(), 2, "both partitions were read: {r}");
    assert_eq!(r["source"]["records"], 30_000);
    assert!(r["windows"].as_u64().unwrap() >= 1, "record timestamps drive event-time windows: {r}");
    assert!(r["latency_ns"]["p50"].as_u64().unwrap() > 0);
    // The same data from the file, for the accuracy the stream must reach.
    let f = json(&ok(&["train", &data, "--threads", "2", "--json", "--test", &data]));
    let (acc_k, acc_f) = (r["test"]["accuracy"].as_f64().unwrap(), f["test"]["accuracy"].as_f64().unwrap());
    assert!(acc_k > acc_f - 0.02, "kafka-trained accuracy {acc_k} vs file-trained {acc_f}");

    // The group's offsets are committed: a second run has nothing to read.
    let mut again = vec!["train", &topic];
    again.extend(learn);
    let (good, out, err) = run(&again, Duration::from_secs(120));
    assert!(good, "{err}");
    assert_eq!(json(&out)["rows"], 0, "{out}");
    assert!(err.contains("nothing was learned") && err.contains("consumer group 'g1'"), "{err}");

    // New records: the group reads exactly those.
    let more = gen(dir.path(), "b.ssgd", 5_000, 2);
    ok(&["produce", &more, &topic]);
    let r3 = json(&ok(&again));
    assert_eq!(r3["rows"], 5_000, "{r3}");
    assert_eq!(committed_total(&[&r, &r3]), 35_000);
}

#[test]
fn a_consumer_per_shard_reads_every_partition_once_records_of_several_rows() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = gen(dir.path(), "a.ssgd", 30_000, 3);
    let topic = broker.topic("many");
    // 4285 records of 7 rows and one of 5, over 3 partitions.
    let produced = json(&ok(&["produce", &data, &topic, "--partitions", "3", "--rows-per-record", "7", "--json"]));
    assert_eq!(produced["records"], 4_286);
    let learn = ["--encoding", "row", "--features", "8", "--group", "g", "--until-end", "--threads", "3", "--json"];
    let mut args = vec!["train", &topic];
    args.extend(learn);
    args.extend(["--test", &data]);
    let r = json(&ok(&args));
    assert_eq!((r["rows"].as_u64(), r["rows_learned"].as_u64()), (Some(30_000), Some(30_000)), "{r}");
    assert_eq!(r["threads"], 3);
    assert_eq!(r["source"]["records"], 4_286, "{r}");
    assert_eq!(r["source"]["rows"], 30_000);
    assert_eq!(r["source"]["committed"].as_object().unwrap().len(), 3, "every partition read and committed: {r}");
    assert_eq!(committed_total(&[&r]), 4_286, "every record learned is committed: {r}");
    let f = json(&ok(&["train", &data, "--threads", "3", "--json", "--test", &data]));
    let (acc_k, acc_f) = (r["test"]["accuracy"].as_f64().unwrap(), f["test"]["accuracy"].as_f64().unwrap());
    assert!(acc_k > acc_f - 0.02, "kafka-trained accuracy {acc_k} vs file-trained {acc_f}");

    // Committed: the group has nothing more to read, with one member or with two.
    for threads in ["1", "2"] {
        let again =
            ["train", &topic, "--encoding", "row", "--features", "8", "--group", "g", "--until-end", "--threads", threads, "--json"];
        let (good, out, err) = run(&again, Duration::from_secs(120));
        assert!(good, "{err}");
        assert_eq!(json(&out)["rows"], 0, "{out}");
    }

    // Records that are not whole rows: an error naming the record.
    let wrong = ["train", &topic, "--encoding", "row", "--features", "6", "--group", "h", "--until-end", "--threads", "2"];
    let (good, _, err) = run(&wrong, Duration::from_secs(120));
    assert!(!good && err.contains("offset 0") && err.contains("is not whole rows: a row of 6 features takes 32"), "{err}");
}

#[test]
fn csv_records_with_a_bad_one_fail_naming_it_and_replay_it() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("x.csv");
    let mut text = String::from("a,b,label\n");
    for i in 0..5_000 {
        if i == 3_000 {
            text += "1.0,oops,1\n";
        } else {
            text += &format!("{},{},{}\n", (i % 7) as f32 * 0.5, (i % 3) as f32, i % 2);
        }
    }
    std::fs::write(&csv, text).unwrap();
    let topic = broker.topic("csv");
    // A record per produce batch: tansu 0.6 serves fetches only from the start of a stored
    // batch, and the replay below starts at a committed offset inside the topic.
    let (good, _, err) = run(&["produce", csv.to_str().unwrap(), &topic, "--partitions", "1", "--max-batch", "1"], Duration::from_secs(60));
    assert!(good && err.contains("--columns a,b,label"), "{err}");
    let base = ["--format", "csv", "--columns", "a,b,label", "--group", "g", "--until-end", "--batch", "1", "--json"];

    let mut failing = vec!["train", topic.as_str()];
    failing.extend(base);
    let (good, _, err) = run(&failing, Duration::from_secs(60));
    assert!(!good);
    assert!(err.contains("partition 0 offset 3000") && err.contains("field b") && err.contains("'oops' is not a number"), "{err}");

    // Nothing past the bad record was committed: the next run sees it again, skips and counts it.
    let mut skipping = failing.clone();
    skipping.push("--skip-bad");
    let r = json(&ok(&skipping));
    assert_eq!(r["rows_rejected"], 1, "the bad record is replayed, not lost: {r}");
    let replayed = r["rows"].as_u64().unwrap();
    assert!((2_000..=5_000).contains(&replayed), "{replayed} rows read again");
    assert_eq!(committed_total(&[&r]), 5_000);
    assert!(r["first_rejected"].as_str().unwrap().contains("offset 3000"), "{r}");
}

#[test]
fn bad_settings_and_an_unreachable_broker_fail_clearly() {
    let (good, _, err) = run(&["train", "kafka://127.0.0.1:9/t", "--format", "csv"], Duration::from_secs(30));
    assert!(!good && err.contains("--columns"), "{err}");
    let (good, _, err) = run(&["train", "kafka://127.0.0.1:9", "--format", "csv"], Duration::from_secs(30));
    assert!(!good && err.contains("kafka://BROKER"), "{err}");
    let (good, _, err) = run(&["train", "kafka://127.0.0.1:9/t", "--encoding", "row"], Duration::from_secs(30));
    assert!(!good && err.contains("--features"), "{err}");
    // Nothing listens there: the stated --broker-timeout, then a clear error (not a hang).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t = Instant::now();
    let topic = format!("kafka://127.0.0.1:{port}/t");
    let (good, _, err) = run(&["train", &topic, "--encoding", "row", "--features", "4", "--broker-timeout", "2s"], Duration::from_secs(30));
    assert!(!good && err.contains("brokers report"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
}

#[test]
fn sparse_vw_records_train_commit_and_name_a_bad_line() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let vw = dir.path().join("c.vw");
    ok(&["gen", "--task", "ctr", "--rows", "20000", "--seed", "4", "-o", vw.to_str().unwrap()]);
    let topic = broker.topic("vw");
    let produced = json(&ok(&["produce", vw.to_str().unwrap(), &topic, "--partitions", "2", "--json"]));
    assert_eq!(produced["records"], 20_000);
    let learn = ["--format", "vw", "--interactions", "cd", "--group", "s", "--until-end", "--json"];
    for threads in ["2", "1"] {
        let mut args = vec!["train", &topic, "--threads", threads];
        args.extend(learn);
        args.extend(["--test", vw.to_str().unwrap()]);
        if threads == "1" {
            // The group has read everything: nothing new, said, no model.
            let (good, out, err) = run(&args, Duration::from_secs(120));
            assert!(good && out.is_empty() && err.contains("nothing was learned") && err.contains("consumer group 's'"), "{out} {err}");
            continue;
        }
        let r = json(&ok(&args));
        assert_eq!(r["rows_learned"], 20_000, "{r}");
        assert_eq!(r["threads"], 2);
        assert_eq!(r["source"]["rows"], 20_000);
        assert_eq!(committed_total(&[&r]), 20_000, "every record learned is committed: {r}");
        let f =
            json(&ok(&["train", vw.to_str().unwrap(), "--interactions", "cd", "--threads", "2", "--json", "--test", vw.to_str().unwrap()]));
        let (k, f) = (r["test"]["loss"].as_f64().unwrap(), f["test"]["loss"].as_f64().unwrap());
        assert!(k < f + 0.01, "kafka-trained log loss {k} vs file-trained {f}");
    }
    // A bad line: the error names its partition, offset and line; the next run replays it.
    let bad = dir.path().join("bad.vw");
    std::fs::write(&bad, "1 |a x\n-1 |a y:oops\n1 |a z\n").unwrap();
    let topic = broker.topic("badvw");
    ok(&["produce", bad.to_str().unwrap(), &topic, "--partitions", "1", "--max-batch", "1"]);
    let args = ["train", &topic, "--format", "vw", "--group", "b", "--until-end", "--threads", "2"];
    let (good, _, err) = run(&args, Duration::from_secs(120));
    assert!(!good && err.contains("partition 0 offset 1") && err.contains("oops"), "{err}");
    let mut skipping = args.to_vec();
    skipping.extend(["--skip-bad", "--json"]);
    let r = json(&ok(&skipping));
    assert_eq!((r["rows_rejected"].as_u64(), r["rows_learned"].as_u64()), (Some(1), Some(2)), "{r}");
}

#[test]
fn native_sparse_rows_travel_whole_and_a_damaged_record_is_named() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ssgd = dir.path().join("c.ssgd");
    ok(&["gen", "--task", "ctr", "--rows", "20000", "--seed", "4", "-o", ssgd.to_str().unwrap()]);
    let topic = broker.topic("native");
    let produced = json(&ok(&["produce", ssgd.to_str().unwrap(), &topic, "--partitions", "2", "--rows-per-record", "16", "--json"]));
    assert_eq!(produced["records"], 1250);
    let (good, _, err) = run(&["produce", ssgd.to_str().unwrap(), &topic, "--encoding", "text", "--format", "vw"], Duration::from_secs(60));
    assert!(!good && err.contains("travel natively"), "{err}");
    // One shard reads the rows in a topic's order within partitions; the file's one shard in
    // file order: the same rows, so about the same model.
    let r = json(&ok(&[
        "train",
        &topic,
        "--encoding",
        "row",
        "--bits",
        "18",
        "--interactions",
        "cd",
        "--group",
        "n",
        "--until-end",
        "--threads",
        "2",
        "--json",
        "--test",
        ssgd.to_str().unwrap(),
    ]));
    assert_eq!((r["rows_learned"].as_u64(), r["source"]["rows"].as_u64()), (Some(20_000), Some(20_000)), "{r}");
    assert_eq!(committed_total(&[&r]), 1250, "{r}");
    let f = json(&ok(&["train", ssgd.to_str().unwrap(), "--interactions", "cd", "--json", "--test", ssgd.to_str().unwrap()]));
    let (k, f) = (r["test"]["loss"].as_f64().unwrap(), f["test"]["loss"].as_f64().unwrap());
    assert!((k - f).abs() < 0.01, "kafka-trained log loss {k} vs file-trained {f}");
    // A record cut short: named by partition, offset and row, not learned; --skip-bad does not
    // skip it (the rest of the record is lost with it).
    let mut rows = streamsgd::sparse::SparseRows::new();
    rows.push_feature(3, 1.0, b'a');
    rows.end_row(1.0, 1.0);
    let mut good_row = Vec::new();
    streamsgd::sparse::native::encode_row(&rows.as_ref(), 0, &mut good_row);
    let mut nan_label = good_row.clone();
    nan_label[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let bad_topic = broker.topic("native-bad");
    // (`produce` sends a file's rows; these raw records go through the library's writer.)
    let options = streamsgd::source::kafka::ProducerOptions {
        partitions: Some(1),
        rate: None,
        flush_timeout: Duration::from_secs(10),
        max_batch: 1,
        config: Vec::new(),
    };
    let mut w = streamsgd::source::kafka::KafkaWriter::open(&bad_topic, options).unwrap();
    for record in [[&good_row[..], &good_row[..]].concat(), [&nan_label[..], &good_row[..]].concat(), good_row[..7].to_vec()] {
        w.send(&record).unwrap();
    }
    w.finish().unwrap();
    let args = ["train", &bad_topic, "--encoding", "row", "--bits", "10", "--group", "b", "--until-end", "--threads", "1"];
    let (good, _, err) = run(&args, Duration::from_secs(120));
    assert!(!good && err.contains("partition 0 offset 1") && err.contains("label is missing"), "{err}");
    let mut skipping = args.to_vec();
    skipping.extend(["--skip-bad", "--json"]);
    let (good, _, err) = run(&skipping, Duration::from_secs(120));
    assert!(!good && err.contains("partition 0 offset 2") && err.contains("the record ends 7 bytes into a row"), "{err}");
}

#[test]
fn categorical_csv_records_are_hashed_as_the_file_is() {
    let broker = Broker::start();
    let adult = concat!(env!("CARGO_MANIFEST_DIR"), "/data/adult.csv");
    let topic = broker.topic("adult");
    let (good, _, err) = run(&["produce", adult, &topic, "--partitions", "2"], Duration::from_secs(60));
    assert!(good, "{err}");
    let columns = err.lines().find_map(|l| l.strip_prefix("consume with: --format csv --columns ")).expect("produce names the columns");
    let cat = "workclass,education,marital-status,occupation,relationship,race,gender,native-country";
    let (good, _, err) =
        run(&["train", &topic, "--format", "csv", "--categorical", cat, "--group", "x", "--until-end"], Duration::from_secs(60));
    assert!(!good && err.contains("pass it as --columns"), "{err}");
    let r = json(&ok(&[
        "train",
        &topic,
        "--format",
        "csv",
        "--columns",
        columns,
        "--categorical",
        cat,
        "--group",
        "a",
        "--until-end",
        "--threads",
        "2",
        "--json",
        "--test",
        adult,
    ]));
    assert_eq!(r["rows_learned"], 48_842, "{r}");
    let f = json(&ok(&["train", adult, "--categorical", cat, "--json", "--test", adult]));
    let (k, f) = (r["test"]["loss"].as_f64().unwrap(), f["test"]["loss"].as_f64().unwrap());
    assert!((k - f).abs() < 0.01, "kafka-trained log loss {k} vs file-trained {f}");
}

/// `serve --learn kafka://...`: the model served learns the topic's rows as they arrive (new
/// snapshot versions, rows counted in /metrics) and commits what it learned.
#[cfg(feature = "serve")]
#[test]
fn serve_learns_from_a_topic_while_it_answers() {
    use std::io::{BufRead, BufReader, Read, Write};
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = gen(dir.path(), "a.ssgd", 20_000, 3);
    let topic = broker.topic("serve");
    ok(&["produce", &data, &topic, "--partitions", "1"]);
    let model = dir.path().join("m.model");
    ok(&["train", &data, "--save", model.to_str().unwrap()]);
    let mut child = Command::new(BIN)
        .args(["serve", "--model", model.to_str().unwrap(), "--listen", "127.0.0.1:0", "--learn", &topic])
        .args(["--encoding", "row", "--features", "8", "--group", "served"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on http://").unwrap().to_string();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    let t = Instant::now();
    let learned = loop {
        let metrics = get("/metrics");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("streamsgd_rows_learned_total "))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64);
        if n >= 20_000 || t.elapsed() > Duration::from_secs(60) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(learned, 20_000, "rows learned from the topic");
    assert!(get("/model").contains("\"version\":"), "the model answers");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    // Its group committed every row learned: nothing is left to read.
    let (good, out, _) = run(
        &["train", &topic, "--encoding", "row", "--features", "8", "--group", "served", "--until-end", "--json"],
        Duration::from_secs(60),
    );
    assert!(good);
    assert_eq!(json(&out)["rows"], 0, "{out}");
}
