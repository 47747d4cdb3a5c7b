//! Certificates from files (`--svid-dir`): `svid.pem` (leaf first), `svid.key` and `bundle.pem`,
//! as `trustmesh-sidecar svid fetch` writes them (or any rotator that writes the same names).
//!
//! Read at start, then re-read whenever one of them changes (size or modification time, polled),
//! so an external rotator can renew them while traffic flows: new handshakes get the new
//! certificate, open connections keep theirs. A set that does not load (half written, key and
//! certificate from different rotations, expired) is refused with a log line and a metric, and
//! the previous certificate stays in use until it expires, never after (the resolver refuses to
//! present an expired certificate).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use trustmesh_core::tls::{self, SwappableCert};

use crate::metrics::{Metrics, ReasonLabel};

/// The three files of a directory.
pub const FILES: [&str; 3] = ["svid.pem", "svid.key", "bundle.pem"];

/// Reads PEM certificates from a file; an error names the file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Size and modification time of each file (`None`: missing), to notice a rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamps(Vec<Option<(u64, Option<SystemTime>)>>);

impl Stamps {
    /// The stamps of `dir`'s files now.
    pub fn of(dir: &Path) -> Self {
        Self(FILES.iter().map(|f| std::fs::metadata(dir.join(f)).ok().map(|m| (m.len(), m.modified().ok()))).collect())
    }
}

/// Loads the directory into `cert` and `bundle`; on error nothing changes. Returns the
/// certificate's notAfter.
pub fn load(dir: &Path, cert: &SwappableCert, bundle: &watch::Sender<Vec<CertificateDer<'static>>>) -> Result<SystemTime, String> {
    let chain = read_certs(&dir.join("svid.pem"))?;
    let key_path = dir.join("svid.key");
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let roots = read_certs(&dir.join("bundle.pem"))?;
    let certified = tls::certified_key(chain, key).map_err(|e| format!("{}: {e}", dir.display()))?;
    cert.set(certified).map_err(|e| format!("{}/svid.pem: {e}", dir.display()))?;
    bundle.send_if_modified(|current| {
        let changed = *current != roots;
        if changed {
            *current = roots;
        }
        changed
    });
    cert.not_after().ok_or_else(|| "no certificate after loading".to_owned())
}

/// Re-loads the directory whenever one of its files differs from `seen` (the stamps taken before
/// the last load), checking every `interval`. Runs until `bundle` has no receivers.
pub async fn watch(
    dir: PathBuf,
    mut seen: Stamps,
    interval: Duration,
    cert: Arc<SwappableCert>,
    bundle: watch::Sender<Vec<CertificateDer<'static>>>,
    metrics: Arc<Metrics>,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        if bundle.is_closed() {
            return;
        }
        let now = Stamps::of(&dir);
        if now == seen {
            continue;
        }
        seen = now;
        match load(&dir, &cert, &bundle) {
            Ok(not_after) => {
                let expiry = not_after.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                metrics.svid_renewals.inc();
                metrics.svid_expiry_seconds.set(i64::try_from(expiry).unwrap_or(i64::MAX));
                tracing::info!(dir = %dir.display(), not_after = expiry, "certificate files reloaded");
            }
            Err(reason) => {
                metrics.svid_failures.get_or_create(&ReasonLabel { reason: "bad_files" }).inc();
                tracing::error!(%reason, "certificate files refused; keeping the previous certificate until it expires");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

    /// A leaf for `spiffe://test.local/ns/a/sa/<name>` and its key and bundle, written to `dir`.
    fn write_set(dir: &Path, ca: &CertifiedIssuer<'static, KeyPair>, name: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(format!("spiffe://test.local/ns/a/sa/{name}").try_into().unwrap())];
        let leaf = params.signed_by(&key, ca).unwrap();
        std::fs::write(dir.join("svid.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("svid.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("bundle.pem"), ca.pem()).unwrap();
        leaf.der().clone()
    }

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_rotated_set_is_picked_up_and_a_broken_one_keeps_the_previous_certificate() {
        let dir = std::env::temp_dir().join(format!("trustmesh-svid-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = ca();
        let first = write_set(&dir, &ca, "one");
        let cert = SwappableCert::new();
        let (bundle, _rx) = watch::channel(Vec::new());
        let stamps = Stamps::of(&dir);
        load(&dir, &cert, &bundle).unwrap();
        assert_eq!(cert.current().unwrap().cert[0], first);
        let metrics = Metrics::new();
        let watcher = tokio::spawn(watch(dir.clone(), stamps, Duration::from_millis(10), cert.clone(), bundle, metrics.clone()));

        // A key from another rotation: refused, the first certificate stays.
        std::fs::write(dir.join("svid.key"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let refused = async {
            while metrics.svid_failures.get_or_create(&ReasonLabel { reason: "bad_files" }).get() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), refused).await.expect("the mismatched key was never noticed");
        assert_eq!(cert.current().unwrap().cert[0], first);

        // A complete new set: picked up.
        let second = write_set(&dir, &ca, "two");
        let rotated = async {
            while cert.current().unwrap().cert[0] != second {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), rotated).await.expect("the new set was never picked up");
        assert!(metrics.svid_renewals.get() >= 1);
        watcher.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
