//! `trustmesh-operator local init DIR`: a ready example directory, and join tokens.

use std::path::PathBuf;

use ring::rand::{SecureRandom, SystemRandom};

use super::{LocalDir, LocalError, write_file};
use crate::ca::load_or_generate_dir;
use trustmesh_core::spiffe::TrustDomain;

/// What `init` created, for the command to print.
#[derive(Debug)]
pub struct InitReport {
    /// The example workload's name.
    pub workload: String,
    /// Where its join token is.
    pub token_path: PathBuf,
    /// The trust bundle.
    pub bundle_path: PathBuf,
}

/// A fresh join token and the hex SHA-256 stored in place of it.
pub fn new_join_token() -> Result<(String, String), ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok((token.clone(), token_sha256(&token)))
}

/// Hex SHA-256 of a join token.
pub fn token_sha256(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Registers another local workload: a WorkloadIdentity `name` (service account `name`) in
/// `namespace`, a LocalWorkload for it with `address`, and a fresh join token in `tokens/<name>`.
/// Returns the token's path.
pub fn add_workload(dir: &LocalDir, namespace: &str, name: &str, address: Option<&str>) -> Result<PathBuf, LocalError> {
    let (token, hash) = new_join_token().map_err(|_| LocalError::Io {
        path: dir.token(name),
        source: std::io::Error::other("the system random number generator failed"),
    })?;
    let tokens = dir.root().join("tokens");
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&tokens)
        .map_err(|source| LocalError::Io { path: tokens.clone(), source })?;
    write_file(&dir.token(name), format!("{token}\n").as_bytes(), 0o600)?;
    let address = address.map(|a| format!("  address: \"{a}\"\n")).unwrap_or_default();
    let yaml = format!(
        "apiVersion: trustmesh.dev/v1alpha1\nkind: WorkloadIdentity\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  serviceAccount: {name}\n\
---\napiVersion: trustmesh.dev/v1alpha1\nkind: LocalWorkload\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  identity: {name}\n{address}  joinTokenSha256: {hash}\n"
    );
    write_file(&dir.resources().join(format!("workload-{namespace}-{name}.yaml")), yaml.as_bytes(), 0o644)?;
    Ok(dir.token(name))
}

/// Writes a ready example: CA, bundle, `mesh.yaml`, a WorkloadIdentity `demo` in namespace
/// `default` with a LocalWorkload entry, and its join token in `tokens/demo` (0600).
pub fn init(dir: &LocalDir, trust_domain: &TrustDomain) -> Result<InitReport, LocalError> {
    if dir.mesh_config().exists() {
        return Err(LocalError::AlreadyInitialized(dir.root().to_owned()));
    }
    let (ca, _) = load_or_generate_dir(&dir.ca_dir(), trust_domain).map_err(|source| LocalError::Ca { dir: dir.ca_dir(), source })?;
    write_file(&dir.bundle_pem(), ca.bundle().to_pem().as_bytes(), 0o644)?;
    write_file(&dir.bundle_jwks(), ca.bundle().to_spiffe_jwks(ca.bundle().sequence(), 300).as_bytes(), 0o644)?;
    let mesh = format!(
        "# Mesh-wide settings (what Helm values carry in a cluster).\ntrustDomain: {td}\n# deny | audit | allow: what happens to calls no enforced rule matches\ndefaultAction: deny\n",
        td = trust_domain.as_str()
    );
    let (token, hash) = new_join_token().map_err(|_| LocalError::Io {
        path: dir.token("demo"),
        source: std::io::Error::other("the system random number generator failed"),
    })?;
    let tokens = dir.root().join("tokens");
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&tokens)
        .map_err(|source| LocalError::Io { path: tokens.clone(), source })?;
    write_file(&dir.token("demo"), format!("{token}\n").as_bytes(), 0o600)?;
    let resources = format!(
        "# One workload identity and the local workload that runs as it.\n\
apiVersion: trustmesh.dev/v1alpha1\nkind: WorkloadIdentity\nmetadata:\n  name: demo\n  namespace: default\nspec:\n  serviceAccount: demo\n  ttl: 1h\n\
---\napiVersion: trustmesh.dev/v1alpha1\nkind: LocalWorkload\nmetadata:\n  name: demo\n  namespace: default\nspec:\n  identity: demo\n  # SHA-256 of the join token in tokens/demo\n  joinTokenSha256: {hash}\n"
    );
    write_file(&dir.resources().join("demo.yaml"), resources.as_bytes(), 0o644)?;
    // mesh.yaml last: its presence marks a complete directory.
    write_file(&dir.mesh_config(), mesh.as_bytes(), 0o644)?;
    Ok(InitReport { workload: "demo".into(), token_path: dir.token("demo"), bundle_path: dir.bundle_pem() })
}
