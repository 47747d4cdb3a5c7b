//! The view of the mesh the servers answer from: compiled policy plus credentials, rebuilt as a
//! whole on every change and swapped atomically (a request sees one consistent view).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use trustmesh_core::snapshot::{Destination, Snapshot};

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
    /// Where workloads accept connections (pod or service address), and the identities serving there.
    pub addresses: BTreeMap<SocketAddr, BTreeSet<ObjectKey>>,
    /// Increases with every rebuild.
    pub version: u64,
    /// Snapshot contents already serialized for this view, per workload (shared by its replicas).
    pub cache: SnapshotCache,
}

/// Per-view memo of each workload's snapshot JSON: a change to the view serializes each
/// workload's snapshot once, however many replicas stream it.
#[derive(Clone, Debug, Default)]
pub struct SnapshotCache(std::sync::Arc<std::sync::Mutex<BTreeMap<ObjectKey, Option<std::sync::Arc<String>>>>>);

impl MeshView {
    /// Compiles a local-mode state.
    pub fn from_local(state: &LocalState, version: u64) -> Self {
        let compiled = compile(&state.settings, &state.desired);
        let mut join_tokens: BTreeMap<String, (String, ObjectKey)> = BTreeMap::new();
        let mut shared = BTreeSet::new();
        for w in &state.workloads {
            let ns = w.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
            let name = w.metadata.name.clone().unwrap_or_default();
            let key = ObjectKey { namespace: ns.clone(), name: w.spec.identity.clone() };
            let hash = w.spec.join_token_sha256.to_ascii_lowercase();
            if let Some((other, _)) = join_tokens.insert(hash.clone(), (format!("{ns}/{name}"), key)) {
                tracing::error!(workloads = %format!("{other} and {ns}/{name}"), "two LocalWorkloads share a join token: neither is accepted until each has its own (local add-workload makes one)");
                shared.insert(hash);
            }
        }
        // A token two workloads share proves neither: fail closed for both.
        join_tokens.retain(|hash, _| !shared.contains(hash));
        let addresses = state
            .workloads
            .iter()
            .filter_map(|w| {
                let addr: SocketAddr = w.spec.address.as_deref()?.parse().ok()?;
                let ns = w.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
                Some((addr, BTreeSet::from([ObjectKey { namespace: ns, name: w.spec.identity.clone() }])))
            })
            .collect();
        Self { settings: state.settings.clone(), compiled, join_tokens, addresses, version, cache: SnapshotCache::default() }
    }

    /// The snapshot of one identity as JSON, without its version (the stream sends the version
    /// beside it), computed once per view. `None` when the identity is unknown or not servable.
    pub fn snapshot_json(&self, identity: &ObjectKey) -> Option<std::sync::Arc<String>> {
        let mut cache = self.cache.0.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(identity.clone())
            .or_insert_with(|| {
                let mut s = self.snapshot_for(identity)?;
                s.version = String::new();
                serde_json::to_string(&s).ok().map(std::sync::Arc::new)
            })
            .clone()
    }

    /// The snapshot the sidecars of one WorkloadIdentity enforce: its inbound policy, every meshed
    /// destination with the identity expected there, and the revocation list. `None` when the
    /// identity is unknown or not servable.
    pub fn snapshot_for(&self, identity: &ObjectKey) -> Option<Snapshot> {
        let workload = self.compiled.workloads.get(identity)?;
        let destinations = self
            .addresses
            .iter()
            .filter_map(|(addr, keys)| {
                let identities: BTreeSet<_> = keys.iter().filter_map(|k| self.compiled.workloads.get(k)).map(|w| w.spiffe_id.clone()).collect();
                (!identities.is_empty()).then_some((*addr, Destination { identities }))
            })
            .collect();
        Some(Snapshot {
            version: self.version.to_string(),
            inbound: workload.policy.clone(),
            destinations,
            egress: workload.egress,
            revoked: self.compiled.revoked(),
            opaque_ports: workload.opaque_ports.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use trustmesh_core::policy::DefaultAction;
    use trustmesh_core::spiffe::{SpiffeId, TrustDomain};

    use super::*;
    use crate::compile::DesiredState;
    use crate::local::model::LocalWorkload;

    fn workload(name: &str, identity: &str, hash: &str) -> LocalWorkload {
        serde_json::from_value(serde_json::json!({"apiVersion": "trustmesh.dev/v1alpha1", "kind": "LocalWorkload",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"identity": identity, "joinTokenSha256": hash}}))
        .expect("a LocalWorkload")
    }

    #[test]
    fn a_join_token_two_workloads_share_proves_neither() {
        let td = TrustDomain::new("local.trustmesh").unwrap();
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let state = LocalState {
            settings: MeshSettings::new(td.clone(), DefaultAction::Deny),
            desired: DesiredState::default(),
            workloads: vec![workload("web-1", "web", &a), workload("db-1", "db", &a), workload("api-1", "api", &b)],
            operator_id: SpiffeId::from_segments(&td, &["operator"]).unwrap(),
        };
        let view = MeshView::from_local(&state, 1);
        assert!(!view.join_tokens.contains_key(&a), "a shared token must not authenticate as either workload");
        assert_eq!(view.join_tokens[&b].0, "default/api-1");
        assert!(!view.join_tokens.contains_key(&c));
    }
}
