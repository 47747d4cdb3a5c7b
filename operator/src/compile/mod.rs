//! Resources -> per-workload compiled policy.
//!
//! [`compile`] is pure: it takes the desired state (WorkloadIdentities, AccessPolicies, namespace
//! labels) from whichever source is in use (Kubernetes or a local directory) and returns, for each
//! workload, the [`WorkloadPolicy`] its sidecars enforce, plus a report per resource for the status
//! controllers. Everything the CRD schema checks is checked again here, because local mode reads
//! YAML that never went through an apiserver.
//!
//! Fail closed: a policy with any problem is not accepted and none of its rules are installed,
//! except that a rejected *enforced Deny* policy closes its target to every caller of the trust
//! domain until it is fixed (leaving it out would open what it meant to close).

mod problem;
mod resolve;
pub mod selector;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use trustmesh_api::duration::parse_duration;
use trustmesh_api::labels::{DEFAULT_POLICY_LABEL, EGRESS_LABEL};
use trustmesh_api::{AccessPolicy, PolicyAction, PolicyMode, WorkloadIdentity};
use trustmesh_core::policy::{Action, CallerMatch, DefaultAction, Mode, PolicyRef, Rule, WorkloadPolicy};
use trustmesh_core::snapshot::Egress;
use trustmesh_core::spiffe::{SpiffeId, TrustDomain};

pub use problem::Problem;

/// Bounds on `WorkloadIdentity.spec.ttl` (the CRD enforces the same with CEL).
pub const TTL_BOUNDS: (Duration, Duration) = (Duration::from_secs(5 * 60), Duration::from_secs(24 * 3600));

/// Mesh-wide settings that shape compilation.
#[derive(Clone, Debug)]
pub struct MeshSettings {
    /// Trust domain of every SPIFFE ID the mesh issues.
    pub trust_domain: TrustDomain,
    /// What happens to calls no enforced rule matches, unless a namespace label overrides it.
    pub default_action: DefaultAction,
    /// Outbound connections to destinations that are not meshed: passed through (`open`) or
    /// refused (`locked`), unless a namespace label overrides it.
    pub egress: Egress,
    /// Certificate lifetime of identities that set no `ttl`.
    pub default_ttl: Duration,
    /// Longest certificate lifetime any identity may ask for (at most 24h).
    pub max_ttl: Duration,
}

impl MeshSettings {
    /// Settings with the default TTLs (1h default, 24h max).
    pub fn new(trust_domain: TrustDomain, default_action: DefaultAction) -> Self {
        Self { trust_domain, default_action, egress: Egress::Allow, default_ttl: Duration::from_secs(3600), max_ttl: TTL_BOUNDS.1 }
    }
}

/// A namespace as compilation needs it.
#[derive(Clone, Debug, Default)]
pub struct NamespaceInfo {
    /// Name.
    pub name: String,
    /// Labels (namespace selectors and the default-policy override read them).
    pub labels: BTreeMap<String, String>,
}

/// The desired state, from either source.
#[derive(Clone, Debug, Default)]
pub struct DesiredState {
    /// Every WorkloadIdentity.
    pub identities: Vec<WorkloadIdentity>,
    /// Every AccessPolicy.
    pub policies: Vec<AccessPolicy>,
    /// Every namespace that has labels worth knowing (absent namespaces have no labels).
    pub namespaces: Vec<NamespaceInfo>,
}

/// `namespace/name` of a resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a namespaced resource.
    pub fn of<K: ResourceExt>(obj: &K) -> Self {
        Self { namespace: obj.namespace().unwrap_or_default(), name: obj.name_any() }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One workload identity, ready to be served.
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledWorkload {
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Service account whose pods it covers.
    pub service_account: String,
    /// Optional narrowing of those pods.
    pub pod_selector: Option<LabelSelector>,
    /// Certificate lifetime.
    pub ttl: Duration,
    /// Quarantined: no certificates, every sidecar refuses it.
    pub suspended: bool,
    /// The inbound policy its sidecars enforce.
    pub policy: WorkloadPolicy,
    /// Inbound ports authorized per connection without protocol detection.
    pub opaque_ports: BTreeSet<u16>,
    /// What its sidecars do with connections to destinations that are not meshed.
    pub egress: Egress,
}

/// What compilation found about one WorkloadIdentity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdentityReport {
    /// The SPIFFE ID, when it could be formed.
    pub spiffe_id: Option<SpiffeId>,
    /// Problems that keep the identity from being served (empty: Ready).
    pub problems: Vec<Problem>,
    /// Problems that do not: a safe fallback applies until they are fixed.
    pub warnings: Vec<Problem>,
}

