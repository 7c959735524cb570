//! The snapshot archive: a profile dir (without caches) and the captured [`BrowserState`],
//! as tar compressed with zstd, checked by the SHA-256 of the archive's bytes.
//!
//! [`pack`] streams the profile into a blob writer while hashing and counting it, and
//! refuses to go past the size limit. [`unpack`] checks the format, extracts into a fresh
//! directory and verifies the checksum and size; the caller removes the directory when it
//! fails, so nothing is ever half restored.

use std::io::{self, Read, Write};
use std::path::Path;

use agentbox_browser::BrowserState;
use sha2::{Digest, Sha256};

/// The name of the captured state inside the archive (first entry).
const STATE_ENTRY: &str = ".agentbox/state.json";

/// Directories and files of a Chromium profile that are caches, locks or downloadable
/// components: rebuilt by Chromium, worthless in a snapshot.
const SKIP: &[&str] = &[
    "Cache",
    "Code Cache",
    "GPUCache",
    "DawnCache",
    "DawnGraphiteCache",
    "DawnWebGPUCache",
    "GraphiteDawnCache",
    "GrShaderCache",
    "ShaderCache",
    "component_crx_cache",
    "extensions_crx_cache",
    "Crashpad",
    "BrowserMetrics",
    "BrowserMetrics-spare.pma",
    "Safe Browsing",
    "optimization_guide_model_store",
    "OptimizationHints",
    "segmentation_platform",
    "screen_ai",
    "SingletonLock",
    "SingletonSocket",
    "SingletonCookie",
    "DevToolsActivePort",
];

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub sha256: String,
    pub archive_bytes: u64,
    pub unpacked_bytes: u64,
    pub files: u64,
}

/// Why packing failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("the profile holds more than the snapshot limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("could not write the snapshot: {0}")]
    Io(#[from] io::Error),
}

/// Why unpacking failed: the archive is not one we can trust.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{0}")]
    Damaged(String),
    #[error("could not write the restored profile: {0}")]
    Io(io::Error),
}

/// Bytes of the profile dir a snapshot would hold (caches left out).
pub fn profile_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    walk(dir, Path::new(""), &mut |_, _, meta| {
        if meta.is_file() {
            total += meta.len();
        }
        Ok(())
    })?;
    Ok(total)
}

/// Walks `root/rel` depth first in name order, calling `f` for every regular file and
/// directory that is not skipped. Files that vanish meanwhile are left out.
fn walk(root: &Path, rel: &Path, f: &mut dyn FnMut(&Path, &Path, &std::fs::Metadata) -> io::Result<()>) -> io::Result<()> {
    let mut entries: Vec<_> = match std::fs::read_dir(root.join(rel)) {
        Ok(rd) => rd.filter_map(Result::ok).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if SKIP.iter().any(|s| name == *s) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
        let child = rel.join(&name);
        if meta.is_dir() {
            f(&e.path(), &child, &meta)?;
            walk(root, &child, f)?;
        } else if meta.is_file() {
            f(&e.path(), &child, &meta)?;
        }
    }
    Ok(())
}

/// Packs `dir` and `state` into `out`, refusing to hold more than `limit` bytes of files.
pub fn pack(dir: &Path, state: &BrowserState, limit: u64, out: &mut dyn Write) -> Result<Packed, PackError> {
    let hashing = HashWriter { inner: out, hash: Sha256::new(), bytes: 0 };
    let encoder = zstd::Encoder::new(hashing, 3)?;
    let mut tar = tar::Builder::new(encoder);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);

    let state_json = serde_json::to_vec(state).map_err(io::Error::other)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(state_json.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, STATE_ENTRY, state_json.as_slice())?;

    let (mut unpacked, mut files) = (0u64, 0u64);
    walk(dir, Path::new(""), &mut |full, rel, meta| {
        if meta.is_dir() {
            return tar.append_dir(rel, full);
        }
        unpacked += meta.len();
        if unpacked > limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "over the limit"));
        }
        let mut file = match std::fs::File::open(full) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        // The length read now, not the one listed: a file may change under a live browser.
        let len = file.metadata()?.len();
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(meta, tar::HeaderMode::Deterministic);
        header.set_size(len);
        header.set_cksum();
        tar.append_data(&mut header, rel, (&mut file).take(len).chain(io::repeat(0).take(len)).take(len))?;
        files += 1;
        Ok(())
    })
    .map_err(|e| if e.kind() == io::ErrorKind::FileTooLarge { PackError::TooLarge { limit } } else { PackError::Io(e) })?;

    let hashing = tar.into_inner()?.finish()?;
    Ok(Packed { sha256: hex(&hashing.hash.finalize()), archive_bytes: hashing.bytes, unpacked_bytes: unpacked, files })
}

