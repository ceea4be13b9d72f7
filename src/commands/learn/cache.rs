//! `--passes N` over a text file: the text is parsed once into a `.ssgd` cache that the passes
//! replay mapped (as Vowpal Wabbit's cache file). `--cache FILE` keeps it, and a later run
//! reuses it only when a key file beside it (`FILE.key.json`) matches the source's path, size
//! and modification time and the parsing options; anything else rebuilds it. Without
//! `--cache` it is a temporary file beside the source (or in the temp directory), removed at
//! the end.

use anyhow::Context;
use std::path::{Path, PathBuf};
use streamsgd::convert::ConvertSummary;

/// What a cache was built from: reused only when all of it matches.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct CacheKey {
    /// The source, canonical.
    source: PathBuf,
    /// Its size in bytes.
    bytes: u64,
    /// Its modification time, nanoseconds since the Unix epoch.
    modified_ns: u128,
    /// A fingerprint of how it was parsed (format, columns, hashing, bad-line policy).
    options: u64,
}

impl CacheKey {
    fn of(source: &Path, options: &str) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(source).with_context(|| format!("{}", source.display()))?;
        let modified = meta.modified()?.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(CacheKey {
            source: source.canonicalize()?,
            bytes: meta.len(),
            modified_ns: modified.as_nanos(),
            options: streamsgd::source::hash::fnv1a(&[options.as_bytes()]),
        })
    }
}

/// A `.ssgd` cache of a text file, ready to map.
pub struct TextCache {
    path: PathBuf,
    /// Removed when dropped (no `--cache`).
    temporary: bool,
}

impl TextCache {
    /// The cache of `source` parsed as `options` describes: `wanted` (kept; reused when its
    /// key matches) or a temporary file; `build` writes it when it must be (re)built.
    pub fn prepare(
        source: &Path,
        wanted: Option<&Path>,
        options: &str,
        build: impl FnOnce(&Path) -> anyhow::Result<ConvertSummary>,
    ) -> anyhow::Result<TextCache> {
        let key = CacheKey::of(source, options)?;
        let (path, temporary) = match wanted {
            Some(p) => (p.to_path_buf(), false),
            None => (temporary_path(source), true),
        };
        let key_path = key_file(&path);
        let cache = TextCache { path, temporary };
        if !temporary {
            let old: Option<CacheKey> = std::fs::read(&key_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
            if old.as_ref() == Some(&key) && cache.path.is_file() {
                eprintln!("note: replaying the cache {} of {} (its size, time and options match)", cache.path.display(), source.display());
                return Ok(cache);
            }
            // A stale key must not vouch for a half-built cache.
            let _ = std::fs::remove_file(&key_path);
        }
        let s = build(&cache.path)?;
        eprintln!(
            "note: parsed {} once into {} for the passes: {} rows ({} skipped lines) in {:.2} s",
            source.display(),
            cache.path.display(),
            s.rows,
            s.skipped,
            s.seconds
        );
        if !temporary {
            std::fs::write(&key_path, serde_json::to_vec(&key)?).with_context(|| format!("{}", key_path.display()))?;
        }
        Ok(cache)
    }

    /// Where the cache is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TextCache {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn key_file(cache: &Path) -> PathBuf {
    let mut name = cache.as_os_str().to_owned();
    name.push(".key.json");
    PathBuf::from(name)
}

/// A temporary cache beside `source` (the same disk), or in the temp directory when its
/// directory is not writable.
fn temporary_path(source: &Path) -> PathBuf {
    let name = format!(".{}.{}.streamsgd-cache.ssgd", source.file_name().unwrap_or_default().to_string_lossy(), std::process::id());
    let dir = source.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let beside = dir.join(&name);
    if std::fs::File::create(&beside).is_ok() {
        let _ = std::fs::remove_file(&beside);
        beside
    } else {
        std::env::temp_dir().join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_is_reused_only_while_its_source_and_options_match() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.csv");
        std::fs::write(&src, "x,label\n1,0\n").unwrap();
        let cache = dir.path().join("a.ssgd");
        let builds = std::cell::Cell::new(0);
        let build = |p: &Path| {
            builds.set(builds.get() + 1);
            std::fs::write(p, b"built").unwrap();
            Ok(ConvertSummary::default())
        };
        for (options, expect) in [("csv", 1), ("csv", 1), ("csv --label x", 2), ("csv --label x", 2)] {
            TextCache::prepare(&src, Some(&cache), options, build).unwrap();
            assert_eq!(builds.get(), expect, "{options}");
        }
        // The source changed (size): rebuilt.
        std::fs::write(&src, "x,label\n1,0\n2,1\n").unwrap();
        TextCache::prepare(&src, Some(&cache), "csv --label x", build).unwrap();
        assert_eq!(builds.get(), 3);
        // A temporary cache is removed when done with.
        let path = TextCache::prepare(&src, None, "csv", build).unwrap().path().to_path_buf();
        assert_eq!(builds.get(), 4);
        assert!(!path.exists());
    }
}
