//! Which addresses expect which identities, from Pods, Services and EndpointSlices as the
//! apiserver returns them.

use serde_json::{Value, json};
use trustmesh_core::policy::DefaultAction;
use trustmesh_core::spiffe::TrustDomain;

use super::*;

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn wid(ns: &str, name: &str, sa: &str) -> WorkloadIdentity {
    obj(json!({"apiVersion": "trustmesh.dev/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": {"name": name, "namespace": ns}, "spec": {"serviceAccount": sa}}))
}

/// A running pod in `shop` with service account `sa`, label app=`sa`, the given IPs and
/// declared container ports.
fn pod(name: &str, sa: &str, ips: &[&str], ports: &[u16]) -> Pod {
    let ports: Vec<Value> = ports.iter().map(|p| json!({"containerPort": p})).collect();
    let pod_ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    obj(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": sa}},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app:1", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ips[0], "podIPs": pod_ips}}))
}

fn service(name: &str, selector: Option<&str>, cluster_ip: &str, ports: &[(u16, &str)]) -> Service {
    let ports: Vec<Value> = ports.iter().map(|(p, proto)| json!({"port": p, "protocol": proto})).collect();
    let mut spec = json!({"clusterIP": cluster_ip, "ports": ports});
    if let Some(app) = selector {
        spec["selector"] = json!({"app": app});
    }
    obj(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"}, "spec": spec}))
}

/// A slice of `service` with endpoints (address, target pod name) on `ports`.
fn slice(service: &str, endpoints: &[(&str, Option<&str>)], ports: &[u16]) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, pod)| match pod {
            Some(pod) => json!({"addresses": [ip], "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod}}),
            None => json!({"addresses": [ip]}),
        })
        .collect();
    let ports: Vec<Value> = ports.iter().map(|p| json!({"port": p, "protocol": "TCP"})).collect();
    obj(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-x1"), "namespace": "shop", "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports}))
}

/// The shop: identities `orders` (SA orders) and `payments` (SA payments).
fn shop(pods: Vec<Pod>, services: Vec<Service>, endpoint_slices: Vec<EndpointSlice>) -> ClusterObjects {
    ClusterObjects {
        identities: vec![wid("shop", "orders", "orders"), wid("shop", "payments", "payments")],
        pods,
        services,
        endpoint_slices,
        ..Default::default()
    }
}

/// Address -> names of the identities expected there.
fn destinations(objs: &ClusterObjects) -> BTreeMap<String, Vec<String>> {
    let settings = MeshSettings::new(TrustDomain::new("cluster.local").unwrap(), DefaultAction::Deny);
    let (view, _) = view(&settings, objs, 1);
    view.addresses.iter().map(|(a, keys)| (a.to_string(), keys.iter().map(|k| k.name.clone()).collect())).collect()
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    pairs.iter().map(|(a, n)| (a.to_string(), vec![n.to_string()])).collect()
}

#[test]
fn a_pod_that_declares_no_port_is_reached_through_its_endpoint_slice_and_its_service() {
    let objs = shop(
        vec![pod("orders-1", "orders", &["10.0.0.5"], &[])],
        vec![service("orders", Some("orders"), "10.96.0.10", &[(80, "TCP")])],
        vec![slice("orders", &[("10.0.0.5", Some("orders-1"))], &[8080])],
    );
    assert_eq!(destinations(&objs), expect(&[("10.0.0.5:8080", "orders"), ("10.96.0.10:80", "orders")]));
}

#[test]
fn a_service_without_a_selector_expects_the_meshed_pod_its_hand_written_slice_points_at() {
    let objs = shop(
        vec![pod("payments-1", "payments", &["10.0.0.7"], &[])],
        vec![service("legacy-payments", None, "10.96.0.20", &[(443, "TCP")])],
        vec![slice("legacy-payments", &[("10.0.0.7", None)], &[8443])],
    );
    assert_eq!(destinations(&objs), expect(&[("10.0.0.7:8443", "payments"), ("10.96.0.20:443", "payments")]));
}

#[test]
fn an_endpoint_that_is_no_meshed_pod_adds_no_destination() {
    let objs = shop(
        vec![pod("orders-1", "orders", &["10.0.0.5"], &[])],
        vec![service("external-db", None, "10.96.0.30", &[(5432, "TCP")])],
        vec![slice("external-db", &[("192.0.2.10", None)], &[5432])],
    );
    assert_eq!(destinations(&objs), expect(&[]));
}

