//! The reflectors against a scripted apiserver (a `tower_test` mock behind `kube::Client`): the
//! initial lists build the view, and a watch event (an EndpointSlice added) rebuilds it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use trustmesh_core::policy::DefaultAction;
use trustmesh_core::spiffe::TrustDomain;

use super::*;
use crate::cluster::view::SERVICE_NAME_LABEL;

const WIDS: &str = "/apis/trustmesh.dev/v1alpha1/workloadidentities";
const PODS: &str = "/api/v1/pods";
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "100"}, "items": items})
}

/// Answers every list from `lists` (an empty list for paths not in it), the first watch of each
/// path in `events` with those events, and holds every other watch open, as a quiet apiserver
/// does. Returns the paths it was asked to watch, in order.
fn apiserver(lists: HashMap<&'static str, Vec<Value>>, mut events: HashMap<&'static str, Vec<Value>>) -> (kube::Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (watched_tx, watched) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        let mut held = Vec::new();
        while let Some((req, send)) = handle.as_mut().next_request().await {
            let path = req.uri().path().to_owned();
            let watch = req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true"));
            let body = if !watch {
                serde_json::to_vec(&list(lists.get(path.as_str()).cloned().unwrap_or_default())).unwrap()
            } else if let Some(lines) = events.remove(path.as_str()) {
                let _ = watched_tx.send(path.clone());
                lines.iter().flat_map(|e| serde_json::to_vec(e).unwrap().into_iter().chain(*b"\n")).collect()
            } else {
                let _ = watched_tx.send(path.clone());
                held.push(send);
                continue;
            };
            let resp = Response::builder().status(StatusCode::OK).header("content-type", "application/json");
            send.send_response(resp.body(Body::from(body)).unwrap());
        }
    });
    (kube::Client::new(svc, "default"), watched)
}

fn orders_slice() -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "orders-x1", "namespace": "shop", "resourceVersion": "101", "labels": {SERVICE_NAME_LABEL: "orders"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.5"], "targetRef": {"kind": "Pod", "namespace": "shop", "name": "orders-1"}}],
        "ports": [{"port": 8080, "protocol": "TCP"}]})
}

#[tokio::test]
async fn listed_objects_build_the_view_and_a_watched_endpoint_slice_rebuilds_it() {
    let lists = HashMap::from([
        (WIDS, vec![json!({"apiVersion": "trustmesh.dev/v1alpha1", "kind": "WorkloadIdentity",
            "metadata": {"name": "orders", "namespace": "shop", "resourceVersion": "7"}, "spec": {"serviceAccount": "orders"}})]),
        // No declared container port: only the EndpointSlice says where the app listens.
        (PODS, vec![json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "orders-1", "namespace": "shop", "resourceVersion": "8", "labels": {"app": "orders"}},
            "spec": {"serviceAccountName": "orders", "containers": [{"name": "app", "image": "orders:1"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5"}})]),
        (SERVICES, vec![json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "orders", "namespace": "shop", "resourceVersion": "9"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "orders"}, "ports": [{"port": 80, "targetPort": 8080}]}})]),
    ]);
    // The slice is not in any list: only its watch event can put 10.0.0.5:8080 in the view.
    let events = HashMap::from([(SLICES, vec![json!({"type": "ADDED", "object": orders_slice()})])]);
    let (client, mut watched) = apiserver(lists, events);
    let settings = MeshSettings::new(TrustDomain::new("cluster.local").unwrap(), DefaultAction::Deny);

    let (_stores, mut views, mut matched) = watch_cluster(client, settings).await;

    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let pod: SocketAddr = "10.0.0.5:8080".parse().unwrap();
    let deadline = Duration::from_secs(20);
    let view = tokio::time::timeout(deadline, views.wait_for(|v| v.addresses.contains_key(&vip) && v.addresses.contains_key(&pod)))
        .await
        .expect("the view never showed the Service and the slice's endpoint")
        .unwrap()
        .clone();
    let names = |a: &SocketAddr| view.addresses[a].iter().map(|k| format!("{}/{}", k.namespace, k.name)).collect::<Vec<_>>();
    assert_eq!((names(&vip), names(&pod)), (vec!["shop/orders".to_owned()], vec!["shop/orders".to_owned()]));

    let counts = tokio::time::timeout(deadline, matched.wait_for(|m| !m.is_empty())).await.unwrap().unwrap().clone();
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [1]);

    // All six kinds are watched (the reflectors keep their stores current, not just listed once).
    let mut paths = std::collections::BTreeSet::new();
    while paths.len() < 6 {
        let path = tokio::time::timeout(deadline, watched.recv()).await.expect("a reflector never watched").unwrap();
        paths.insert(path);
    }
    assert!([WIDS, PODS, SERVICES, SLICES].iter().all(|p| paths.contains(*p)), "{paths:?}");
}
