//! Status controllers against an in-memory API (kube-fake-client): statuses written, idempotent,
//! and problems named by field.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube_fake_client::ClientBuilder;
use serde_json::json;
use trustmesh_api::condition::{ACCEPTED, READY, RESOLVED_REFS, SUSPENDED, find};
use trustmesh_api::{AccessPolicy, WorkloadIdentity};
use trustmesh_core::policy::DefaultAction;
use trustmesh_core::spiffe::TrustDomain;

use super::*;
use crate::cluster::view::{ClusterObjects, view};
use crate::compile::MeshSettings;

fn wid(name: &str, spec: serde_json::Value) -> WorkloadIdentity {
    serde_json::from_value(json!({"apiVersion": "trustmesh.dev/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": {"name": name, "namespace": "shop", "generation": 3}, "spec": spec})).unwrap()
}

fn acp(name: &str, spec: serde_json::Value) -> AccessPolicy {
    serde_json::from_value(json!({"apiVersion": "trustmesh.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": "shop", "generation": 7}, "spec": spec})).unwrap()
}

fn settings() -> MeshSettings {
    MeshSettings::new(TrustDomain::new("cluster.local").unwrap(), DefaultAction::Deny)
}

fn pod(name: &str, sa: &str, ip: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop", "labels": {"app": sa}},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip}})).unwrap()
}

#[tokio::test]
async fn statuses_are_written_once_and_name_problems() {
    let objs = ClusterObjects {
        identities: vec![wid("orders", json!({"serviceAccount": "orders"})), wid("frontend", json!({"serviceAccount": "frontend", "suspended": true}))],
        policies: vec![
            acp("orders-callers", json!({"targetRef": {"name": "orders"}, "rules": [{"from": [{"identity": "frontend"}, {"identity": "ghost"}]}]})),
            acp("broken", json!({"targetRef": {"name": "orders"}, "rules": [{"from": [{"identity": "frontend"}], "to": [{"paths": ["/a/../b"]}]}]})),
        ],
        pods: vec![pod("orders-1", "orders", "10.0.0.5"), pod("orders-2", "orders", "10.0.0.6")],
        ..Default::default()
    };
    let client = ClientBuilder::new()
        .with_resource::<WorkloadIdentity>()
        .with_resource::<AccessPolicy>()
        .with_status_subresource::<WorkloadIdentity>()
        .with_status_subresource::<AccessPolicy>()
        .with_object(objs.identities[0].clone())
        .with_object(objs.identities[1].clone())
        .with_object(objs.policies[0].clone())
        .with_object(objs.policies[1].clone())
        .build()
        .await
        .expect("fake client");
    let (mesh, matched) = view(&settings(), &objs, 1);
    assert_eq!(matched.values().copied().collect::<Vec<_>>(), [2], "two running orders pods");
    assert!(mesh.addresses.contains_key(&"10.0.0.5:8080".parse().unwrap()), "pod addresses are meshed destinations");

    let none = |_: &ObjectKey| Vec::new();
    let issued = |_: &ObjectKey| 4;
    let written = write_status(&client, None, &mesh, &objs, &matched, &none, &issued).await.expect("statuses written");
    assert_eq!(written, 4);

    let wids: Api<WorkloadIdentity> = Api::namespaced(client.clone(), "shop");
    let orders = wids.get("orders").await.unwrap().status.unwrap();
    assert_eq!(orders.spiffe_id.as_deref(), Some("spiffe://cluster.local/ns/shop/sa/orders"));
    assert_eq!((orders.matched_pods, orders.issued_certificates, orders.observed_generation), (2, 4, Some(3)));
    assert_eq!(find(&orders.conditions, READY).unwrap().status, "True");
    let frontend = wids.get("frontend").await.unwrap().status.unwrap();
    assert_eq!(find(&frontend.conditions, READY).map(|c| (c.status.as_str(), c.reason.as_str())), Some(("False", "Suspended")));
    assert_eq!(find(&frontend.conditions, SUSPENDED).unwrap().status, "True");

    let acps: Api<AccessPolicy> = Api::namespaced(client.clone(), "shop");
    let ok = acps.get("orders-callers").await.unwrap().status.unwrap();
    assert_eq!(find(&ok.conditions, ACCEPTED).unwrap().status, "True");
    assert_eq!(find(&ok.conditions, RESOLVED_REFS).unwrap().reason, "UnresolvedCallers");
    assert_eq!(ok.unresolved_callers, ["shop/ghost"]);
    assert_eq!(ok.enforcement.as_ref().unwrap().summary, "enforced by 0/0 proxies at generation 7");
    let broken = acps.get("broken").await.unwrap().status.unwrap();
    let accepted = find(&broken.conditions, ACCEPTED).unwrap();
    assert_eq!((accepted.status.as_str(), accepted.reason.as_str()), ("False", "InvalidPath"));
    assert!(accepted.message.contains("spec.rules[0].to[0].paths[0]") && accepted.message.contains("write \"/b\""), "{}", accepted.message);

    // A second pass over the stored objects writes nothing.
    let stored = ClusterObjects {
        identities: vec![wids.get("orders").await.unwrap(), wids.get("frontend").await.unwrap()],
        policies: vec![acps.get("orders-callers").await.unwrap(), acps.get("broken").await.unwrap()],
        ..objs.clone()
    };
    let again = write_status(&client, None, &mesh, &stored, &matched, &none, &issued).await.unwrap();
    assert_eq!(again, 0, "an unchanged cluster costs no writes");
}

