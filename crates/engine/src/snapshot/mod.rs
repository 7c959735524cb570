//! Snapshots and environments: saving a session's browser state and restoring it.
//!
//! A **filesystem snapshot** is an archive (see `archive.rs`) of the profile dir plus the
//! state captured over CDP, written through a [`BlobStore`] and described by a
//! [`Manifest`] kept in the store with its environment. A **memory snapshot** is the live
//! browser itself, frozen and parked in the [`Standby`] pool. [`Snapshots`] owns both; the
//! engine calls it from its create, delete and snapshot operations. Archive work is
//! blocking and runs on blocking threads.

mod archive;
pub mod blob;
pub mod standby;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentbox_browser::BrowserState;
use agentbox_store::SnapshotRef;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use archive::profile_bytes;
use archive::{PackError, UnpackError};
pub use blob::{BlobStore, LocalBlobStore};
pub use standby::{ParkedInfo, Standby, StandbyLimits};

use crate::time::now_ms;

/// The archive format this build writes and reads.
pub const FORMAT: &str = "agentbox-profile+tar+zstd";
pub const FORMAT_VERSION: u32 = 1;

/// What the store and the API know of a filesystem snapshot. Holds no secret: cookie
/// values and storage stay inside the archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub sha256: String,
    pub archive_bytes: u64,
    pub unpacked_bytes: u64,
    pub files: u64,
    pub chromium_version: String,
    /// `"closed"` (Chromium quit cleanly first) or `"frozen"` (copied while stopped).
    pub captured: String,
    pub session_id: Uuid,
    pub created_at_ms: i64,
    pub tabs: Vec<String>,
    pub active_tab: usize,
    pub cookies: usize,
}

/// Why a snapshot could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("the browser profile is larger than the snapshot limit of {limit} bytes (the server setting snapshot_max_mib){}",
        if *.session_deleted { "; the session was deleted while it was being saved, without a snapshot" } else { "; nothing was changed" })]
    TooLarge { limit: u64, session_deleted: bool },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    BrowserGone(String),
    #[error("the browser state could not be read: {0}")]
    Capture(String),
    #[error("the snapshot could not be written: {0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] agentbox_store::StoreError),
}

/// Why a filesystem snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The archive or its manifest is not usable; nothing was restored.
    #[error("{0}")]
    Damaged(String),
    #[error("the snapshot could not be read: {0}")]
    Io(String),
}

/// The blob store, the size limit and the standby pool.
pub struct Snapshots {
    blobs: Arc<dyn BlobStore>,
    max_bytes: u64,
    pub standby: Standby,
}

