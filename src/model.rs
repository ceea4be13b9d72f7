//! The linear model, its versioned binary file, and the lock-free snapshot served to
//! predictor threads while training continues.
//!
//! Model file (little-endian): magic `SSGDMODL`, version u32, loss code u32, loss parameter f32,
//! d u32, optimizer kind u32, schedule u32, η f32, λ₁ f32, λ₂ f32, power f32, β f32, t f64,
//! the labels' statistics (weight f64, mean f64, M2 f64; version 2 on), then the arrays weights (d+1, bias last), Σg² (0 or d+1), z (0 or d+1), scale (0 or d),
//! each preceded by its u32 length, then a free-form JSON section (u32 length + bytes: the
//! feature pipeline of later stages), and a CRC-32 of everything before it. Written to a
//! temporary file, fsynced, renamed over the target, and the directory fsynced: a crash leaves
//! either the old file or the new one. No `unsafe` here.

use crate::kernel;
use crate::loss::Loss;
use crate::optim::{Kind, LabelStats, OptimConfig, Optimizer, Schedule};
use arc_swap::ArcSwap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"SSGDMODL";
/// Model file version this build writes (it reads 1 too: no label statistics).
pub const MODEL_VERSION: u32 = 2;

/// Errors reading or writing model files.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The OS refused.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not a model file, or a damaged one.
    #[error("{path}: not a valid streamsgd model: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: DecodeError,
    },
}

/// Why a model file's bytes are not a model ([`ModelFile::decode`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The first bytes are not a model file's.
    #[error("wrong magic (not a streamsgd model file)")]
    Magic,
    /// The contents do not match their checksum.
    #[error("checksum {got:#010x} does not match the contents ({want:#010x}): the file is damaged")]
    Checksum {
        /// The checksum stored.
        got: u32,
        /// The contents' checksum.
        want: u32,
    },
    /// A format version this build does not read.
    #[error("model format version {0}, this build reads 1 to {MODEL_VERSION}")]
    Version(u32),
    /// A field cut short or of the wrong length.
    #[error("{0}")]
    Truncated(String),
    /// A field whose value is out of range (the field and the value).
    #[error("{0}")]
    Field(String),
}

/// A linear model: `p = w·x + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearModel {
    /// The loss it was trained for (decides how predictions are reported).
    pub loss: Loss,
    /// Weights then bias (length d + 1).
    pub weights: Vec<f32>,
}

impl LinearModel {
    /// An all-zero model of `d` features.
    pub fn zeros(loss: Loss, d: usize) -> Self {
        LinearModel { loss, weights: vec![0.0; d + 1] }
    }

    /// Number of features.
    pub fn features(&self) -> usize {
        self.weights.len() - 1
    }

    /// The bias.
    pub fn bias(&self) -> f32 {
        self.weights[self.features()]
    }

    /// The margin `w·x + b` of one row (`x.len() == features()`).
    #[inline]
    pub fn predict_row(&self, x: &[f32]) -> f32 {
        let d = self.features();
        kernel::dot(&self.weights[..d], x) + self.weights[d]
    }

    /// Margins of rows `cols.r0..` of a column-major block into `out`.
    pub fn predict_block(&self, cols: &kernel::Columns<'_>, out: &mut [f32]) {
        let d = self.features();
        kernel::predict_block(cols, &self.weights[..d], self.weights[d], out)
    }
}

/// The inputs a model was trained on, as its data named them: what `predict`, `--test` and
/// `--resume` check new data against (and map CSV columns by). Saved in the model file's extra
/// JSON under `"schema"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schema {
    /// Input features (before the feature stage).
    pub features: usize,
    /// Their names in the model's order (CSV header, VW names); `None` where the data has
    /// positions only (.ssgd, LibSVM, hashed VW).
    pub names: Option<Vec<String>>,
    /// The CSV label column's name.
    pub label: Option<String>,
}

