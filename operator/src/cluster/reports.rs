//! Per-replica reports: every operator replica serves Config.Watch and Identity.Sign, so each
//! knows only the sidecars connected to it and the certificates it issued. Each replica writes
//! what it knows into its own Lease (`trustmesh-report-<pod>`, annotation
//! `trustmesh.dev/report`) every few seconds; the leader merges the fresh ones, so "enforced by
//! N/M proxies" and `issuedCertificates` count the whole deployment, not the leader's share.
//!
//! A report older than [`STALE_AFTER`] (a replica that died) is ignored. Versions are per
//! replica (each numbers its own views); a proxy enforces when it acknowledged the version its
//! replica sent last, so merging never compares versions across replicas.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::compile::ObjectKey;
use crate::server::config::ProxyState;
use crate::server::{IssuedCounts, ProxyRegistry};

/// Label on report Leases.
pub const REPORT_LABEL: &str = "trustmesh.dev/report";
/// Annotation holding the report JSON.
pub const REPORT_ANNOTATION: &str = "trustmesh.dev/report";
/// How often a replica writes its report.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Reports not renewed for this long are ignored.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// What one replica knows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Connected proxies by identity (`namespace/name`).
    pub proxies: BTreeMap<String, Vec<ProxyEntry>>,
    /// Certificates issued since the replica started, by identity.
    pub issued: BTreeMap<String, i64>,
}

/// One connected proxy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyEntry {
    /// The name it gave.
    pub name: String,
    /// The version its replica sent last.
    pub sent: Option<String>,
    /// The version it acknowledged last.
    pub acked: Option<String>,
}

impl Report {
    /// The report of this replica.
    pub fn of(registry: &ProxyRegistry, issued: &IssuedCounts) -> Self {
        let proxies = registry
            .all()
            .into_iter()
            .map(|(k, ps)| (k.to_string(), ps.iter().map(|p| ProxyEntry { name: p.name.clone(), sent: p.sent_version(), acked: p.acked.clone() }).collect()))
            .collect();
        let issued = issued.lock().map(|m| m.iter().map(|(k, n)| (k.to_string(), *n)).collect()).unwrap_or_default();
        Self { proxies, issued }
    }
}

/// Every replica's reports merged: proxies by identity, and issued certificates summed.
#[derive(Clone, Debug, Default)]
pub struct Merged {
    /// Connected proxies by identity.
    pub proxies: BTreeMap<ObjectKey, Vec<ProxyState>>,
    /// Certificates issued, by identity.
    pub issued: BTreeMap<ObjectKey, i64>,
}

/// Merges reports (pure).
pub fn merge<'a>(reports: impl IntoIterator<Item = &'a Report>) -> Merged {
    let key = |s: &str| s.split_once('/').map(|(ns, name)| ObjectKey { namespace: ns.to_owned(), name: name.to_owned() });
    let mut merged = Merged::default();
    for r in reports {
        for (k, ps) in &r.proxies {
            let Some(k) = key(k) else { continue };
            let states = ps.iter().map(|p| ProxyState::new(&p.name, p.sent.as_deref(), p.acked.as_deref()));
            merged.proxies.entry(k).or_default().extend(states);
        }
        for (k, n) in &r.issued {
            if let Some(k) = key(k) {
                *merged.issued.entry(k).or_default() += n;
            }
        }
    }
    merged
}

fn lease_name(pod: &str) -> String {
    format!("trustmesh-report-{pod}")
}

/// Writes this replica's report into its Lease (created on first use).
pub async fn publish(client: &Client, namespace: &str, pod: &str, report: &Report) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = lease_name(pod);
    let json = serde_json::to_string(report).unwrap_or_default();
    let now = MicroTime(Timestamp::now());
    let patch = serde_json::json!({
        "metadata": {"annotations": {REPORT_ANNOTATION: json}},
        "spec": {"holderIdentity": pod, "renewTime": now},
    });
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: Some([(REPORT_LABEL.to_owned(), "true".to_owned())].into()),
                    annotations: Some([(REPORT_ANNOTATION.to_owned(), json)].into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec { holder_identity: Some(pod.to_owned()), renew_time: Some(now), ..LeaseSpec::default() }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// Reads every fresh report in `namespace` and merges them.
pub async fn collect(client: &Client, namespace: &str, now: Timestamp) -> Result<Merged, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let leases = api.list(&Default::default()).await?;
    let stale = SignedDuration::try_from(STALE_AFTER).unwrap_or(SignedDuration::MAX);
    let reports: Vec<Report> = leases
        .items
        .iter()
        .filter(|l| l.labels().get(REPORT_LABEL).is_some_and(|v| v == "true"))
        .filter(|l| l.spec.as_ref().and_then(|s| s.renew_time.as_ref()).is_some_and(|MicroTime(t)| *t + stale >= now))
        .filter_map(|l| serde_json::from_str(l.annotations().get(REPORT_ANNOTATION)?).ok())
        .collect();
    Ok(merge(&reports))
}

/// Writes this replica's report every [`INTERVAL`] until the process stops.
pub async fn keep_publishing(client: Client, namespace: String, pod: String, registry: Arc<ProxyRegistry>, issued: IssuedCounts) {
    let mut ticker = tokio::time::interval(INTERVAL);
    loop {
        ticker.tick().await;
        if let Err(e) = publish(&client, &namespace, &pod, &Report::of(&registry, &issued)).await {
            tracing::warn!(error = %e, "cannot write this replica's proxy report; retrying");
        }
    }
}

#[cfg(test)]
#[path = "reports_tests.rs"]
mod tests;
