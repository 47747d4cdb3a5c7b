//! Desired state from Kubernetes: reflectors over WorkloadIdentities, AccessPolicies,
//! Namespaces, Pods, Services and EndpointSlices feed the same compiler local mode uses.
//! [`super::view`] is the pure part (objects in, [`MeshView`] out); [`watch_cluster`] keeps the
//! stores and rebuilds the view on every change, debounced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::{Notify, watch};
use trustmesh_api::{AccessPolicy, WorkloadIdentity};

use super::view::{ClusterObjects, view};
use crate::compile::{MeshSettings, ObjectKey};
use crate::state::MeshView;

/// The reflector stores.
#[derive(Clone)]
pub struct Stores {
    identities: Store<WorkloadIdentity>,
    policies: Store<AccessPolicy>,
    namespaces: Store<Namespace>,
    pods: Store<Pod>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
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
            endpoint_slices: all(&self.endpoint_slices),
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
        services: reflect(Api::all(client.clone()), changed.clone()),
        endpoint_slices: reflect(Api::all(client), changed.clone()),
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

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
