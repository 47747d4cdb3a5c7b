//! Persistence of the CA in the cert-manager layout: `tls.crt` (signing certificate and chain),
//! `tls.key` (PKCS#8 key) and `ca.crt` (trust bundle), either as files in a directory (local
//! mode) or as the data of a Kubernetes Secret.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use trustmesh_core::spiffe::TrustDomain;

use super::{CaError, CertificateAuthority};

/// File / Secret key of the signing certificate followed by its chain (PEM).
pub const TLS_CRT: &str = "tls.crt";
/// File / Secret key of the signing key (PKCS#8 PEM when written by trustmesh).
pub const TLS_KEY: &str = "tls.key";
/// File / Secret key of the trust bundle (PEM roots).
pub const CA_CRT: &str = "ca.crt";

/// Loads the CA from `dir` (`tls.crt`, `tls.key`, optional `ca.crt`), or, when neither
/// `tls.crt` nor `tls.key` exists, generates a root for `td` and writes the three files.
///
/// Returns the authority and whether it was just created. The directory is created with mode
/// 0700 when missing (an existing directory's mode is left alone); `tls.key` is created with
/// mode 0600 from the start and every file is written to a temporary name and renamed, so a
/// crash never leaves a truncated file.
///
/// # Errors
/// [`CaError::Io`] for file-system failures, [`CaError::Incomplete`] when only some of the
/// files exist, and the errors of [`CertificateAuthority::from_pem`] for unusable contents.
pub fn load_or_generate_dir(
    dir: &Path,
    td: &TrustDomain,
) -> Result<(CertificateAuthority, bool), CaError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CaError::Io {
            action: "create the CA directory",
            path: dir.to_owned(),
            source,
        })?;
    let crt_path = dir.join(TLS_CRT);
    let key_path = dir.join(TLS_KEY);
    let ca_path = dir.join(CA_CRT);
    match (exists(&crt_path)?, exists(&key_path)?) {
        (true, true) => {
            let crt = read(&crt_path)?;
            let key = read(&key_path)?;
            let bundle = if exists(&ca_path)? {
                Some(read(&ca_path)?)
            } else {
                None
            };
            let ca = CertificateAuthority::from_pem(&crt, &key, bundle.as_deref(), td)?;
            Ok((ca, false))
        }
        (false, false) => {
            if exists(&ca_path)? {
                return Err(CaError::Incomplete {
                    reason: format!(
                        "{} exists but tls.crt and tls.key do not: restore tls.crt and tls.key, or remove ca.crt to let the operator generate a new root",
                        ca_path.display()
                    ),
                });
            }
            let ca = CertificateAuthority::generate(td)?;
            write_atomic(dir, TLS_KEY, ca.key_pem().as_bytes(), 0o600)?;
            write_atomic(dir, CA_CRT, ca.bundle().to_pem().as_bytes(), 0o644)?;
            // Written last: its presence marks a complete set.
            write_atomic(dir, TLS_CRT, ca.cert_chain_pem().as_bytes(), 0o644)?;
            sync_dir(dir)?;
            Ok((ca, true))
        }
        (crt, _) => {
            let (present, missing) = if crt {
                (TLS_CRT, TLS_KEY)
            } else {
                (TLS_KEY, TLS_CRT)
            };
            Err(CaError::Incomplete {
                reason: format!(
                    "{} holds {present} but not {missing}: restore {missing}, or remove {present} (and ca.crt) to let the operator generate a new root; workloads trusting the old root will then need the new bundle",
                    dir.display()
                ),
            })
        }
    }
}

impl CertificateAuthority {
    /// The authority as Secret data: `tls.crt`, `tls.key` (PKCS#8 PEM) and `ca.crt`, the layout
    /// of a `kubernetes.io/tls` Secret written by cert-manager.
    #[must_use]
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (TLS_CRT.to_owned(), self.cert_chain_pem().into_bytes()),
            (TLS_KEY.to_owned(), self.key_pem().into_bytes()),
            (CA_CRT.to_owned(), self.bundle().to_pem().into_bytes()),
        ])
    }

    /// Loads the authority from Secret data with the keys `tls.crt`, `tls.key` and optional
    /// `ca.crt` (see [`CertificateAuthority::from_pem`]).
    ///
    /// # Errors
    /// [`CaError::Incomplete`] if `tls.crt` or `tls.key` is missing, [`CaError::InvalidPem`] if a
    /// value is not UTF-8 text, and the errors of [`CertificateAuthority::from_pem`].
    pub fn from_secret_data(
        data: &BTreeMap<String, Vec<u8>>,
        td: &TrustDomain,
    ) -> Result<Self, CaError> {
        let text = |field: &'static str| -> Result<Option<&str>, CaError> {
            data.get(field)
                .map(|bytes| {
                    std::str::from_utf8(bytes).map_err(|_| CaError::InvalidPem {
                        field,
                        reason: "is not UTF-8 text; store the PEM text itself (Kubernetes base64-encodes Secret data once, do not encode it twice)".to_owned(),
                    })
                })
                .transpose()
        };
        let missing = |field: &str| CaError::Incomplete {
            reason: format!(
                "the CA Secret has no `{field}` entry: supply a Secret with tls.crt, tls.key and ca.crt (cert-manager layout), or delete it to let the operator generate a root"
            ),
        };
        let crt = text(TLS_CRT)?.ok_or_else(|| missing(TLS_CRT))?;
        let key = text(TLS_KEY)?.ok_or_else(|| missing(TLS_KEY))?;
        let bundle = text(CA_CRT)?;
        Self::from_pem(crt, key, bundle, td)
    }
}

fn exists(path: &Path) -> Result<bool, CaError> {
    path.try_exists().map_err(|source| CaError::Io {
        action: "check",
        path: path.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

/// Writes `dir/name` atomically with `mode` (see [`crate::fsutil::write_atomic`]).
fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let path = dir.join(name);
    crate::fsutil::write_atomic(&path, contents, mode).map_err(|source| CaError::Io { action: "write", path, source })
}

fn sync_dir(dir: &Path) -> Result<(), CaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CaError::Io {
            action: "sync",
            path: dir.to_owned(),
            source,
        })
}
