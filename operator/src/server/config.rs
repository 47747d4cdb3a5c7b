//! `Config.Watch`: each sidecar, identified by its client certificate, receives full snapshots
//! of its own workload whenever they change, and acknowledges each version. The registry records
//! which proxies enforce which version (for status and the propagation metrics).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use trustmesh_core::proto::v1::config_server::Config;
use trustmesh_core::proto::v1::{SnapshotMessage, WatchRequest};
use trustmesh_core::tls;

use super::incoming::PeerInfo;
use crate::ca::CertificateAuthority;
use crate::compile::ObjectKey;
use crate::metrics::Metrics;
use crate::state::MeshView;

/// One connected proxy.
#[derive(Clone, Debug, Default)]
pub struct ProxyState {
    /// Name the proxy gave (pod name, host:pid).
    pub name: String,
    /// The version it acknowledged last.
    pub acked: Option<String>,
    /// The version sent last and when.
    sent: Option<(String, Instant)>,
}

/// Connected proxies by identity.
#[derive(Default)]
pub struct ProxyRegistry {
    proxies: Mutex<BTreeMap<ObjectKey, BTreeMap<u64, ProxyState>>>,
}

impl ProxyState {
    /// A proxy that was sent `sent` and acknowledged `acked` (for status computations and tests).
    pub fn new(name: &str, sent: Option<&str>, acked: Option<&str>) -> Self {
        Self { name: name.to_owned(), acked: acked.map(str::to_owned), sent: sent.map(|v| (v.to_owned(), Instant::now())) }
    }

    /// The version sent last, if any.
    pub fn sent_version(&self) -> Option<String> {
        self.sent.as_ref().map(|(v, _)| v.clone())
    }
}

