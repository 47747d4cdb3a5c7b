//! The pure half of the Kubernetes source: objects read from the cluster in, a [`MeshView`] out.
//!
//! A workload is a running (or starting) pod whose service account, and labels when the
//! identity has a `podSelector`, a WorkloadIdentity selects. A destination is an address a
//! sidecar originates mutual TLS to, with the identities it expects to answer there (secure
//! naming). Destinations come from, in this order of trust:
//!
//! 1. **EndpointSlices.** Each endpoint is resolved to a pod (its `targetRef`, or else its
//!    address among pod IPs, which covers Services without a selector whose slices are written
//!    by hand) and so to an identity. The endpoint's addresses with the slice's ports, and the
//!    owning Service's cluster IPs with the Service's ports, expect that identity. Pods that
//!    declare no `containerPort` are reachable this way too.
//! 2. **Services with a selector but no EndpointSlice yet** (the endpoint-slice controller lags a
//!    new Service): the pods the selector picks.
//! 3. **Declared container ports** of every meshed pod (a pod called by IP before any Service
//!    fronts it).
//!
//! An endpoint that is not a meshed pod adds nothing: calls to it are not originated as mTLS.
//! Only TCP ports count; terminating endpoints still count, since they may still answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use trustmesh_api::labels::INJECT;
use trustmesh_api::{AccessPolicy, WorkloadIdentity};

use crate::compile::{CompiledMesh, DesiredState, MeshSettings, NamespaceInfo, ObjectKey, compile, selector};
use crate::state::MeshView;
use crate::webhook::{STATUS, STATUS_INJECTED};

/// The label the endpoint-slice controller (and anyone writing slices by hand) sets to the
/// owning Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Everything read from the cluster, as plain values.
#[derive(Clone, Debug, Default)]
pub struct ClusterObjects {
    /// WorkloadIdentities.
    pub identities: Vec<WorkloadIdentity>,
    /// AccessPolicies.
    pub policies: Vec<AccessPolicy>,
    /// Namespaces (labels: selectors, default policy, injection).
    pub namespaces: Vec<Namespace>,
    /// Pods (matched pods, pod addresses).
    pub pods: Vec<Pod>,
    /// Services (cluster IPs and ports).
    pub services: Vec<Service>,
    /// EndpointSlices (which pods, on which ports, answer behind a Service).
    pub endpoint_slices: Vec<EndpointSlice>,
}

/// The view of the cluster, plus how many running pods each identity selects.
pub fn view(settings: &MeshSettings, objs: &ClusterObjects, version: u64) -> (MeshView, BTreeMap<ObjectKey, i32>) {
    let desired = DesiredState {
        identities: objs.identities.clone(),
        policies: objs.policies.clone(),
        namespaces: objs
            .namespaces
            .iter()
            .map(|n| NamespaceInfo { name: n.name_any(), labels: n.metadata.labels.clone().unwrap_or_default() })
            .collect(),
    };
    let compiled = compile(settings, &desired);
    let pods = MeshedPods::new(&compiled, &objs.pods);
    let mut addresses = Addresses::default();

    for (pod, key) in &pods.live {
        for ip in pod_ips(pod) {
            for port in pod.spec.iter().flat_map(|s| &s.containers).flat_map(|c| c.ports.iter().flatten()) {
                if is_tcp(port.protocol.as_deref())
                    && let Ok(p) = u16::try_from(port.container_port)
                {
                    addresses.add(SocketAddr::new(ip, p), key);
                }
            }
        }
    }

    // Identities behind each Service, from its slices; a Service with a slice is never
    // resolved by selector, even when the slice holds no meshed pod.
    let mut behind: BTreeMap<(String, String), BTreeSet<ObjectKey>> = BTreeMap::new();
    for slice in &objs.endpoint_slices {
        let ns = slice.namespace().unwrap_or_default();
        let ports: Vec<u16> = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| is_tcp(p.protocol.as_deref()))
            .filter_map(|p| p.port.and_then(|p| u16::try_from(p).ok()))
            .collect();
        let mut keys = BTreeSet::new();
        for endpoint in slice.endpoints.iter().flatten() {
            // Who answers at an address is decided by the pod that owns the IP, never by what a
            // slice claims: whoever may write EndpointSlices could otherwise pair a victim's IP
            // with their own pod and have every caller accept their identity there. A targetRef
            // must agree (same namespace, same identity) or the endpoint is ignored.
            let ips: Vec<IpAddr> = endpoint.addresses.iter().filter_map(|a| a.parse().ok()).collect();
            let claimed = endpoint.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).map(|r| {
                let same_ns = r.namespace.as_deref().is_none_or(|n| n == ns);
                same_ns.then(|| r.name.as_deref().and_then(|name| pods.by_name(&ns, name))).flatten()
            });
            for ip in &ips {
                let Some(key) = pods.by_ip.get(ip) else { continue };
                if claimed.as_ref().is_some_and(|c| c.as_ref() != Some(key)) {
                    tracing::warn!(slice = %format!("{ns}/{}", slice.name_any()), %ip, "endpoint's targetRef does not own its address; ignored");
                    continue;
                }
                for port in &ports {
                    addresses.add(SocketAddr::new(*ip, *port), key);
                }
                keys.insert(key.clone());
            }
        }
        if let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) {
            behind.entry((ns, service.clone())).or_default().extend(keys);
        }
    }

    for svc in &objs.services {
        let Some(spec) = &svc.spec else { continue };
        let ns = svc.namespace().unwrap_or_default();
        let keys = match behind.get(&(ns.clone(), svc.name_any())) {
            Some(keys) => keys.clone(),
            None => match spec.selector.as_ref().filter(|s| !s.is_empty()) {
                Some(sel) => pods
                    .live
                    .iter()
                    .filter(|(p, _)| p.namespace().as_deref() == Some(ns.as_str()))
                    .filter(|(p, _)| sel.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
                    .map(|(_, key)| key.clone())
                    .collect(),
                None => continue,
            },
        };
        for ip in cluster_ips(spec) {
            for port in spec.ports.iter().flatten() {
                if is_tcp(port.protocol.as_deref())
                    && let Ok(p) = u16::try_from(port.port)
                {
                    for key in &keys {
                        addresses.add(SocketAddr::new(ip, p), key);
                    }
                }
            }
        }
    }

    let mut matched: BTreeMap<ObjectKey, i32> = BTreeMap::new();
    for (_, key) in &pods.live {
        *matched.entry(key.clone()).or_default() += 1;
    }
    let view = MeshView {
        settings: settings.clone(),
        compiled,
        join_tokens: BTreeMap::new(),
        addresses: addresses.0,
        version,
        cache: Default::default(),
    };
    (view, matched)
}

