//! Local mode: the desired state from a directory instead of a Kubernetes API.
//!
//! Layout of `DIR`:
//!
//! ```text
//! mesh.yaml            trust domain and default action
//! resources/*.yaml     WorkloadIdentity, AccessPolicy, Namespace (labels) and LocalWorkload documents
//! ca/                  tls.crt, tls.key (0600), ca.crt: the CA, created on first start
//! bundle.pem           the trust bundle (PEM), rewritten on start
//! bundle.jwks          the trust bundle in the SPIFFE bundle format
//! tokens/<name>        join tokens (0600), written by `local init` and `local add-workload`
//! ```
//!
//! [`LocalDir::load`] reads everything into the same [`DesiredState`] the Kubernetes source
//! produces; the watcher re-reads it when a file changes and keeps the last good state when a
//! file is broken.

pub mod init;
pub mod model;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use serde_json::Value;
use trustmesh_api::{AccessPolicy, WorkloadIdentity};
use trustmesh_core::spiffe::{SpiffeId, TrustDomain};

use crate::compile::{DesiredState, MeshSettings, NamespaceInfo};
pub use init::{InitReport, init};
use model::{LocalWorkload, MeshConfig, OPERATOR_SERVICE_ACCOUNT};

/// What went wrong reading or writing a local-mode directory.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A YAML document is malformed or of an unknown kind.
    #[error("{path}, document {index}: {reason}")]
    Document {
        /// The file.
        path: PathBuf,
        /// 0-based document index in the file.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// `mesh.yaml` is missing or invalid.
    #[error("{path}: {reason}; run `trustmesh-operator local init DIR` to create a valid directory")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `local init` into a directory that already holds a mesh.
    #[error("{0} already holds a mesh (mesh.yaml exists); pick an empty directory or delete it first")]
    AlreadyInitialized(PathBuf),
    /// The CA could not be created or loaded.
    #[error("certificate authority in {dir}: {source}")]
    Ca {
        /// The CA directory.
        dir: PathBuf,
        /// The CA's error.
        source: crate::ca::CaError,
    },
}

/// Everything local mode knows after reading the directory.
#[derive(Clone, Debug)]
pub struct LocalState {
    /// Mesh settings from `mesh.yaml`.
    pub settings: MeshSettings,
    /// Resources, as the compiler takes them.
    pub desired: DesiredState,
    /// Local-only workload entries.
    pub workloads: Vec<LocalWorkload>,
    /// The operator's own SPIFFE ID.
    pub operator_id: SpiffeId,
}