/// What compilation found about one AccessPolicy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyReport {
    /// `metadata.generation` that was compiled.
    pub generation: i64,
    /// The protected workload's SPIFFE ID, when the target resolved.
    pub target: Option<SpiffeId>,
    /// Problems that keep the policy from being accepted.
    pub problems: Vec<Problem>,
    /// Callers that resolve to no identity (`namespace/name`, or a selector that selects nothing).
    pub unresolved_callers: Vec<String>,
}

impl PolicyReport {
    /// Accepted when there are no problems (unresolved callers only match nothing).
    pub fn accepted(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The output of [`compile`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompiledMesh {
    /// Servable workloads by WorkloadIdentity.
    pub workloads: BTreeMap<ObjectKey, CompiledWorkload>,
    /// A report for every WorkloadIdentity.
    pub identities: BTreeMap<ObjectKey, IdentityReport>,
    /// A report for every AccessPolicy.
    pub policies: BTreeMap<ObjectKey, PolicyReport>,
    /// SPIFFE IDs of every suspended WorkloadIdentity, servable or not: a quarantine holds even
    /// when the resource later gains a problem (a TTL over a lowered maximum, say).
    pub suspended: BTreeSet<SpiffeId>,
}

impl CompiledMesh {
    /// SPIFFE IDs of suspended identities (the revocation list every sidecar gets).
    pub fn revoked(&self) -> BTreeSet<SpiffeId> {
        self.suspended.clone()
    }
}

/// Compiles the desired state. Deterministic: the same input gives the same output.
pub fn compile(settings: &MeshSettings, state: &DesiredState) -> CompiledMesh {
    let namespaces: BTreeMap<&str, &NamespaceInfo> = state.namespaces.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut mesh = CompiledMesh::default();

    // Identities, oldest first so a later duplicate of a service account is the one refused.
    let mut identities: Vec<&WorkloadIdentity> = state.identities.iter().collect();
    identities.sort_by_key(|w| (w.metadata.creation_timestamp.clone().map(|t| t.0), ObjectKey::of(*w)));
    let mut by_id: BTreeMap<SpiffeId, ObjectKey> = BTreeMap::new();
    for wid in identities {
        let key = ObjectKey::of(wid);
        let (report, workload) = compile_identity(settings, &namespaces, wid, &by_id);
        let suspended = report.spiffe_id.clone().filter(|_| wid.spec.suspended);
        if let Some(w) = workload {
            by_id.insert(w.spiffe_id.clone(), key.clone());
            mesh.workloads.insert(key.clone(), w);
        } else if let Some(id) = &suspended {
            // A suspended identity keeps its claim on the service account even when it has
            // problems, so a newer duplicate cannot start issuing the quarantined ID.
            by_id.entry(id.clone()).or_insert_with(|| key.clone());
        }
        mesh.suspended.extend(suspended);
        mesh.identities.insert(key, report);
    }

    // Policies in a stable order; their rules land in the target workload's policy.
    let mut policies: Vec<&AccessPolicy> = state.policies.iter().collect();
    policies.sort_by_key(|p| ObjectKey::of(*p));
    let resolver = resolve::Resolver { settings, mesh: &mesh, namespaces: &state.namespaces };
    let mut rules_by_target: BTreeMap<ObjectKey, Vec<Rule>> = BTreeMap::new();
    let mut reports = BTreeMap::new();
    for policy in policies {
        let (report, rules, target) = resolver.policy(policy);
        if let Some(target) = target {
            rules_by_target.entry(target).or_default().extend(rules);
        }
        reports.insert(ObjectKey::of(policy), report);
    }
    mesh.policies = reports;
    for (target, rules) in rules_by_target {
        if let Some(w) = mesh.workloads.get_mut(&target) {
            w.policy.rules = rules;
        }
    }
    mesh
}

fn compile_identity(
    settings: &MeshSettings,
    namespaces: &BTreeMap<&str, &NamespaceInfo>,
    wid: &WorkloadIdentity,
    taken: &BTreeMap<SpiffeId, ObjectKey>,
) -> (IdentityReport, Option<CompiledWorkload>) {
    let namespace = wid.namespace().unwrap_or_default();
    let mut report = IdentityReport::default();
    let id = match SpiffeId::for_service_account(&settings.trust_domain, &namespace, &wid.spec.service_account) {
        Ok(id) => Some(id),
        Err(e) => {
            report.problems.push(Problem::BadServiceAccount { value: wid.spec.service_account.clone(), reason: e.to_string() });
            None
        }
    };
    report.spiffe_id = id.clone();
    if let Some(owner) = id.as_ref().and_then(|id| taken.get(id)) {
        report.problems.push(Problem::DuplicateServiceAccount { service_account: wid.spec.service_account.clone(), owner: owner.to_string() });
    }
    let max = settings.max_ttl.min(TTL_BOUNDS.1);
    let ttl = match wid.spec.ttl.as_deref().map_or(Ok(settings.default_ttl.min(max)), parse_duration) {
        Ok(ttl) if ttl >= TTL_BOUNDS.0 && ttl <= max => Some(ttl),
        Ok(_) => {
            report.problems.push(Problem::TtlOutOfBounds { value: wid.spec.ttl.clone().unwrap_or_default(), max: format_duration(max) });
            None
        }
        Err(e) => {
            report.problems.push(Problem::BadTtl { reason: e.to_string() });
            None
        }
    };
    if let Some(sel) = &wid.spec.pod_selector
        && let Err(e) = selector::validate(sel)
    {
        report.problems.push(Problem::BadSelector { field: "spec.podSelector".into(), reason: e.to_string() });
    }
    if wid.spec.opaque_ports.contains(&0) {
        report.problems.push(Problem::BadPort { field: "spec.opaquePorts".into() });
    }
    // A bad namespace label does not stop the identity: the mesh default applies (deny unless
    // the mesh is configured otherwise), and a bad egress mode locks egress (fail closed).
    let ns_labels = namespaces.get(namespace.as_str()).map(|n| &n.labels);
    let default_action = namespace_setting(ns_labels, &namespace, DEFAULT_POLICY_LABEL, settings.default_action, (settings.default_action, "the mesh default applies"), &mut report.warnings);
    let egress = namespace_setting(ns_labels, &namespace, EGRESS_LABEL, settings.egress, (Egress::Deny, "egress is locked"), &mut report.warnings);
    let workload = match (id, ttl) {
        (Some(spiffe_id), Some(ttl)) if report.problems.is_empty() => Some(CompiledWorkload {
            policy: WorkloadPolicy { workload: spiffe_id.clone(), default_action, rules: vec![] },
            spiffe_id,
            service_account: wid.spec.service_account.clone(),
            pod_selector: wid.spec.pod_selector.clone(),
            ttl,
            suspended: wid.spec.suspended,
            opaque_ports: wid.spec.opaque_ports.iter().copied().collect(),
            egress,
        }),
        _ => None,
    };
    (report, workload)
}

/// A namespace's override of a mesh setting, read from `label`: `default` without the label; a
/// value that does not parse is a warning and `fallback` applies.
fn namespace_setting<T: std::str::FromStr<Err = String>>(
    labels: Option<&BTreeMap<String, String>>,
    namespace: &str,
    label: &'static str,
    default: T,
    (fallback, applies): (T, &'static str),
    warnings: &mut Vec<Problem>,
) -> T {
    match labels.and_then(|l| l.get(label)).map(|v| v.parse::<T>()) {
        None => default,
        Some(Ok(v)) => v,
        Some(Err(reason)) => {
            warnings.push(Problem::BadNamespaceLabel { namespace: namespace.to_owned(), label, reason, fallback: applies });
            fallback
        }
    }
}

/// `1h30m` style rendering of a duration (whole seconds).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 || out.is_empty() {
        out += &format!("{s}s");
    }
    out
}

fn action(a: PolicyAction) -> Action {
    match a {
        PolicyAction::Allow => Action::Allow,
        PolicyAction::Deny => Action::Deny,
    }
}

fn mode(m: PolicyMode) -> Mode {
    match m {
        PolicyMode::Enforce => Mode::Enforce,
        PolicyMode::Audit => Mode::Audit,
    }
}

/// The rule installed for a rejected enforced Deny policy: every caller of the trust domain is
/// denied everything (rule index `u32::MAX` marks it in logs as "policy rejected, failing closed").
fn fail_closed_rule(settings: &MeshSettings, policy: PolicyRef) -> Rule {
    Rule {
        policy,
        rule_index: u32::MAX,
        action: Action::Deny,
        mode: Mode::Enforce,
        from: vec![CallerMatch::TrustDomain(settings.trust_domain.clone())],
        to: vec![],
    }
}

#[cfg(test)]
mod tests;
