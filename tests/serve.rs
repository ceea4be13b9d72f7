//! `streamsgd serve` over real HTTP on loopback: predictions equal `predict`'s, learning (from
//! `/learn` and a replayed file) changes them and the version, `/metrics` parses as Prometheus
//! text, bad requests are 4xx and leave the server up, SIGTERM under load saves a model that
//! loads.
#![cfg(feature = "serve")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn streamsgd(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_streamsgd")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into()
}

/// A running server, stopped (SIGTERM) when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamsgd"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("{line}")).to_string();
        Server { child, addr }
    }

    /// Sends `body` to `path` (POST, or GET when `None`); the status and the body.
    fn request(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(body);
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp);
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {text}"));
        let at = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut body = resp[at..].to_vec();
        if text.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        (status, body)
    }

    fn json(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, b) = self.request(method, path, "application/json", body.as_bytes());
        (status, serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null))
    }

    fn get(&self, path: &str) -> (u16, String) {
        let (status, b) = self.request("GET", path, "text/plain", b"");
        (status, String::from_utf8(b).unwrap())
    }

    /// SIGTERM, and the exit status and stdout's remainder.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut rest = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        (status, rest)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + n]);
        b = &b[end + 4 + n..];
    }
}

fn predictions(v: &serde_json::Value) -> Vec<f32> {
    v["predictions"].as_array().unwrap().iter().map(|p| p.as_f64().map_or(f32::NAN, |p| p as f32)).collect()
}

#[test]
fn dense_predictions_over_http_equal_predict_and_learning_moves_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    streamsgd(&["gen", "--task", "regression", "--rows", "2000", "--features", "3", "--missing-rate", "0.1", "-o", &p("r.csv")]);
    streamsgd(&["train", &p("r.csv"), "--loss", "squared", "--missing", "mean", "--scale", "standard", "--save", &p("r.model")]);
    let printed: Vec<f32> = streamsgd(&["predict", "--model", &p("r.model"), &p("r.csv")]).lines().map(|l| l.parse().unwrap()).collect();
    let rows: Vec<Vec<Option<f32>>> = std::fs::read_to_string(p("r.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(3).map(|c| c.parse().ok()).collect())
        .collect();
    let server = Server::start(&["--model", &p("r.model"), "--save", &p("saved.model")]);
    let body = serde_json::json!({ "rows": rows }).to_string();
    let (status, v) = server.json("POST", "/predict", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(predictions(&v), printed);
    assert_eq!(v["version"], 1);

    // The binary body: the same numbers.
    let x: Vec<u8> = rows.iter().take(50).flatten().flat_map(|c| c.unwrap_or(f32::NAN).to_le_bytes()).collect();
    let (status, out) = server.request("POST", "/predict", "application/octet-stream", &x);
    assert_eq!(status, 200);
    let got: Vec<f32> = out.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(got, printed[..50]);

    // Learning moves predictions and the version.
    let learn = serde_json::json!({ "rows": [[1.0, 2.0, 3.0], [0.5, null, 1.0]], "labels": [100.0, 50.0] }).to_string();
    let (status, v) = server.json("POST", "/learn", &learn);
    assert_eq!((status, v["learned"].as_u64()), (200, Some(2)), "{v}");
    assert_eq!(v["version"], 2);
    let (_, after) = server.json("POST", "/predict", &body);
    assert_eq!(after["version"], 2);
    assert_ne!(predictions(&after), printed);
    // A bad row is refused whole, and nothing is learned of it.
    let (status, v) = server.json("POST", "/learn", r#"{"rows": [[1, 2, 3]], "labels": []}"#);
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("0 labels for 1 rows"));

    // Metrics parse as Prometheus text and count what happened.
    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let value = |name: &str| {
        scrape.samples.iter().find(|s| s.metric == name).map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
    };
    assert_eq!(value("streamsgd_rows_learned_total"), Some(2.0));
    assert_eq!(value("streamsgd_predictions_total"), Some(4050.0));
    assert_eq!(value("streamsgd_model_version"), Some(2.0));
    assert_eq!(value("streamsgd_bad_requests_total"), Some(1.0));
    assert!(scrape.samples.iter().any(|s| s.metric == "streamsgd_predict_latency_seconds"), "{text}");

    // Health, model metadata, the status page.
    assert_eq!(server.get("/healthz"), (200, "ok\n".into()));
    let (_, model) = server.get("/model");
    let model: serde_json::Value = serde_json::from_str(&model).unwrap();
    assert_eq!((model["kind"].as_str(), model["features"].as_u64()), (Some("dense"), Some(3)));
    let (status, page) = server.get("/");
    assert!(status == 200 && page.contains("<canvas id=\"latency\">"));

    // SIGTERM: the learned model is saved, and loads.
    let (status, out) = server.stop();
    assert!(status.success(), "{status:?}");
    assert!(out.contains("learned 2 rows while serving"), "{out}");
    let saved = streamsgd::predictor::Predictor::load(Path::new(&p("saved.model"))).unwrap();
    let first: Vec<f32> = rows[0].iter().map(|c| c.unwrap_or(f32::NAN)).collect();
    assert_eq!(saved.predict(&first).unwrap(), predictions(&after)[0]);
}

#[test]
fn sparse_named_rows_and_a_replayed_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let mut csv = String::from("city,hour,y\n");
    for i in 0..3000 {
        let city = ["paris", "oslo", "rome", "lima"][i % 4];
        csv += &format!("{city},{},{}\n", i % 24, u8::from(city == "oslo"));
    }
    std::fs::write(p("t.csv"), &csv).unwrap();
    streamsgd(&["train", &p("t.csv"), "--categorical", "city", "--save", &p("t.model")]);
    let printed: Vec<f32> = streamsgd(&["predict", "--model", &p("t.model"), &p("t.csv")]).lines().map(|l| l.parse().unwrap()).collect();
    // A file to replay: the same rows as sparse .ssgd.
    streamsgd(&["convert", &p("t.csv"), "--categorical", "city", "-o", &p("t.ssgd")]);
    let server = Server::start(&["--model", &p("t.model")]);
    let rows: Vec<serde_json::Value> = csv
        .lines()
        .skip(1)
        .take(100)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            serde_json::json!({ "city": c[0], "hour": c[1].parse::<f64>().unwrap() })
        })
        .collect();
    let (status, v) = server.json("POST", "/predict", &serde_json::json!({ "rows": rows }).to_string());
    assert_eq!(status, 200, "{v}");
    assert_eq!(predictions(&v), printed[..100]);
    let (status, v) = server.json("POST", "/predict", r#"{"rows": [[1, 2]]}"#);
    assert_eq!(status, 422, "{v}");
    drop(server);

    // Learning from the replayed file publishes new versions.
    let server = Server::start(&["--model", &p("t.model"), "--learn", &p("t.ssgd"), "--learn-passes", "0", "--learn-rate", "20000"]);
    let mut version = 1;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        version = server.json("POST", "/predict", &serde_json::json!({ "rows": rows[..1] }).to_string()).1["version"].as_u64().unwrap();
        if version > 2 {
            break;
        }
    }
    assert!(version > 2, "the replay published no new snapshot");
    // Reloading the file goes back to its weights, under a new version.
    let (status, v) = server.json("POST", "/reload", "");
    assert_eq!(status, 200, "{v}");
    assert!(v["version"].as_u64().unwrap() > version);
}

