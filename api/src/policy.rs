//! `AccessPolicy`: which callers may reach a workload, on which ports, methods and paths.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::condition::Condition;

/// Written by the team that owns the *called* workload: the callers that may reach the
/// WorkloadIdentity named in `targetRef`, on which ports, methods and paths. Decision order for a
/// request: an enforced Deny rule that matches denies; else an enforced Allow rule that matches
/// allows; else the default action of the mesh (or of the namespace label
/// `trustmesh.dev/default-policy`). Audit-mode policies are evaluated the same way but only logged.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "trustmesh.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    namespaced,
    status = "AccessPolicyStatus",
    shortname = "acp",
    category = "trustmesh",
    derive = "Default",
    derive = "PartialEq",
    doc = "Which callers may reach a workload identity, on which ports, methods and paths.",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetRef.name", description = "The WorkloadIdentity this policy protects"),
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Accepted", type_ = "string", json_path = ".status.conditions[?(@.type==\"Accepted\")].status"),
    printcolumn(name = "Enforced", type_ = "string", json_path = ".status.enforcement.summary", description = "How many proxies enforce which generation"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[cfg_attr(any(test, feature = "cel"), kube(cel))]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// The workload this policy protects: a WorkloadIdentity in the policy's namespace. Required.
    pub target_ref: TargetRef,

    /// What a matching rule does: `Allow` or `Deny`. Default `Allow`. Deny rules win over Allow
    /// rules.
    #[serde(default)]
    pub action: PolicyAction,

    /// `Enforce` applies the decision; `Audit` only logs what it would have decided ("would deny"),
    /// to try a policy on live traffic first. Default `Enforce`.
    #[serde(default)]
    pub mode: PolicyMode,

    /// The rules; a request matches the policy when it matches any rule. At least 1, at most 64.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<PolicyRule>,
}

/// Names the protected workload.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Kind of the target. Only `WorkloadIdentity` (the default) is supported.
    #[serde(default)]
    pub kind: TargetKind,
    /// Name of the WorkloadIdentity, in the policy's namespace. Required.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds an AccessPolicy can target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum TargetKind {
    /// A WorkloadIdentity in the same namespace.
    #[default]
    WorkloadIdentity,
}

/// What a matching rule does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum PolicyAction {
    /// Allow matching requests (unless an enforced Deny rule also matches).
    #[default]
    Allow,
    /// Deny matching requests, whatever Allow rules say.
    Deny,
}

/// Whether a policy's decisions are applied or only logged.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum PolicyMode {
    /// Apply the decision.
    #[default]
    Enforce,
    /// Only log what the policy would have decided.
    Audit,
}

/// One rule: callers (`from`, any of them) and what they may reach (`to`, any of the entries).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Callers this rule applies to; any entry may match. At least 1, at most 64.
    #[schemars(length(min = 1, max = 64))]
    pub from: Vec<Source>,
    /// What the callers may reach; any entry may match. Default (empty): every port, method and
    /// path of the target. At most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub to: Vec<Destination>,
}

/// A caller: exactly one of `identity`, `spiffeId` or `namespaceSelector`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.identity) ? 1 : 0) + (has(self.spiffeId) ? 1 : 0) + (has(self.namespaceSelector) ? 1 : 0) == 1").message("each from entry names exactly one of identity, spiffeId or namespaceSelector"),
    validation = Rule::new("!has(self.__namespace__) || has(self.identity)").message("from[].namespace qualifies identity; set identity too, or use namespaceSelector for a whole namespace")
)]
pub struct Source {
    /// Name of a WorkloadIdentity whose workloads may call. Resolved to its SPIFFE ID by the
    /// operator; an unknown name is listed in `status.unresolvedCallers` and matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub identity: Option<String>,
    /// Namespace of `identity`. Default: the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
    /// A caller's exact SPIFFE ID, e.g. `spiffe://cluster.local/ns/shop/sa/frontend`, for workloads
    /// that are not described by a WorkloadIdentity here (another cluster of the trust domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 10, max = 2048), regex(pattern = r"^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*$"))]
    pub spiffe_id: Option<String>,
    /// Every workload of the trust domain in the namespaces whose labels match. `{}` selects every
    /// namespace (any authenticated caller of the trust domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// What a caller may reach; every field set must match (ports AND methods AND paths).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("size(self.ports) + size(self.methods) + size(self.paths) > 0").message("a to entry must set at least one of ports, methods or paths; leave out `to` to allow everything")
)]
pub struct Destination {
    /// Target ports (1-65535). Default (empty): every port. At most 64.
    #[serde(default)]
    #[schemars(length(max = 64), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<u16>,
    /// HTTP methods, upper case (`GET`, `POST`, ...). Default (empty): every method. Rules with
    /// methods or paths only allow HTTP requests; on an opaque TCP port such an Allow rule matches
    /// nothing, and such a Deny rule denies the whole connection.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub methods: Vec<HttpMethod>,
    /// Request paths, matched case-sensitively after normalization: exact (`/healthz`), prefix
    /// (`/api/*` matches `/api/` and everything below it, not `/api`) or `*` (every path). Written
    /// in normalized form: starts with `/`, no `//`, no `.` or `..` segments. Default (empty):
    /// every path. At most 64.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024), regex(pattern = r"^(\*|/\*|/[A-Za-z0-9._~!$&'()+,;=:@%/-]*(/\*)?)$")))]
    #[x_kube(validation = Rule::new("self.all(p, !p.contains('//') && !p.matches('(^|/)[.][.]?(/|$)'))").message("paths must be in normalized form: no '//' and no '.' or '..' segments"))]
    pub paths: Vec<String>,
}

/// HTTP methods a rule can name.
#[allow(clippy::upper_case_acronyms, missing_docs)]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum HttpMethod {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    CONNECT,
    OPTIONS,
    TRACE,
    PATCH,
}

impl HttpMethod {
    /// The method's name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GET => "GET",
            Self::HEAD => "HEAD",
            Self::POST => "POST",
            Self::PUT => "PUT",
            Self::DELETE => "DELETE",
            Self::CONNECT => "CONNECT",
            Self::OPTIONS => "OPTIONS",
            Self::TRACE => "TRACE",
            Self::PATCH => "PATCH",
        }
    }
}

/// What the operator observed about an AccessPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` (compiled and distributed, or the reason it was not, naming the field) and
    /// `ResolvedRefs` (every caller resolved).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Callers in `from` that resolve to no identity (`namespace/name`); they match nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved_callers: Vec<String>,
    /// How many of the target's proxies enforce which generation of this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<EnforcementStatus>,
}

/// Enforcement progress of a policy across the target's proxies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnforcementStatus {
    /// Proxies of the target workload connected to the control plane.
    pub proxies: i32,
    /// Of those, proxies that acknowledged `generation`.
    pub enforcing: i32,
    /// The policy generation being rolled out.
    pub generation: i64,
    /// Human-readable summary, e.g. `12/12 at generation 7`.
    pub summary: String,
}
