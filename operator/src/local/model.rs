//! The files of a local-mode directory: mesh settings and local-only workload entries.

use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};
use trustmesh_core::policy::DefaultAction;
use trustmesh_core::snapshot::Egress;

/// `DIR/mesh.yaml`: mesh-wide settings (what Helm values carry in a cluster).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    /// Trust domain of every SPIFFE ID, e.g. `local.trustmesh`.
    pub trust_domain: String,
    /// `deny` (default), `audit` or `allow`: what happens to calls no enforced rule matches.
    #[serde(default)]
    pub default_action: DefaultAction,
    /// `open` (default) or `locked`: whether sidecars pass through connections to destinations
    /// that are not meshed, or refuse them.
    #[serde(default, skip_serializing_if = "is_open")]
    pub egress: Egress,
    /// Namespace part of the operator's own SPIFFE ID (`.../ns/<this>/sa/trustmesh-operator`).
    #[serde(default = "default_operator_namespace")]
    pub operator_namespace: String,
}

/// The namespace the operator runs in unless configured otherwise.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "trustmesh-system";
/// The operator's service account (last segment of its SPIFFE ID).
pub const OPERATOR_SERVICE_ACCOUNT: &str = "trustmesh-operator";

fn is_open(e: &Egress) -> bool {
    *e == Egress::Allow
}

fn default_operator_namespace() -> String {
    DEFAULT_OPERATOR_NAMESPACE.to_owned()
}

/// A workload outside Kubernetes: which WorkloadIdentity it runs as and the hash of its join token.
/// Written next to the resources as `kind: LocalWorkload`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalWorkload {
    /// `trustmesh.dev/v1alpha1`.
    pub api_version: String,
    /// `LocalWorkload`.
    pub kind: String,
    /// Name and namespace (the identity is looked up in the same namespace).
    pub metadata: ObjectMeta,
    /// What the workload is.
    pub spec: LocalWorkloadSpec,
}

/// The body of a [`LocalWorkload`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalWorkloadSpec {
    /// Name of the WorkloadIdentity (same namespace) this workload runs as.
    pub identity: String,
    /// Where the workload's sidecar accepts inbound mTLS (`host:port`), for callers' routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Hex SHA-256 of the join token in `DIR/tokens/<name>`; the token itself is never stored here.
    pub join_token_sha256: String,
}