impl Schema {
    /// Checks data of `features` inputs named `names` (when it has names) against the model's:
    /// the same count, and the same names in the same order (callers map a CSV's columns by
    /// name first). The message says what differs.
    pub fn check(&self, features: usize, names: Option<&[String]>) -> Result<(), String> {
        if let (Some(mine), Some(theirs)) = (&self.names, names) {
            if mine.as_slice() != theirs {
                let missing: Vec<&str> = mine.iter().filter(|n| !theirs.contains(n)).map(|n| n.as_str()).take(5).collect();
                let extra: Vec<&str> = theirs.iter().filter(|n| !mine.contains(n)).map(|n| n.as_str()).take(5).collect();
                return Err(if missing.is_empty() && extra.is_empty() {
                    "the data has the model's features in another order".into()
                } else {
                    let quote = |v: &[&str]| {
                        if v.is_empty() {
                            "none".to_string()
                        } else {
                            v.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
                        }
                    };
                    format!("the data's features differ from the model's: missing {}; not in the model {}", quote(&missing), quote(&extra))
                });
            }
        }
        if features != self.features {
            return Err(format!("the model has {} input features, the data {features}", self.features));
        }
        Ok(())
    }
}

/// Everything needed to resume training: the model, the optimizer state and free-form JSON
/// (the feature pipeline that later stages save beside the model).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    /// The model.
    pub model: LinearModel,
    /// Optimizer state.
    pub optimizer: Optimizer,
    /// Extra JSON ("{}" when none).
    pub extra: String,
}

fn put_u32(b: &mut Vec<u8>, x: u32) {
    b.extend_from_slice(&x.to_le_bytes());
}

fn put_f32(b: &mut Vec<u8>, x: f32) {
    b.extend_from_slice(&x.to_le_bytes());
}

fn put_arr(b: &mut Vec<u8>, a: &[f32]) {
    put_u32(b, a.len() as u32);
    b.extend_from_slice(bytemuck::cast_slice(a));
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| DecodeError::Truncated(format!("truncated at byte {}", self.at)))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn f32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn arr(&mut self, allowed: &[usize], what: &str) -> Result<Vec<f32>, DecodeError> {
        let n = self.u32()? as usize;
        if !allowed.contains(&n) {
            return Err(DecodeError::Truncated(format!("{what} has {n} entries, expected one of {allowed:?}")));
        }
        Ok(self.take(n * 4)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
    }
}

fn kind_code(k: Kind) -> u32 {
    match k {
        Kind::Sgd => 0,
        Kind::Adagrad => 1,
        Kind::Ftrl => 2,
        Kind::Normalized => 3,
    }
}

fn schedule_code(s: Schedule) -> u32 {
    match s {
        Schedule::Constant => 0,
        Schedule::InvScaling => 1,
        Schedule::Optimal => 2,
    }
}

impl ModelFile {
    /// The schema saved in the extra JSON, if any (models saved before schemas have none).
    pub fn schema(&self) -> Result<Option<Schema>, String> {
        let v: serde_json::Value = serde_json::from_str(&self.extra).map_err(|e| format!("extra section is not JSON: {e}"))?;
        v.get("schema").map(|s| serde_json::from_value(s.clone()).map_err(|e| format!("bad schema: {e}"))).transpose()
    }