#[test]
fn enforcement_counts_proxies_that_acknowledged_the_latest_version() {
    use crate::server::config::ProxyState;
    let p = acp("p", json!({"targetRef": {"name": "orders"}, "rules": [{"from": [{"identity": "frontend"}]}]}));
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let proxies = [ProxyState::new("a", Some("9"), Some("9")), ProxyState::new("b", Some("9"), Some("8")), ProxyState::new("c", Some("9"), None)];
    let st = policy_status(&p, None, &proxies, now);
    assert_eq!(st.enforcement.unwrap().summary, "enforced by 1/3 proxies at generation 7");
    assert_eq!(find(&st.conditions, ACCEPTED).map(|c| c.reason.as_str()), Some("Pending"), "no report yet: pending, not accepted");
}

#[tokio::test]
async fn a_failed_status_write_does_not_stop_the_others() {
    // The identity is not in the API (deleted since the cache saw it): its patch fails, and the
    // policy's status is written anyway.
    let gone = wid("orders", json!({"serviceAccount": "orders"}));
    let policy = acp("orders-callers", json!({"targetRef": {"name": "orders"}, "rules": [{"from": [{"identity": "frontend"}]}]}));
    let client = ClientBuilder::new()
        .with_resource::<WorkloadIdentity>()
        .with_resource::<AccessPolicy>()
        .with_status_subresource::<WorkloadIdentity>()
        .with_status_subresource::<AccessPolicy>()
        .with_object(policy.clone())
        .build()
        .await
        .expect("fake client");
    let objs = ClusterObjects { identities: vec![gone], policies: vec![policy], ..Default::default() };
    let (mesh, matched) = view(&settings(), &objs, 1);
    let result = write_status(&client, None, &mesh, &objs, &matched, &|_| Vec::new(), &|_| 0).await;
    assert!(result.is_err(), "the failure is reported");
    let acps: Api<AccessPolicy> = Api::namespaced(client.clone(), "shop");
    let status = acps.get("orders-callers").await.unwrap().status.expect("the policy's status was still written");
    assert_eq!(find(&status.conditions, ACCEPTED).unwrap().status, "True");
}

#[test]
fn failed_passes_are_retried_with_exponential_backoff() {
    let secs: Vec<u64> = (0..10).map(|n| retry_after(n).as_secs()).collect();
    assert_eq!(secs, [10, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
}