impl Snapshots {
    pub fn new(blobs: Arc<dyn BlobStore>, max_bytes: u64, limits: StandbyLimits) -> Self {
        Self { blobs, max_bytes, standby: Standby::new(limits) }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Refuses up front a profile that cannot fit, before anything is changed.
    pub async fn check_size(&self, dir: PathBuf) -> Result<(), SaveError> {
        let bytes = tokio::task::spawn_blocking(move || profile_bytes(&dir)).await.map_err(|e| SaveError::Io(e.to_string()))?;
        match bytes {
            Ok(b) if b > self.max_bytes => Err(SaveError::TooLarge { limit: self.max_bytes, session_deleted: false }),
            Ok(_) => Ok(()),
            Err(e) => Err(SaveError::Io(e.to_string())),
        }
    }

    /// Packs `dir` with `state` into a new blob of `environment_id`. Nothing is visible
    /// under the returned key unless this succeeds.
    pub async fn write(
        &self,
        environment_id: Uuid,
        session_id: Uuid,
        dir: PathBuf,
        state: BrowserState,
        chromium_version: String,
        captured: &str,
    ) -> Result<(SnapshotRef, Manifest), SaveError> {
        let key = format!("env/{environment_id}/{}.tar.zst", Uuid::new_v4());
        let (blobs, limit, k) = (self.blobs.clone(), self.max_bytes, key.clone());
        let tabs = state.tabs.iter().map(|t| t.url.clone()).collect();
        let (active_tab, cookies) = (state.active, state.cookies.len());
        let packed = tokio::task::spawn_blocking(move || {
            let mut w = blobs.create(&k).map_err(|e| SaveError::Io(e.to_string()))?;
            let packed = archive::pack(&dir, &state, limit, &mut w).map_err(|e| match e {
                PackError::TooLarge { limit } => SaveError::TooLarge { limit, session_deleted: false },
                PackError::Io(e) => SaveError::Io(e.to_string()),
            })?;
            w.commit().map_err(|e| SaveError::Io(e.to_string()))?;
            Ok::<_, SaveError>(packed)
        })
        .await
        .map_err(|e| SaveError::Io(e.to_string()))??;
        let now = now_ms();
        let manifest = Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            sha256: packed.sha256,
            archive_bytes: packed.archive_bytes,
            unpacked_bytes: packed.unpacked_bytes,
            files: packed.files,
            chromium_version,
            captured: captured.into(),
            session_id,
            created_at_ms: now,
            tabs,
            active_tab,
            cookies,
        };
        let json = serde_json::to_string(&manifest).expect("a manifest serializes");
        Ok((SnapshotRef { key, manifest: json, session_id, created_at_ms: now }, manifest))
    }

    /// Extracts a snapshot into `dest` (which must not exist) and returns its captured
    /// state. On any failure `dest` is removed again.
    pub async fn read(&self, snapshot: &SnapshotRef, dest: PathBuf) -> Result<BrowserState, RestoreError> {
        let manifest = parse_manifest(&snapshot.manifest)?;
        let (blobs, key) = (self.blobs.clone(), snapshot.key.clone());
        tokio::task::spawn_blocking(move || {
            let result = (|| {
                let mut input = blobs.open(&key).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => RestoreError::Damaged("its archive is missing".into()),
                    _ => RestoreError::Io(e.to_string()),
                })?;
                archive::unpack(&mut input, &manifest.sha256, manifest.archive_bytes, &dest).map_err(|e| match e {
                    UnpackError::Damaged(why) => RestoreError::Damaged(format!("its archive is damaged: {why}")),
                    UnpackError::Io(e) => RestoreError::Io(e.to_string()),
                })
            })();
            if result.is_err() {
                remove_dir(&dest);
            }
            result
        })
        .await
        .map_err(|e| RestoreError::Io(e.to_string()))?
    }

    /// Removes a blob that nothing refers to any more (failures are logged).
    pub async fn delete_blob(&self, key: String) {
        let blobs = self.blobs.clone();
        let k = key.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || blobs.delete(&k)).await {
            tracing::warn!(key = %key, error = %e, "could not remove a snapshot archive");
        }
    }

    /// On start-up: removes archives the store does not refer to (a save interrupted
    /// between writing its archive and recording it).
    pub async fn sweep(&self, referenced: Vec<String>) -> usize {
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(keys) = blobs.list() else { return 0 };
            keys.iter().filter(|k| !referenced.contains(k)).filter(|k| blobs.delete(k).is_ok()).count()
        })
        .await
        .unwrap_or(0)
    }
}

/// Reads a stored manifest, refusing formats this build does not know.
pub fn parse_manifest(json: &str) -> Result<Manifest, RestoreError> {
    let m: Manifest = serde_json::from_str(json).map_err(|e| RestoreError::Damaged(format!("its manifest is unreadable: {e}")))?;
    if m.format != FORMAT || m.format_version > FORMAT_VERSION {
        return Err(RestoreError::Damaged(format!(
            "it was written in format {} version {}, which this agentbox (format {FORMAT} version {FORMAT_VERSION}) cannot read",
            m.format, m.format_version
        )));
    }
    Ok(m)
}

pub(crate) fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove a directory");
    }
}