    /// Saves `schema` in the extra JSON (replacing one there).
    pub fn set_schema(&mut self, schema: &Schema) {
        let mut v: serde_json::Value = serde_json::from_str(&self.extra).unwrap_or_else(|_| serde_json::json!({}));
        if !v.is_object() {
            v = serde_json::json!({});
        }
        v["schema"] = serde_json::to_value(schema).unwrap_or_default();
        self.extra = v.to_string();
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + 16 * self.model.weights.len() + self.extra.len());
        b.extend_from_slice(MAGIC);
        put_u32(&mut b, MODEL_VERSION);
        put_u32(&mut b, self.model.loss.code());
        put_f32(&mut b, self.model.loss.param());
        put_u32(&mut b, self.model.features() as u32);
        let c = &self.optimizer.cfg;
        put_u32(&mut b, kind_code(c.kind));
        put_u32(&mut b, schedule_code(c.schedule));
        for x in [c.lr, c.l1, c.l2, c.power, c.beta] {
            put_f32(&mut b, x);
        }
        let l = &self.optimizer.labels;
        for x in [self.optimizer.t, l.n, l.mean, l.m2] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        put_arr(&mut b, &self.model.weights);
        put_arr(&mut b, &self.optimizer.sum_sq);
        put_arr(&mut b, &self.optimizer.z);
        put_arr(&mut b, &self.optimizer.scale);
        put_u32(&mut b, self.extra.len() as u32);
        b.extend_from_slice(self.extra.as_bytes());
        let crc = crc32fast::hash(&b);
        put_u32(&mut b, crc);
        b
    }

    /// Parses and validates a model file's bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let field = |what: String| DecodeError::Field(what);
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(DecodeError::Magic);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let want = crc32fast::hash(body);
        let got = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        if got != want {
            return Err(DecodeError::Checksum { got, want });
        }
        let mut r = Reader { bytes: body, at: 8 };
        let version = r.u32()?;
        if !(1..=MODEL_VERSION).contains(&version) {
            return Err(DecodeError::Version(version));
        }
        let (code, param) = (r.u32()?, r.f32()?);
        let loss = Loss::from_code(code, param).ok_or_else(|| field(format!("unknown loss code {code}")))?;
        let d = r.u32()? as usize;
        if d == 0 || d > 1 << 28 {
            return Err(field(format!("feature count {d} out of range")));
        }
        let kind = match r.u32()? {
            0 => Kind::Sgd,
            1 => Kind::Adagrad,
            2 => Kind::Ftrl,
            3 => Kind::Normalized,
            k => return Err(field(format!("unknown optimizer code {k}"))),
        };
        let schedule = match r.u32()? {
            0 => Schedule::Constant,
            1 => Schedule::InvScaling,
            2 => Schedule::Optimal,
            s => return Err(field(format!("unknown schedule code {s}"))),
        };
        let (lr, l1, l2, power, beta) = (r.f32()?, r.f32()?, r.f32()?, r.f32()?, r.f32()?);
        let cfg = OptimConfig { kind, lr, l1, l2, schedule, power, beta };
        cfg.check().map_err(field)?;
        let t = r.f64()?;
        let labels = if version >= 2 {
            let (n, mean, m2) = (r.f64()?, r.f64()?, r.f64()?);
            if !(n.is_finite() && n >= 0.0 && mean.is_finite() && m2.is_finite() && m2 >= 0.0) {
                return Err(field(format!("label statistics out of range (weight {n}, mean {mean}, M2 {m2})")));
            }
            LabelStats { n, mean, m2, anchored: true }
        } else {
            // The bias of a version-1 model does not follow a label mean yet.
            LabelStats { anchored: false, ..LabelStats::default() }
        };
        let weights = r.arr(&[d + 1], "weights")?;
        let sum_sq = r.arr(&[0, d + 1], "optimizer Σg²")?;
        let z = r.arr(&[0, d + 1], "optimizer z")?;
        let scale = r.arr(&[0, d], "optimizer scale")?;
        let fresh = Optimizer::new(cfg, d);
        if (sum_sq.len(), z.len(), scale.len()) != (fresh.sum_sq.len(), fresh.z.len(), fresh.scale.len()) {
            return Err(field("optimizer state does not match the optimizer kind".into()));
        }
        if weights.iter().any(|w| !w.is_finite()) {
            return Err(field("non-finite weights".into()));
        }
        let n = r.u32()? as usize;
        let extra = String::from_utf8(r.take(n)?.to_vec()).map_err(|_| field("extra section is not UTF-8".into()))?;
        if r.at != body.len() {
            return Err(DecodeError::Truncated(format!("{} trailing bytes", body.len() - r.at)));
        }
        Ok(ModelFile { model: LinearModel { loss, weights }, optimizer: Optimizer { cfg, t, sum_sq, z, scale, labels }, extra })
    }

    /// Writes atomically: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let io = |op, source| ModelError::Io { path: path.to_path_buf(), op, source };
        let mut name = path.file_name().ok_or_else(|| io("name", std::io::Error::other("not a file path")))?.to_os_string();
        name.push(format!(".tmp{}", std::process::id()));
        let tmp = path.with_file_name(name);
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
        f.write_all(&self.encode()).map_err(|e| io("write", e))?;
        f.sync_all().map_err(|e| io("fsync", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Reads and validates a model file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), op: "read", source })?;
        ModelFile::decode(&bytes).map_err(|what| ModelError::Invalid { path: path.to_path_buf(), what })
    }
}