/// Extracts an archive into `dest` (which must not exist yet) and returns its state, after
/// checking that the archive's bytes have the expected size and SHA-256.
pub fn unpack(input: &mut dyn Read, sha256: &str, archive_bytes: u64, dest: &Path) -> Result<BrowserState, UnpackError> {
    let damaged = |what: String| UnpackError::Damaged(what);
    std::fs::create_dir(dest).map_err(UnpackError::Io)?;
    let mut hashing = HashReader { inner: input, hash: Sha256::new(), bytes: 0 };
    let mut state = None;
    {
        let decoder = zstd::Decoder::new(&mut hashing).map_err(|e| damaged(format!("not a zstd stream: {e}")))?;
        let mut tar = tar::Archive::new(decoder);
        let entries = tar.entries().map_err(|e| damaged(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| damaged(format!("an entry cannot be read: {e}")))?;
            let path = entry.path().map_err(|e| damaged(format!("an entry has a bad name: {e}")))?.into_owned();
            if path == Path::new(STATE_ENTRY) {
                let mut json = Vec::new();
                entry.read_to_end(&mut json).map_err(|e| damaged(format!("the saved state cannot be read: {e}")))?;
                state = Some(serde_json::from_slice(&json).map_err(|e| damaged(format!("the saved state is invalid: {e}")))?);
                continue;
            }
            match entry.unpack_in(dest) {
                Ok(true) => {}
                Ok(false) => return Err(damaged(format!("an entry points outside the profile: {}", path.display()))),
                Err(e) if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(UnpackError::Io(e));
                }
                Err(e) => return Err(damaged(format!("{} cannot be extracted: {e}", path.display()))),
            }
        }
    }
    // Whatever follows the tar's end still counts towards the checksum.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| damaged(format!("the archive cannot be read to its end: {e}")))?;
    let found = hex(&hashing.hash.finalize());
    if hashing.bytes != archive_bytes || found != sha256 {
        return Err(damaged(format!(
            "checksum mismatch (expected {archive_bytes} bytes with sha256 {sha256}, found {} bytes with sha256 {found})",
            hashing.bytes
        )));
    }
    state.ok_or_else(|| damaged("the archive holds no saved state".into()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct HashWriter<'a> {
    inner: &'a mut dyn Write,
    hash: Sha256,
    bytes: u64,
}

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashReader<'a> {
    inner: &'a mut dyn Read,
    hash: Sha256,
    bytes: u64,
}

impl Read for HashReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("Default/Local Storage/leveldb")).unwrap();
        std::fs::create_dir_all(p.join("Default/Cache/Cache_Data")).unwrap();
        std::fs::write(p.join("Default/Cookies"), b"cookie db").unwrap();
        std::fs::write(p.join("Default/Local Storage/leveldb/000003.log"), vec![7u8; 100_000]).unwrap();
        std::fs::write(p.join("Default/Cache/Cache_Data/data_0"), vec![1u8; 50_000]).unwrap();
        std::os::unix::fs::symlink("host-123", p.join("SingletonLock")).unwrap();
        dir
    }

    fn state() -> BrowserState {
        BrowserState { cookies: vec![serde_json::json!({"name": "sid", "value": "1"})], tabs: vec![], active: 0 }
    }

    #[test]
    fn a_profile_round_trips_without_its_caches_and_locks() {
        let src = profile();
        let mut blob = Vec::new();
        let packed = pack(src.path(), &state(), 1 << 30, &mut blob).unwrap();
        assert_eq!(packed.archive_bytes, blob.len() as u64);
        assert_eq!(packed.files, 2);
        assert_eq!(packed.unpacked_bytes, 100_009);
        assert_eq!(profile_bytes(src.path()).unwrap(), 100_009);

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("restored");
        let back = unpack(&mut blob.as_slice(), &packed.sha256, packed.archive_bytes, &dest).unwrap();
        assert_eq!(back, state());
        assert_eq!(std::fs::read(dest.join("Default/Cookies")).unwrap(), b"cookie db");
        assert_eq!(std::fs::read(dest.join("Default/Local Storage/leveldb/000003.log")).unwrap().len(), 100_000);
        assert!(!dest.join("Default/Cache").exists());
        assert!(std::fs::symlink_metadata(dest.join("SingletonLock")).is_err());
    }

    #[test]
    fn a_damaged_or_foreign_archive_is_refused_by_checksum_or_format() {
        let src = profile();
        let mut blob = Vec::new();
        let packed = pack(src.path(), &state(), 1 << 30, &mut blob).unwrap();
        let out = tempfile::tempdir().unwrap();

        let mut flipped = blob.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        let err = unpack(&mut flipped.as_slice(), &packed.sha256, packed.archive_bytes, &out.path().join("a")).unwrap_err();
        assert!(matches!(err, UnpackError::Damaged(_)), "{err}");

        let mut appended = blob.clone();
        appended.extend_from_slice(b"junk");
        let err = unpack(&mut appended.as_slice(), &packed.sha256, packed.archive_bytes, &out.path().join("b")).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");

        let err = unpack(&mut &b"not an archive"[..], &packed.sha256, 14, &out.path().join("c")).unwrap_err();
        assert!(matches!(err, UnpackError::Damaged(_)), "{err}");
    }

    #[test]
    fn a_profile_over_the_limit_is_refused() {
        let src = profile();
        let err = pack(src.path(), &state(), 50_000, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, PackError::TooLarge { limit: 50_000 }), "{err}");
    }
}
