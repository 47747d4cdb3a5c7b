//! `WorkloadIdentity`: one SPIFFE identity for the pods of one service account.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::condition::Condition;

/// Registers the pods of one service account (optionally narrowed by `podSelector`) as one
/// workload identity. Their sidecars get short-lived X.509-SVIDs for the SPIFFE ID
/// `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>`. A pod whose service account has no
/// WorkloadIdentity gets no certificate and therefore no mesh traffic.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "trustmesh.dev",
    version = "v1alpha1",
    kind = "WorkloadIdentity",
    namespaced,
    status = "WorkloadIdentityStatus",
    shortname = "wid",
    category = "trustmesh",
    derive = "Default",
    derive = "PartialEq",
    doc = "Registers the pods of one service account as one SPIFFE workload identity.",
    printcolumn(name = "SPIFFE ID", type_ = "string", json_path = ".status.spiffeId", description = "The SPIFFE ID the identity's certificates carry"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether certificates can be issued"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspended", description = "Quarantined: no certificates, connections refused"),
    printcolumn(name = "Pods", type_ = "integer", json_path = ".status.matchedPods", description = "Pods this identity selects"),
    printcolumn(name = "TTL", type_ = "string", json_path = ".spec.ttl", priority = 1, description = "Certificate lifetime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[cfg_attr(any(test, feature = "cel"), kube(cel))]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentitySpec {
    /// Name of the service account whose pods get this identity (a DNS-1123 subdomain, as
    /// Kubernetes requires of service account names). Required. It is the last segment of the
    /// SPIFFE ID and cannot be changed after creation: create a new WorkloadIdentity instead.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("serviceAccount is immutable: the SPIFFE ID derives from it; create a new WorkloadIdentity instead"))]
    pub service_account: String,

    /// Narrows the identity to the pods of the service account that match these labels. Default:
    /// every pod of the service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,

    /// Lifetime of issued certificates, written as hours, minutes and seconds (`1h`, `30m`,
    /// `1h30m`). Default: the mesh's default TTL (Helm value `certificates.defaultTtl`, 1h unless
    /// changed); at least `5m`, at most `24h` (and never more than `certificates.maxTtl`).
    /// Sidecars renew at half-life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 16), regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"))]
    #[x_kube(validation = Rule::new("self != '' && duration(self) >= duration('5m') && duration(self) <= duration('24h')").message("ttl must be between 5m and 24h, written like 1h or 30m"))]
    pub ttl: Option<String>,

    /// Ports on which the app speaks a protocol that is not HTTP, above all one where the server
    /// speaks first (databases, SMTP, ...). Connections to them are authorized once, by caller
    /// and port, as soon as the TLS handshake ends, without waiting to detect HTTP; rules with
    /// methods or paths do not apply there (an Allow rule limited to them matches nothing, a Deny
    /// rule limited to them denies the connection). Every other port carries HTTP/1.1 or HTTP/2
    /// only: a connection that is not HTTP there is refused. Default: empty. At most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(range(min = 1, max = 65535)))]
    pub opaque_ports: Vec<u16>,

    /// Quarantine switch. `true` stops certificate issuance at once and makes every sidecar refuse
    /// new connections from and to this identity and close the open ones. Default `false`.
    #[serde(default)]
    pub suspended: bool,
}

/// What the operator observed about a WorkloadIdentity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentityStatus {
    /// The SPIFFE ID issued certificates carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Number of running pods this identity selects.
    #[serde(default)]
    pub matched_pods: i32,
    /// Number of certificates issued for this identity since the operator started.
    #[serde(default)]
    pub issued_certificates: i64,
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (certificates can be issued) and `Suspended` (quarantined).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
