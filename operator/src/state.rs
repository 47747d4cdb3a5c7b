//! The view of the mesh the servers answer from: compiled policy plus credentials, rebuilt as a
//! whole on every change and swapped atomically (a request sees one consistent view).

use std::collections::BTreeMap;

use crate::compile::{CompiledMesh, MeshSettings, ObjectKey, compile};
use crate::local::LocalState;

/// One consistent view of the desired state.
#[derive(Clone, Debug)]
pub struct MeshView {
    /// Mesh-wide settings.
    pub settings: MeshSettings,
    /// Compiled identities and policies.
    pub compiled: CompiledMesh,
    /// Local mode: WorkloadIdentity key by hex SHA-256 of a join token; with the workload's name.
    pub join_tokens: BTreeMap<String, (String, ObjectKey)>,
    /// Increases with every rebuild.
    pub version: u64,
}

impl MeshView {
    /// Compiles a local-mode state.
    pub fn from_local(state: &LocalState, version: u64) -> Self {
        let compiled = compile(&state.settings, &state.desired);
        let join_tokens = state
            .workloads
            .iter()
            .map(|w| {
                let ns = w.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
                let name = w.metadata.name.clone().unwrap_or_default();
                let key = ObjectKey { namespace: ns.clone(), name: w.spec.identity.clone() };
                (w.spec.join_token_sha256.to_ascii_lowercase(), (format!("{ns}/{name}"), key))
            })
            .collect();
        Self { settings: state.settings.clone(), compiled, join_tokens, version }
    }
}