impl ProxyRegistry {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<ObjectKey, BTreeMap<u64, ProxyState>>) -> R) -> R {
        f(&mut self.proxies.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Proxies of one identity and the versions they acknowledged.
    pub fn proxies(&self, key: &ObjectKey) -> Vec<ProxyState> {
        self.with(|m| m.get(key).map(|p| p.values().cloned().collect()).unwrap_or_default())
    }

    /// Every connected proxy, by identity.
    pub fn all(&self) -> BTreeMap<ObjectKey, Vec<ProxyState>> {
        self.with(|m| m.iter().map(|(k, p)| (k.clone(), p.values().cloned().collect())).collect())
    }

    /// Every connected proxy.
    pub fn connected(&self) -> usize {
        self.with(|m| m.values().map(BTreeMap::len).sum())
    }
}

/// The config service.
pub struct ConfigService {
    view: watch::Receiver<Arc<MeshView>>,
    ca: Arc<CertificateAuthority>,
    registry: Arc<ProxyRegistry>,
    metrics: Arc<Metrics>,
}

static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

impl ConfigService {
    /// A service answering from `view`.
    pub fn new(view: watch::Receiver<Arc<MeshView>>, ca: Arc<CertificateAuthority>, registry: Arc<ProxyRegistry>, metrics: Arc<Metrics>) -> Self {
        Self { view, ca, registry, metrics }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Config for ConfigService {
    type WatchStream = SnapshotStream;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<SnapshotStream>, Status> {
        let certs = request.extensions().get::<PeerInfo>().and_then(|p| p.certificates.clone());
        let id = tls::peer_identity(certs.as_deref().map(Vec::as_slice))
            .map_err(|e| Status::unauthenticated(format!("client certificate is not an X.509-SVID: {e}")))?
            .ok_or_else(|| Status::unauthenticated("Config.Watch needs the sidecar's X.509-SVID as client certificate; fetch one with Identity.Sign first"))?;
        // The stream ends when the certificate that opened it expires: the sidecar renews and
        // reconnects with the new one, so a quarantined or deleted identity cannot keep a stream.
        let expires = tls::peer_not_after(certs.as_deref().map(Vec::as_slice));
        let key = {
            let view = self.view.borrow();
            view.compiled
                .workloads
                .iter()
                .find(|(_, w)| w.spiffe_id == id)
                .map(|(k, _)| k.clone())
                .ok_or_else(|| Status::not_found(format!("no WorkloadIdentity issues {id}; it was deleted or never existed")))?
        };
        let (tx, rx) = mpsc::channel(4);
        let mut inbound = request.into_inner();
        let mut view = self.view.clone();
        let (registry, metrics, ca) = (self.registry.clone(), self.metrics.clone(), self.ca.clone());
        let stream_id = STREAM_IDS.fetch_add(1, Ordering::Relaxed);
        registry.with(|m| m.entry(key.clone()).or_default().insert(stream_id, ProxyState::default()));
        metrics.proxies_connected.inc();
        tokio::spawn(async move {
            let mut last_content = None;
            let until_expiry = async move {
                match expires.map(|at| at.duration_since(std::time::SystemTime::now()).unwrap_or_default()) {
                    Some(left) => tokio::time::sleep(left).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(until_expiry);
            loop {
                let current = view.borrow_and_update().clone();
                // The resource name found at connect must still issue the caller's SPIFFE ID: an
                // identity re-pointed at another service account is another workload's policy.
                if current.compiled.workloads.get(&key).is_some_and(|w| w.spiffe_id != id) {
                    let _ = tx.send(Err(Status::permission_denied(format!("WorkloadIdentity {key} no longer issues {id}; reconnect with a certificate for what it issues now")))).await;
                    break;
                }
                let Some(content) = current.snapshot_json(&key) else {
                    let _ = tx.send(Err(Status::not_found(format!("WorkloadIdentity {key} is gone or not servable")))).await;
                    break;
                };
                if last_content.as_ref() != Some(&content) {
                    // The JSON carries an empty version; the message's version field is authoritative.
                    let msg = SnapshotMessage {
                        version: current.version.to_string(),
                        snapshot_json: content.as_str().to_owned(),
                        trust_bundle_der: ca.bundle().roots_der().iter().map(|r| r.to_vec()).collect(),
                    };
                    registry.with(|m| {
                        if let Some(p) = m.get_mut(&key).and_then(|p| p.get_mut(&stream_id)) {
                            p.sent = Some((msg.version.clone(), Instant::now()));
                        }
                    });
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                    metrics.config_pushes.inc();
                    last_content = Some(content);
                }
                tokio::select! {
                    () = &mut until_expiry => {
                        let _ = tx.send(Err(Status::unauthenticated("the client certificate of this stream expired; reconnect with the renewed one"))).await;
                        break;
                    }
                    changed = view.changed() => if changed.is_err() { break },
                    msg = inbound.message() => match msg {
                        Ok(Some(ack)) => record_ack(&registry, &metrics, &key, stream_id, ack),
                        _ => break,
                    },
                }
            }
            registry.with(|m| {
                if let Some(p) = m.get_mut(&key) {
                    p.remove(&stream_id);
                }
            });
            metrics.proxies_connected.dec();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn record_ack(registry: &ProxyRegistry, metrics: &Metrics, key: &ObjectKey, stream_id: u64, ack: WatchRequest) {
    registry.with(|m| {
        let Some(p) = m.get_mut(key).and_then(|p| p.get_mut(&stream_id)) else { return };
        if !ack.proxy.is_empty() {
            p.name = ack.proxy.clone();
        }
        if !ack.error.is_empty() {
            tracing::warn!(identity = %key, proxy = %p.name, error = %ack.error, "a proxy rejected its snapshot and keeps the previous one");
            return;
        }
        if ack.ack_version.is_empty() {
            return;
        }
        if let Some((sent, at)) = &p.sent
            && *sent == ack.ack_version
        {
            metrics.config_ack_seconds.observe(at.elapsed().as_secs_f64());
        }
        p.acked = Some(ack.ack_version);
    });
}