#[test]
fn a_slice_cannot_pair_another_pods_ip_with_its_own_identity() {
    // Someone who may write EndpointSlices points payments' IP at an orders pod: callers must
    // keep expecting payments there, and orders gains nothing.
    let objs = shop(
        vec![pod("orders-1", "orders", &["10.0.0.5"], &[]), pod("payments-1", "payments", &["10.0.0.7"], &[9000])],
        vec![service("sneaky", None, "10.96.0.50", &[(80, "TCP")])],
        vec![slice("sneaky", &[("10.0.0.7", Some("orders-1"))], &[9000])],
    );
    assert_eq!(destinations(&objs), expect(&[("10.0.0.7:9000", "payments")]), "only the pod's own declared port; the slice is ignored");
}

#[test]
fn a_service_behind_two_identities_expects_either() {
    let objs = shop(
        vec![pod("orders-1", "orders", &["10.0.0.5"], &[]), pod("payments-1", "payments", &["10.0.0.7"], &[])],
        vec![service("mixed", None, "10.96.0.40", &[(80, "TCP")])],
        vec![slice("mixed", &[("10.0.0.5", Some("orders-1")), ("10.0.0.7", Some("payments-1"))], &[8080])],
    );
    let got = destinations(&objs);
    assert_eq!(got["10.96.0.40:80"], ["orders", "payments"]);
    assert_eq!(got["10.0.0.5:8080"], ["orders"]);
}

#[test]
fn a_service_is_resolved_by_selector_until_its_first_slice_exists() {
    let pods = vec![pod("orders-1", "orders", &["10.0.0.5"], &[8080])];
    let services = vec![service("orders", Some("orders"), "10.96.0.10", &[(80, "TCP")])];
    assert_eq!(
        destinations(&shop(pods.clone(), services.clone(), vec![])),
        expect(&[("10.0.0.5:8080", "orders"), ("10.96.0.10:80", "orders")])
    );
    // The slice is the truth once it exists: here it lists no meshed pod (yet).
    let empty = slice("orders", &[], &[8080]);
    assert_eq!(destinations(&shop(pods, services, vec![empty])), expect(&[("10.0.0.5:8080", "orders")]));
}

#[test]
fn udp_ports_headless_services_and_deleted_pods_add_nothing() {
    let mut gone = pod("orders-2", "orders", &["10.0.0.6"], &[8080]);
    gone.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
    let objs = shop(
        vec![pod("orders-1", "orders", &["10.0.0.5"], &[]), gone],
        vec![service("dns", Some("orders"), "10.96.0.53", &[(53, "UDP")]), service("orders", Some("orders"), "None", &[(80, "TCP")])],
        vec![slice("orders", &[("10.0.0.5", Some("orders-1")), ("10.0.0.6", Some("orders-2"))], &[8080])],
    );
    assert_eq!(destinations(&objs), expect(&[("10.0.0.5:8080", "orders")]));
}

#[test]
fn a_dual_stack_pod_is_a_destination_on_both_families() {
    let objs = shop(vec![pod("orders-1", "orders", &["10.0.0.5", "fd00::5"], &[8080])], vec![], vec![]);
    assert_eq!(destinations(&objs), expect(&[("10.0.0.5:8080", "orders"), ("[fd00::5]:8080", "orders")]));
}

#[test]
fn matched_pods_count_only_live_pods_an_identity_selects() {
    let settings = MeshSettings::new(TrustDomain::new("cluster.local").unwrap(), DefaultAction::Deny);
    let objs = shop(
        vec![pod("orders-1", "orders", &["10.0.0.5"], &[]), pod("orders-2", "orders", &["10.0.0.6"], &[]), pod("cart-1", "cart", &["10.0.0.8"], &[])],
        vec![],
        vec![],
    );
    let (_, matched) = view(&settings, &objs, 1);
    let counts: Vec<(String, i32)> = matched.into_iter().map(|(k, n)| (k.name, n)).collect();
    assert_eq!(counts, [("orders".to_owned(), 2)]);
}

#[test]
fn the_bundle_goes_to_labelled_namespaces_and_to_any_namespace_with_an_injected_pod() {
    let ns = |name: &str, inject: Option<&str>| -> Namespace {
        let labels = inject.map(|v| json!({"trustmesh.dev/inject": v})).unwrap_or(json!({}));
        obj(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}))
    };
    let mut opted_in = pod("orders-1", "orders", &["10.0.0.5"], &[]);
    opted_in.metadata.namespace = Some("payments".into());
    opted_in.metadata.annotations = Some([("trustmesh.dev/status".to_owned(), "injected".to_owned())].into());
    let objs = ClusterObjects {
        namespaces: vec![ns("shop", Some("enabled")), ns("payments", None), ns("legacy", Some("disabled")), ns("empty", None)],
        pods: vec![opted_in, pod("plain-1", "plain", &["10.0.0.9"], &[])],
        ..Default::default()
    };
    assert_eq!(bundle_namespaces(&objs).into_iter().collect::<Vec<_>>(), ["payments", "shop"]);
}
