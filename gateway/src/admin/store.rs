//! Persistence of uploaded descriptor sets in the data directory: one file
//! per set (`<name>.dset`: a JSON metadata line, then the encoded
//! FileDescriptorSet), written atomically (temp file, fsync, rename, fsync
//! of the directory) before the upload is answered, and reloaded at start.
//! A file that cannot be read or parsed is logged and skipped, never
//! deleted.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// File name suffix of a stored set.
const SUFFIX: &str = ".dset";

/// What is stored next to the descriptors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredMeta {
    /// Cluster binding.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Upload time, ms since the Unix epoch.
    #[serde(default)]
    pub uploaded_at_unix_ms: u64,
}

/// One set read back from disk.
pub struct StoredSet {
    /// Set name.
    pub name: String,
    /// Encoded FileDescriptorSet.
    pub bytes: Vec<u8>,
    /// Metadata.
    pub meta: StoredMeta,
    /// Where it came from.
    pub path: PathBuf,
}

/// The data directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating it if needed) `<data_dir>/descriptor-sets`.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("descriptor-sets");
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{SUFFIX}"))
    }

    /// Writes a set atomically. Blocking: call from a blocking thread.
    pub fn write(&self, name: &str, bytes: &[u8], meta: &StoredMeta) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{name}{SUFFIX}.tmp"));
        let header = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&header)?;
            f.write_all(b"\n")?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.path(name))?;
        sync_dir(&self.dir)
    }

    /// Removes a stored set (absent is fine). Blocking.
    pub fn delete(&self, name: &str) -> std::io::Result<()> {
        match fs::remove_file(self.path(name)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads every stored set, in name order; unreadable files are logged
    /// (with their path) and skipped. Blocking.
    pub fn load_all(&self) -> Vec<StoredSet> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(error) => {
                warn!(dir = %self.dir.display(), %error, "Cannot read the descriptor set directory");
                return Vec::new();
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(SUFFIX) && !n.starts_with('.'))
            })
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for path in paths {
            match read_one(&path) {
                Ok(set) => out.push(set),
                Err(reason) => {
                    warn!(file = %path.display(), %reason, "Skipping unreadable stored descriptor set (left in place)");
                }
            }
        }
        out
    }
}

fn read_one(path: &Path) -> Result<StoredSet, String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(SUFFIX))
        .ok_or("bad file name")?
        .to_string();
    let data = fs::read(path).map_err(|e| e.to_string())?;
    let nl = data
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no metadata line")?;
    let meta: StoredMeta =
        serde_json::from_slice(&data[..nl]).map_err(|e| format!("bad metadata: {e}"))?;
    Ok(StoredSet {
        name,
        bytes: data[nl + 1..].to_vec(),
        meta,
        path: path.to_path_buf(),
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    // Makes the rename durable (POSIX); opening a directory fails on some
    // platforms, where there is nothing more to do.
    match fs::File::open(dir) {
        Ok(d) => d.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_delete() {
        let dir = tempdir();
        let store = Store::open(&dir).expect("open");
        let meta = StoredMeta {
            cluster: Some("c".into()),
            uploaded_at_unix_ms: 42,
        };
        store.write("a", b"\x0a\x00bytes\n", &meta).expect("write");
        fs::write(dir.join("descriptor-sets/broken.dset"), b"no newline").expect("write");
        let all = store.load_all();
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].name.as_str(), all[0].bytes.as_slice()),
            ("a", &b"\x0a\x00bytes\n"[..])
        );
        assert_eq!(all[0].meta.cluster.as_deref(), Some("c"));
        assert!(
            dir.join("descriptor-sets/broken.dset").exists(),
            "never deleted"
        );
        store.delete("a").expect("delete");
        store.delete("a").expect("absent is fine");
        assert!(store.load_all().is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempdir() -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "gw-store-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&p);
        p
    }
}
