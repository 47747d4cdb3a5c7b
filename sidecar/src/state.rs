//! Live state: the snapshot in force (policy compiled once per version) and the trust bundle.
//!
//! Both are held in `tokio::sync::watch` channels and replaced as a whole, so a connection or
//! request reads one consistent value. `None` means no snapshot yet: every call is refused
//! (fail closed). A standalone sidecar reads its snapshot from a JSON file that it watches; a
//! broken file is logged and the last good snapshot stays in force (fail static).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use trustmesh_core::policy::CompiledPolicy;
use trustmesh_core::snapshot::Snapshot;

/// A snapshot with its policy indexed for evaluation.
#[derive(Debug)]
pub struct Active {
    /// The snapshot as received.
    pub snapshot: Snapshot,
    /// Its inbound policy, indexed.
    pub policy: CompiledPolicy,
}

impl Active {
    /// Indexes a snapshot.
    pub fn new(snapshot: Snapshot) -> Arc<Self> {
        let policy = CompiledPolicy::new(snapshot.inbound.clone());
        Arc::new(Self { snapshot, policy })
    }
}

/// The current snapshot (`None` until the first one arrives).
pub type Live = watch::Receiver<Option<Arc<Active>>>;

/// Why a snapshot file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read.
    #[error("cannot read the snapshot {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid snapshot.
    #[error("{path} is not a valid snapshot: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the field.
        reason: String,
    },
}

/// Reads and parses a snapshot file.
pub fn read_snapshot(path: &PathBuf) -> Result<Snapshot, SnapshotError> {
    let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Read { path: path.clone(), source })?;
    serde_json::from_str(&text).map_err(|e| SnapshotError::Parse { path: path.clone(), reason: e.to_string() })
}

/// Watches a snapshot file (polling its size and modification time every `interval`) and
/// publishes every good version on `tx`. Runs until `tx` has no receivers.
pub async fn watch_file(path: PathBuf, interval: Duration, tx: watch::Sender<Option<Arc<Active>>>) {
    // The caller read the file once already: reload only when it changes from here on.
    let stamp_of = |p: &PathBuf| std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().ok()));
    let mut seen = stamp_of(&path);
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        if tx.is_closed() {
            return;
        }
        let stamp = stamp_of(&path);
        if stamp.is_none() || stamp == seen {
            continue;
        }
        seen = stamp;
        match read_snapshot(&path) {
            Ok(s) => {
                tracing::info!(version = %s.version, "snapshot loaded");
                tx.send_replace(Some(Active::new(s)));
            }
            Err(e) => tracing::error!(error = %e, "keeping the last good snapshot"),
        }
    }
}
