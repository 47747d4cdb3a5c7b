//! Status controllers: keep WorkloadIdentity and AccessPolicy status true, and tell a cluster
//! operator what changed with Events.
//!
//! [`identity_status`] and [`policy_status`] are pure (reports in, status out); [`write_status`]
//! patches only what differs, so an unchanged cluster costs no writes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use trustmesh_api::condition::{self, ACCEPTED, READY, RESOLVED_REFS, SUSPENDED, set_condition};
use trustmesh_api::{AccessPolicy, AccessPolicyStatus, EnforcementStatus, WorkloadIdentity, WorkloadIdentityStatus};

use crate::compile::{IdentityReport, ObjectKey, PolicyReport};
use crate::server::config::ProxyState;
use crate::state::MeshView;

/// Why a status could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The apiserver refused the patch.
    #[error("cannot patch the status of {kind} {key}: {source}; check the operator's RBAC for {kind}/status")]
    Patch {
        /// Resource kind.
        kind: &'static str,
        /// `namespace/name`.
        key: String,
        /// The client error.
        source: kube::Error,
    },
}

impl StatusError {
    /// A metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Patch { kind, .. } => kind,
        }
    }
}

/// The status a WorkloadIdentity should have.
pub fn identity_status(wid: &WorkloadIdentity, report: Option<&IdentityReport>, matched_pods: i32, issued: i64, now: Time) -> WorkloadIdentityStatus {
    let generation = wid.metadata.generation;
    let mut st = wid.status.clone().unwrap_or_default();
    st.spiffe_id = report.and_then(|r| r.spiffe_id.as_ref()).map(ToString::to_string);
    st.matched_pods = matched_pods;
    st.issued_certificates = issued.max(st.issued_certificates);
    st.observed_generation = generation;
    let problem = report.and_then(|r| r.problems.first());
    let ready = match (problem, wid.spec.suspended) {
        (Some(p), _) => condition::condition(READY, false, p.reason(), p.to_string(), generation, now.clone()),
        (None, true) => condition::condition(READY, false, "Suspended", "quarantined: no certificates are issued and every sidecar refuses this identity", generation, now.clone()),
        (None, false) => {
            let warnings: String = report.iter().flat_map(|r| &r.warnings).map(|w| format!("; warning: {w}")).collect();
            let message = format!("certificates are issued for {matched_pods} matched pod(s){warnings}");
            condition::condition(READY, true, "Issuing", message, generation, now.clone())
        }
    };
    set_condition(&mut st.conditions, ready);
    let suspended = if wid.spec.suspended {
        condition::condition(SUSPENDED, true, "Quarantined", "spec.suspended is true", generation, now)
    } else {
        condition::condition(SUSPENDED, false, "Active", "spec.suspended is false", generation, now)
    };
    set_condition(&mut st.conditions, suspended);
    st
}

/// The status an AccessPolicy should have. `proxies` are the target's connected sidecars.
pub fn policy_status(acp: &AccessPolicy, report: Option<&PolicyReport>, proxies: &[ProxyState], now: Time) -> AccessPolicyStatus {
    let generation = acp.metadata.generation;
    let mut st = acp.status.clone().unwrap_or_default();
    st.observed_generation = generation;
    let accepted = match report {
        Some(r) if r.accepted() => condition::condition(ACCEPTED, true, "Compiled", "compiled and distributed to the target's sidecars", generation, now.clone()),
        Some(r) => {
            let first = r.problems.first().map_or("Invalid", |p| p.reason());
            let all: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
            condition::condition(ACCEPTED, false, first, all.join("; "), generation, now.clone())
        }
        None => condition::condition(ACCEPTED, false, "Pending", "not compiled yet", generation, now.clone()),
    };
    set_condition(&mut st.conditions, accepted);
    let unresolved = report.map(|r| r.unresolved_callers.clone()).unwrap_or_default();
    let refs = if unresolved.is_empty() {
        condition::condition(RESOLVED_REFS, true, "Resolved", "every caller resolved to an identity", generation, now)
    } else {
        condition::condition(RESOLVED_REFS, false, "UnresolvedCallers", format!("these callers match nothing until they exist: {}", unresolved.join(", ")), generation, now)
    };
    set_condition(&mut st.conditions, refs);
    st.unresolved_callers = unresolved;
    let total = proxies.len() as i32;
    let enforcing = proxies.iter().filter(|p| p.acked.is_some() && p.acked == p.sent_version()).count() as i32;
    let generation = generation.unwrap_or_default();
    st.enforcement = Some(EnforcementStatus { proxies: total, enforcing, generation, summary: format!("enforced by {enforcing}/{total} proxies at generation {generation}") });
    st
}

