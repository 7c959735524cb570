//! Where snapshot archives live: the [`BlobStore`] trait and its local-disk implementation.
//!
//! A blob becomes visible under its key only when its writer commits: the bytes go to a
//! temporary file, which is fsynced and renamed into place (and the directory fsynced), so a
//! crash or a failed save never leaves a half-written archive under a real key. Object
//! storage can implement the same trait later. Calls block: run them on a blocking thread.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A store of immutable blobs addressed by keys like `env/<uuid>/<uuid>.tar.zst`.
pub trait BlobStore: Send + Sync + 'static {
    /// A writer for a new blob; nothing appears under `key` until [`BlobWriter::commit`].
    fn create(&self, key: &str) -> io::Result<Box<dyn BlobWriter>>;
    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Removes a blob; a missing one is not an error.
    fn delete(&self, key: &str) -> io::Result<()>;
    /// Every committed key.
    fn list(&self) -> io::Result<Vec<String>>;
}

/// A blob being written.
pub trait BlobWriter: Write + Send {
    /// Makes the blob durable and visible under its key. Dropping the writer instead
    /// discards what was written.
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// Blobs as files under one directory.
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    /// Opens (creating) the directory and removes what interrupted writes left.
    pub fn open(root: &Path) -> io::Result<Self> {
        let tmp = root.join(".tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Self { root: root.to_owned() })
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let valid = !key.is_empty()
            && key.split('/').all(|part| !part.is_empty() && part != "." && part != ".." && !part.starts_with('.'))
            && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if valid { Ok(self.root.join(key)) } else { Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid blob key {key:?}"))) }
    }
}

impl BlobStore for LocalBlobStore {
    fn create(&self, key: &str) -> io::Result<Box<dyn BlobWriter>> {
        let dest = self.path(key)?;
        let tmp = self.root.join(".tmp").join(uuid::Uuid::new_v4().to_string());
        let file = File::create(&tmp)?;
        Ok(Box::new(LocalWriter { file: Some(io::BufWriter::with_capacity(1 << 20, file)), tmp, dest }))
    }

    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, File::open(self.path(key)?)?)))
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // Leave no empty per-environment directories behind.
        if let Some(parent) = path.parent().filter(|p| *p != self.root) {
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir)? {
                let e = e?;
                let name = e.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                if e.file_type()?.is_dir() {
                    dirs.push(e.path());
                } else if let Ok(rel) = e.path().strip_prefix(&self.root) {
                    keys.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        Ok(keys)
    }
}

struct LocalWriter {
    file: Option<io::BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("open until commit").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open until commit").flush()
    }
}

impl BlobWriter for LocalWriter {
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        let file = self.file.take().expect("committed once").into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let parent = self.dest.parent().expect("a key has a parent dir");
        std::fs::create_dir_all(parent)?;
        std::fs::rename(&self.tmp, &self.dest)?;
        File::open(parent)?.sync_all()?;
        Ok(())
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_appears_only_on_commit_and_a_dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        let mut w = store.create("env/a/1.tar.zst").unwrap();
        w.write_all(b"half").unwrap();
        drop(w);
        assert!(store.list().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(), 0, "no temp file left");

        let mut w = store.create("env/a/2.tar.zst").unwrap();
        w.write_all(b"whole").unwrap();
        assert!(store.list().unwrap().is_empty(), "invisible until committed");
        w.commit().unwrap();
        assert_eq!(store.list().unwrap(), vec!["env/a/2.tar.zst".to_owned()]);
        let mut back = String::new();
        store.open("env/a/2.tar.zst").unwrap().read_to_string(&mut back).unwrap();
        assert_eq!(back, "whole");
        store.delete("env/a/2.tar.zst").unwrap();
        store.delete("env/a/2.tar.zst").unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn keys_cannot_leave_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).unwrap();
        for key in ["../x", "a/../../x", "/etc/passwd", ".tmp/x", "a//b", ""] {
            assert!(store.create(key).is_err(), "{key:?}");
        }
    }
}