/// A local-mode directory.
#[derive(Clone, Debug)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// The directory at `root` (nothing is read yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `DIR/mesh.yaml`.
    pub fn mesh_config(&self) -> PathBuf {
        self.root.join("mesh.yaml")
    }
    /// `DIR/resources`.
    pub fn resources(&self) -> PathBuf {
        self.root.join("resources")
    }
    /// `DIR/ca`.
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }
    /// `DIR/bundle.pem`.
    pub fn bundle_pem(&self) -> PathBuf {
        self.root.join("bundle.pem")
    }
    /// `DIR/bundle.jwks`.
    pub fn bundle_jwks(&self) -> PathBuf {
        self.root.join("bundle.jwks")
    }
    /// `DIR/tokens/<name>`.
    pub fn token(&self, name: &str) -> PathBuf {
        self.root.join("tokens").join(name)
    }

    /// Reads `mesh.yaml` and every `resources/*.yaml` (in name order).
    pub fn load(&self) -> Result<LocalState, LocalError> {
        let config_path = self.mesh_config();
        let text = read(&config_path)?;
        let config: MeshConfig =
            serde_saphyr::from_str(&text).map_err(|e| LocalError::Config { path: config_path.clone(), reason: e.to_string() })?;
        let trust_domain =
            TrustDomain::new(&config.trust_domain).map_err(|e| LocalError::Config { path: config_path.clone(), reason: format!("trustDomain: {e}") })?;
        let operator_id = SpiffeId::for_service_account(&trust_domain, &config.operator_namespace, OPERATOR_SERVICE_ACCOUNT)
            .map_err(|e| LocalError::Config { path: config_path.clone(), reason: format!("operatorNamespace: {e}") })?;
        let settings = MeshSettings { egress: config.egress, ..MeshSettings::new(trust_domain, config.default_action) };

        let mut desired = DesiredState::default();
        let mut workloads = Vec::new();
        for path in self.resource_files()? {
            let text = read(&path)?;
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .map_err(|e| LocalError::Document { path: path.clone(), index: 0, reason: format!("not valid YAML: {e}") })?;
            for (index, doc) in docs.into_iter().enumerate().filter(|(_, d)| !d.is_null()) {
                let bad = |reason: String| LocalError::Document { path: path.clone(), index, reason };
                let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
                match kind.as_str() {
                    "WorkloadIdentity" => desired.identities.push(typed::<WorkloadIdentity>(doc).map_err(bad)?),
                    "AccessPolicy" => desired.policies.push(typed::<AccessPolicy>(doc).map_err(bad)?),
                    "LocalWorkload" => workloads.push(typed::<LocalWorkload>(doc).map_err(bad)?),
                    "Namespace" => {
                        let ns: Namespace = typed(doc).map_err(bad)?;
                        desired.namespaces.push(NamespaceInfo {
                            name: ns.metadata.name.unwrap_or_default(),
                            labels: ns.metadata.labels.unwrap_or_default(),
                        });
                    }
                    other => {
                        return Err(bad(format!(
                            "kind {other:?} is not one local mode reads; use WorkloadIdentity, AccessPolicy, LocalWorkload or Namespace"
                        )));
                    }
                }
            }
        }
        Ok(LocalState { settings, desired, workloads, operator_id })
    }

    /// A cheap fingerprint of the inputs (names, sizes, modification times) to notice changes.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let files = self.resource_files().unwrap_or_default();
        for p in std::iter::once(self.mesh_config()).chain(files) {
            p.hash(&mut h);
            if let Ok(m) = std::fs::metadata(&p) {
                m.len().hash(&mut h);
                m.modified().ok().hash(&mut h);
            }
        }
        h.finish()
    }

    fn resource_files(&self) -> Result<Vec<PathBuf>, LocalError> {
        let dir = self.resources();
        let entries = std::fs::read_dir(&dir).map_err(|source| LocalError::Io { path: dir.clone(), source })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        Ok(files)
    }
}

/// Gives resources without `metadata.generation` one, as the apiserver would: 1 when new, the
/// previous generation when the spec did not change, the previous plus one when it did.
pub fn carry_generations(prev: Option<&LocalState>, next: &mut LocalState) {
    fn carry<T: kube::Resource, S: PartialEq>(prev: &[T], next: &mut [T], spec: impl Fn(&T) -> &S) {
        for obj in next.iter_mut().filter(|o| o.meta().generation.is_none()) {
            let key = (obj.meta().namespace.clone(), obj.meta().name.clone());
            let before = prev.iter().find(|p| (p.meta().namespace.clone(), p.meta().name.clone()) == key);
            let generation = match before {
                Some(b) if spec(b) == spec(obj) => b.meta().generation.unwrap_or(1),
                Some(b) => b.meta().generation.unwrap_or(1) + 1,
                None => 1,
            };
            obj.meta_mut().generation = Some(generation);
        }
    }
    let empty = DesiredState::default();
    let prev = prev.map_or(&empty, |p| &p.desired);
    carry(&prev.identities, &mut next.desired.identities, |w| &w.spec);
    carry(&prev.policies, &mut next.desired.policies, |p| &p.spec);
}

/// Local workloads by hex SHA-256 of their join token.
pub fn workloads_by_token_hash(workloads: &[LocalWorkload]) -> BTreeMap<String, &LocalWorkload> {
    workloads.iter().map(|w| (w.spec.join_token_sha256.to_ascii_lowercase(), w)).collect()
}

fn typed<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T, String> {
    serde_json::from_value(doc).map_err(|e| e.to_string())
}

fn read(path: &Path) -> Result<String, LocalError> {
    std::fs::read_to_string(path).map_err(|source| LocalError::Io { path: path.to_owned(), source })
}

/// Writes `contents` to `path` with the given mode, atomically (see [`crate::fsutil::write_atomic`]).
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), LocalError> {
    crate::fsutil::write_atomic(path, contents, mode).map_err(|source| LocalError::Io { path: path.to_owned(), source })
}