/// The current model, readable by any number of predictor threads without locks while a
/// trainer publishes new versions (`arc-swap`: readers do an atomic load and a refcount).
#[derive(Debug)]
pub struct SharedModel {
    current: ArcSwap<LinearModel>,
    version: std::sync::atomic::AtomicU64,
}

impl SharedModel {
    /// Starts serving `model` (version 1).
    pub fn new(model: LinearModel) -> Self {
        SharedModel { current: ArcSwap::from_pointee(model), version: 1.into() }
    }

    /// How many models have been published, the first included.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The latest published model (never blocks).
    pub fn snapshot(&self) -> Arc<LinearModel> {
        self.current.load_full()
    }

    /// Publishes a new model; readers see it on their next snapshot.
    pub fn publish(&self, model: LinearModel) {
        self.current.store(Arc::new(model));
        self.version.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelFile {
        let mut opt = Optimizer::new(OptimConfig::new(Kind::Ftrl), 3);
        opt.t = 12.5;
        opt.z[1] = -0.25;
        opt.labels = LabelStats { n: 3.0, mean: 1.5, m2: 0.75, anchored: true };
        ModelFile {
            model: LinearModel { loss: Loss::Huber { delta: 2.0 }, weights: vec![1.0, -2.0, 0.5, 0.125] },
            optimizer: opt,
            extra: "{\"a\":1}".into(),
        }
    }

    #[test]
    fn roundtrip_and_damage() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(ModelFile::decode(&bytes).unwrap(), m);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(ModelFile::decode(&b).is_err(), "flipped byte {i}");
        }
        for n in 0..bytes.len() {
            assert!(ModelFile::decode(&bytes[..n]).is_err(), "truncated to {n}");
        }
        assert_eq!(ModelFile::decode(b"SSGDATA\0whatever").unwrap_err(), DecodeError::Magic);
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(matches!(ModelFile::decode(&damaged), Err(DecodeError::Checksum { .. })));
    }

    #[test]
    fn version_1_files_still_load() {
        // Version 1 had no label statistics: the 24 bytes after t. Its bias follows no mean yet.
        let m = sample();
        let v2 = m.encode();
        let at = 8 + 4 * 4 + 4 * 2 + 4 * 5 + 8;
        let mut v1 = [&v2[..at], &v2[at + 24..v2.len() - 4]].concat();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let back = ModelFile::decode(&v1).unwrap();
        assert_eq!(back.model, m.model);
        assert_eq!(back.optimizer.labels, LabelStats { anchored: false, ..LabelStats::default() });
        let mut v3 = v2[..v2.len() - 4].to_vec();
        v3[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32fast::hash(&v3);
        v3.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(ModelFile::decode(&v3).unwrap_err(), DecodeError::Version(3));
        assert!(DecodeError::Version(3).to_string().contains("version 3"));
    }

    #[test]
    fn save_load_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.model");
        sample().save(&p).unwrap();
        assert_eq!(ModelFile::load(&p).unwrap(), sample());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
        std::fs::write(&p, b"garbage").unwrap();
        assert!(ModelFile::load(&p).unwrap_err().to_string().contains("m.model"));
    }

    #[test]
    fn snapshots_are_shared_without_locks() {
        let shared = Arc::new(SharedModel::new(LinearModel::zeros(Loss::Squared, 2)));
        let reader = {
            let s = shared.clone();
            std::thread::spawn(move || (0..10_000).map(|_| s.snapshot().predict_row(&[1.0, 1.0])).fold(0.0f32, f32::max))
        };
        for i in 1..=100 {
            shared.publish(LinearModel { loss: Loss::Squared, weights: vec![i as f32, 0.0, 0.0] });
        }
        let max = reader.join().unwrap();
        assert!((0.0..=100.0).contains(&max));
        assert_eq!(shared.snapshot().predict_row(&[1.0, 1.0]), 100.0);
    }
}