/// Conditions compared without their timestamps.
fn same<S: serde::Serialize>(a: &S, b: &S) -> bool {
    let strip = |s: &S| {
        let mut v = serde_json::to_value(s).unwrap_or_default();
        if let Some(cs) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for c in cs {
                c.as_object_mut().map(|o| o.remove("lastTransitionTime"));
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// When the leader's next pass runs without a change to trigger it: every 10 s while passes
/// succeed (a resync), and after a failed pass with exponential backoff from 1 s up to 60 s.
pub fn retry_after(consecutive_failures: u32) -> std::time::Duration {
    match consecutive_failures {
        0 => std::time::Duration::from_secs(10),
        n => std::time::Duration::from_secs(1u64 << (n - 1).min(6)).min(std::time::Duration::from_secs(60)),
    }
}

/// Writes every status that differs from what is stored; emits an Event when a policy's
/// acceptance or an identity's readiness changes. Returns how many statuses were written. A
/// failed write does not stop the others: the first error is returned after every object was
/// tried.
pub async fn write_status(
    client: &kube::Client,
    recorder: Option<&Recorder>,
    view: &MeshView,
    objects: &super::view::ClusterObjects,
    matched: &BTreeMap<ObjectKey, i32>,
    proxies: &dyn Fn(&ObjectKey) -> Vec<ProxyState>,
    issued: &dyn Fn(&ObjectKey) -> i64,
) -> Result<usize, StatusError> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut written = 0;
    let mut first_error = None;
    for wid in &objects.identities {
        let key = ObjectKey::of(wid);
        let desired = identity_status(wid, view.compiled.identities.get(&key), matched.get(&key).copied().unwrap_or(0), issued(&key), now.clone());
        if wid.status.as_ref().is_some_and(|s| same(s, &desired)) {
            continue;
        }
        let was_ready = wid.status.as_ref().and_then(|s| condition::find(&s.conditions, READY)).map(|c| c.status == "True");
        let ready = condition::find(&desired.conditions, READY).cloned();
        if let Err(e) = patch_status::<WorkloadIdentity>(client, &key, json!({ "status": desired }), "WorkloadIdentity").await {
            tracing::warn!(error = %e, "status not written; retrying later");
            first_error.get_or_insert(e);
            continue;
        }
        written += 1;
        if let (Some(rec), Some(c)) = (recorder, ready)
            && was_ready != Some(c.status == "True")
        {
            let kind = if c.status == "True" { EventType::Normal } else { EventType::Warning };
            event(rec, wid, kind, &c.reason, &c.message).await;
        }
    }
    for acp in &objects.policies {
        let key = ObjectKey::of(acp);
        let target = ObjectKey { namespace: key.namespace.clone(), name: acp.spec.target_ref.name.clone() };
        let desired = policy_status(acp, view.compiled.policies.get(&key), &proxies(&target), now.clone());
        if acp.status.as_ref().is_some_and(|s| same(s, &desired)) {
            continue;
        }
        let was = acp.status.as_ref().and_then(|s| condition::find(&s.conditions, ACCEPTED)).map(|c| (c.status.clone(), c.message.clone()));
        let accepted = condition::find(&desired.conditions, ACCEPTED).cloned();
        if let Err(e) = patch_status::<AccessPolicy>(client, &key, json!({ "status": desired }), "AccessPolicy").await {
            tracing::warn!(error = %e, "status not written; retrying later");
            first_error.get_or_insert(e);
            continue;
        }
        written += 1;
        if let (Some(rec), Some(c)) = (recorder, accepted)
            && was != Some((c.status.clone(), c.message.clone()))
        {
            let kind = if c.status == "True" { EventType::Normal } else { EventType::Warning };
            event(rec, acp, kind, &c.reason, &c.message).await;
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

async fn patch_status<K>(client: &kube::Client, key: &ObjectKey, patch: serde_json::Value, kind: &'static str) -> Result<(), StatusError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), &key.namespace);
    api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| StatusError::Patch { kind, key: key.to_string(), source })
}

async fn event<K: Resource<DynamicType = ()>>(rec: &Recorder, obj: &K, kind: EventType, reason: &str, note: &str) {
    let ev = Event { type_: kind, reason: reason.to_owned(), note: Some(note.chars().take(1000).collect()), action: "Reconcile".into(), secondary: None };
    if let Err(e) = rec.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(object = %obj.name_any(), error = %e, "cannot publish an Event");
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