/// Namespaces that need the trust-bundle ConfigMap: those labelled for injection, and those
/// holding a pod the webhook injected (a pod can opt in by its own label or annotation in a
/// namespace that is not labelled; without the ConfigMap its volume would never mount).
pub fn bundle_namespaces(objs: &ClusterObjects) -> BTreeSet<String> {
    let labelled = objs
        .namespaces
        .iter()
        .filter(|n| n.labels().get(INJECT).is_some_and(|v| v == "enabled"))
        .map(ResourceExt::name_any);
    let injected = objs
        .pods
        .iter()
        .filter(|p| p.annotations().get(STATUS).is_some_and(|v| v == STATUS_INJECTED))
        .filter_map(ResourceExt::namespace);
    labelled.chain(injected).collect()
}

#[derive(Default)]
struct Addresses(BTreeMap<SocketAddr, BTreeSet<ObjectKey>>);

impl Addresses {
    fn add(&mut self, addr: SocketAddr, key: &ObjectKey) {
        self.0.entry(addr).or_default().insert(key.clone());
    }
}

/// Live pods that some WorkloadIdentity selects, indexed by name and by IP.
struct MeshedPods<'a> {
    live: Vec<(&'a Pod, ObjectKey)>,
    by_ip: HashMap<IpAddr, ObjectKey>,
    by_name: HashMap<(String, String), ObjectKey>,
}

impl<'a> MeshedPods<'a> {
    fn new(compiled: &CompiledMesh, pods: &'a [Pod]) -> Self {
        let live: Vec<(&Pod, ObjectKey)> =
            pods.iter().filter(|p| is_live(p)).filter_map(|p| Some((p, identity_of(compiled, p)?))).collect();
        let by_ip = live.iter().flat_map(|(p, key)| pod_ips(p).map(move |ip| (ip, key.clone()))).collect();
        let by_name = live.iter().map(|(p, key)| ((p.namespace().unwrap_or_default(), p.name_any()), key.clone())).collect();
        Self { live, by_ip, by_name }
    }

    fn by_name(&self, ns: &str, name: &str) -> Option<ObjectKey> {
        self.by_name.get(&(ns.to_owned(), name.to_owned())).cloned()
    }
}

/// The WorkloadIdentity that selects `pod`: same namespace and service account, and its
/// `podSelector` (if any) matches the pod's labels.
fn identity_of(compiled: &CompiledMesh, pod: &Pod) -> Option<ObjectKey> {
    let ns = pod.namespace()?;
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()).unwrap_or("default");
    let labels = pod.labels();
    compiled
        .workloads
        .iter()
        .find(|(k, w)| k.namespace == ns && w.service_account == sa && w.pod_selector.as_ref().is_none_or(|s| selector::matches(s, labels)))
        .map(|(k, _)| k.clone())
}

/// Not being deleted, and Running or Pending (a starting pod already asks for its certificate).
fn is_live(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|ph| ph == "Running" || ph == "Pending")
}

/// Every IP of a pod (dual-stack pods have one per family).
fn pod_ips(pod: &Pod) -> impl Iterator<Item = IpAddr> + '_ {
    let status = pod.status.as_ref();
    let listed = status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|p| p.ip.as_str());
    let primary = status.and_then(|s| s.pod_ip.as_deref());
    let all: BTreeSet<IpAddr> = listed.chain(primary).filter_map(|ip| ip.parse().ok()).collect();
    all.into_iter()
}

/// A Service's cluster IPs (none for a headless Service, whose clients call the endpoints).
fn cluster_ips(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> BTreeSet<IpAddr> {
    spec.cluster_ips.iter().flatten().map(String::as_str).chain(spec.cluster_ip.as_deref()).filter_map(|ip| ip.parse().ok()).collect()
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.unwrap_or("TCP") == "TCP"
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