#[test]
fn a_text_stream_is_learned_as_it_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    streamsgd(&["gen", "--rows", "5000", "--features", "3", "-o", &p("c.csv")]);
    streamsgd(&["train", &p("c.csv"), "--save", &p("c.model")]);
    let server = Server::start(&["--model", &p("c.model"), "--learn", &p("c.csv"), "--save", &p("out.model")]);
    let mut learned = 0.0;
    for _ in 0..100 {
        let (_, text) = server.get("/metrics");
        learned = text.lines().find_map(|l| l.strip_prefix("streamsgd_rows_learned_total ")).map_or(0.0, |v| v.trim().parse().unwrap());
        if learned >= 5000.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(learned, 5000.0);
    let (_, v) = server.json("POST", "/predict", r#"{"rows": [[0.1, 0.2, 0.3]]}"#);
    assert!(v["version"].as_u64().unwrap() > 1, "the stream's end publishes its last rows: {v}");
    let (status, out) = server.stop();
    assert!(status.success() && out.contains("learned 5000 rows while serving"), "{out}");
    // A stream of another width is refused at start.
    let mut wide = Command::new(env!("CARGO_BIN_EXE_streamsgd"));
    streamsgd(&["gen", "--rows", "10", "--features", "5", "-o", &p("w.csv")]);
    let out = wide.args(["serve", "--listen", "127.0.0.1:0", "--model", &p("c.model"), "--learn", &p("w.csv")]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("5 features, the model takes 3"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_requests_are_4xx_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    streamsgd(&["gen", "--rows", "1000", "--features", "2", "-o", &p("c.ssgd")]);
    streamsgd(&["train", &p("c.ssgd"), "--save", &p("c.model")]);
    let server = Server::start(&["--model", &p("c.model"), "--max-body", "4096", "--timeout", "1s"]);
    let cases: &[(&str, &[u8], u16)] = &[
        ("/predict", b"", 400),
        ("/predict", b"{", 400),
        ("/predict", b"[1, 2]", 422),
        ("/predict", b"{\"rows\": 3}", 422),
        ("/predict", b"{\"rows\": [[1]]}", 422),
        ("/predict", b"{\"rows\": [[1, \"a\"]]}", 422),
        ("/predict", b"{\"rows\": [[1, 1e300]]}", 422),
        ("/predict", b"{\"rows\": [{\"a\": 1}]}", 422),
        ("/predict", b"\xff\xfe\x00garbage", 400),
        ("/learn", b"{\"rows\": [[1, 2]]}", 422),
        ("/learn", b"{\"rows\": [[1, 2]], \"labels\": [7]}", 422),
        ("/learn", b"{\"rows\": [[1, 2]], \"labels\": [\"x\"]}", 422),
    ];
    for (path, body, want) in cases {
        let (status, b) = server.request("POST", path, "application/json", body);
        assert_eq!(status, *want, "{path} {}: {}", String::from_utf8_lossy(body), String::from_utf8_lossy(&b));
        if status != 413 {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        }
    }
    // A binary body that is not whole rows; an oversized body.
    assert_eq!(server.request("POST", "/predict", "application/octet-stream", &[0u8; 6]).0, 400);
    assert_eq!(server.request("POST", "/predict", "application/json", &vec![b' '; 10_000]).0, 413);
    // Random bytes, deterministic.
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for n in 0..200 {
        let body: Vec<u8> = (0..(n * 7) % 300)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let alphabet = b"{}[]\",:0123456789.e-nultrusfa rows labels";
                alphabet[(s % alphabet.len() as u64) as usize]
            })
            .collect();
        let (status, _) = server.request("POST", if n % 2 == 0 { "/predict" } else { "/learn" }, "application/json", &body);
        assert!((200..500).contains(&status), "{status} for {}", String::from_utf8_lossy(&body));
    }
    // A slow client: its body never comes; the server answers 408 and carries on.
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut resp = [0u8; 64];
    let n = slow.read(&mut resp).unwrap();
    assert!(String::from_utf8_lossy(&resp[..n]).contains(" 408 "), "{}", String::from_utf8_lossy(&resp[..n]));
    assert_eq!(server.get("/healthz"), (200, "ok\n".into()));
    let (status, v) = server.json("POST", "/predict", r#"{"rows": [[0.5, 0.5]]}"#);
    assert_eq!(status, 200, "{v}");
}

#[test]
fn sigterm_under_load_saves_a_model_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    streamsgd(&["gen", "--rows", "100000", "--features", "4", "-o", &p("c.ssgd")]);
    streamsgd(&["train", &p("c.ssgd"), "--save", &p("c.model")]);
    let server = Server::start(&["--model", &p("c.model"), "--save", &p("out.model"), "--learn", &p("c.ssgd"), "--learn-passes", "0"]);
    let addr = server.addr.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut ok = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(&addr) else { break };
                    let body = r#"{"rows": [[0.1, 0.2, 0.3, 0.4]]}"#;
                    let req =
                        format!("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    if s.write_all(req.as_bytes()).is_err() {
                        break;
                    }
                    let mut r = Vec::new();
                    if s.read_to_end(&mut r).is_ok() && r.starts_with(b"HTTP/1.1 200") {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let (status, out) = server.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(status.success(), "{status:?}");
    assert!(answered > 50, "{answered} predictions answered under load");
    assert!(out.contains("rows while serving"), "{out}");
    let m = streamsgd::online::OnlineModel::load(Path::new(&p("out.model"))).unwrap();
    assert_eq!(m.features(), Some(4));
}

#[test]
fn train_serves_its_metrics_and_status_page_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("c.csv");
    streamsgd(&["gen", "--rows", "20000", "--features", "3", "-o", csv.to_str().unwrap()]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamsgd"))
        .args(["train", "-", "--format", "csv", "--threads", "1", "--metrics-addr", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Half the rows (the header first: the run reads it before it starts), then a look while
    // the run waits for more.
    let mut stdin = child.stdin.take().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    stdin.write_all((lines[..10_001].join("\n") + "\n").as_bytes()).unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("metrics on http://") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no metrics address printed");
    }
    let addr = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_string();
    let server = Server { child: Command::new("true").spawn().unwrap(), addr };
    let mut learned = 0.0;
    for _ in 0..100 {
        let (_, m) = server.get("/metrics");
        learned = m.lines().find_map(|l| l.strip_prefix("streamsgd_rows_learned_total ")).map_or(0.0, |v| v.trim().parse().unwrap());
        if learned >= 8192.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(learned >= 8192.0, "{learned} rows counted mid-run");
    let (status, page) = server.get("/");
    assert!(status == 200 && page.contains("<canvas id=\"rate\">"));
    let (_, stats) = server.get("/stats");
    assert!(stats.contains("\"history\""), "{stats}");
    stdin.write_all((lines[10_001..].join("\n") + "\n").as_bytes()).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
