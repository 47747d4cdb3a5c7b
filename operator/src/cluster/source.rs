//! Desired state from Kubernetes: reflectors over WorkloadIdentities, AccessPolicies,
//! Namespaces, Pods and Services feed the same compiler local mode uses. [`view`] is the pure
//! part (objects in, [`MeshView`] out); [`watch_cluster`] keeps the stores and rebuilds the view
//! on every change, debounced.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, watch};
use trustmesh_api::{AccessPolicy, WorkloadIdentity};

use crate::compile::{DesiredState, MeshSettings, NamespaceInfo, ObjectKey, compile, selector};
use crate::state::MeshView;

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
    /// Services (cluster IPs and the identities behind them).
    pub services: Vec<Service>,
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
    let identity_of = |pod: &Pod| -> Option<ObjectKey> {
        let ns = pod.namespace()?;
        let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        compiled
            .workloads
            .iter()
            .find(|(k, w)| k.namespace == ns && w.service_account == sa && w.pod_selector.as_ref().is_none_or(|s| selector::matches(s, &labels)))
            .map(|(k, _)| k.clone())
    };
    let live = |p: &&Pod| p.metadata.deletion_timestamp.is_none() && p.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|ph| ph == "Running" || ph == "Pending");
    let mut matched: BTreeMap<ObjectKey, i32> = BTreeMap::new();
    let mut addresses: BTreeMap<SocketAddr, BTreeSet<ObjectKey>> = BTreeMap::new();
    for pod in objs.pods.iter().filter(live) {
        let Some(key) = identity_of(pod) else { continue };
        *matched.entry(key.clone()).or_default() += 1;
        let ip: Option<IpAddr> = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok());
        let Some(ip) = ip else { continue };
        for port in pod.spec.iter().flat_map(|s| &s.containers).flat_map(|c| c.ports.iter().flatten()) {
            if port.protocol.as_deref().unwrap_or("TCP") == "TCP"
                && let Ok(p) = u16::try_from(port.container_port)
            {
                addresses.entry(SocketAddr::new(ip, p)).or_default().insert(key.clone());
            }
        }
    }
    for svc in &objs.services {
        let Some(spec) = &svc.spec else { continue };
        let Some(sel) = spec.selector.as_ref().filter(|s| !s.is_empty()) else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()) else { continue };
        let ns = svc.namespace().unwrap_or_default();
        let keys: BTreeSet<ObjectKey> = objs
            .pods
            .iter()
            .filter(live)
            .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
            .filter(|p| sel.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
            .filter_map(identity_of)
            .collect();
        if keys.is_empty() {
            continue;
        }
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") == "TCP"
                && let Ok(p) = u16::try_from(port.port)
            {
                addresses.entry(SocketAddr::new(ip, p)).or_default().extend(keys.iter().cloned());
            }
        }
    }
    (MeshView { settings: settings.clone(), compiled, join_tokens: BTreeMap::new(), addresses, version, cache: Default::default() }, matched)
}

/// The reflector stores.
#[derive(Clone)]
pub struct Stores {
    identities: Store<WorkloadIdentity>,
    policies: Store<AccessPolicy>,
    namespaces: Store<Namespace>,
    pods: Store<Pod>,
    services: Store<Service>,
}

impl Stores {
    /// A copy of everything in the stores.
    pub fn snapshot(&self) -> ClusterObjects {
        fn all<K: Clone + kube::Resource>(s: &Store<K>) -> Vec<K>
        where
            K::DynamicType: std::hash::Hash + Eq + Clone,
        {
            s.state().iter().map(|o| (**o).clone()).collect()
        }
        ClusterObjects {
            identities: all(&self.identities),
            policies: all(&self.policies),
            namespaces: all(&self.namespaces),
            pods: all(&self.pods),
            services: all(&self.services),
        }
    }

    /// Labels of a namespace, `None` when the cache does not know it (for the injection webhook).
    pub fn namespace(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get(&reflector::ObjectRef::new(name)).map(|n| n.metadata.labels.clone().unwrap_or_default())
    }
}

fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => {
                    tracing::warn!(kind = std::any::type_name::<K>(), error = %e, "watch error; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    reader
}

/// Starts the reflectors and a task that rebuilds the view (debounced by 50 ms) on every change.
/// Returns the stores, the view channel and the matched-pod counts channel.
pub async fn watch_cluster(
    client: Client,
    settings: MeshSettings,
) -> (Stores, watch::Receiver<Arc<MeshView>>, watch::Receiver<Arc<BTreeMap<ObjectKey, i32>>>) {
    let changed = Arc::new(Notify::new());
    let stores = Stores {
        identities: reflect(Api::all(client.clone()), changed.clone()),
        policies: reflect(Api::all(client.clone()), changed.clone()),
        namespaces: reflect(Api::all(client.clone()), changed.clone()),
        pods: reflect(Api::all(client.clone()), changed.clone()),
        services: reflect(Api::all(client), changed.clone()),
    };
    let _ = stores.identities.wait_until_ready().await;
    let _ = stores.policies.wait_until_ready().await;
    let (initial, matched) = view(&settings, &stores.snapshot(), 1);
    let (view_tx, view_rx) = watch::channel(Arc::new(initial));
    let (matched_tx, matched_rx) = watch::channel(Arc::new(matched));
    let s = stores.clone();
    tokio::spawn(async move {
        let mut version = 1;
        loop {
            changed.notified().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            version += 1;
            let (v, m) = view(&settings, &s.snapshot(), version);
            view_tx.send_replace(Arc::new(v));
            matched_tx.send_replace(Arc::new(m));
        }
    });
    (stores, view_rx, matched_rx)
}
