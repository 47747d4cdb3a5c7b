//! Following `Config.Watch`: full snapshots for this workload, applied as a whole and
//! acknowledged. While the operator is away the last good snapshot stays in force (fail static);
//! the stream reconnects with backoff. A snapshot that does not parse is refused, reported back
//! in the next acknowledgement, and the previous one stays.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use trustmesh_core::proto::v1::WatchRequest;
use trustmesh_core::proto::v1::config_client::ConfigClient;
use trustmesh_core::snapshot::Snapshot;

use crate::identity::backoff;
use crate::state::Active;

/// Follows the stream forever (abort the task to stop).
pub async fn follow(channel: Channel, proxy: String, live: watch::Sender<Option<Arc<Active>>>, bundle: watch::Sender<Vec<CertificateDer<'static>>>) {
    let mut failures = 0u32;
    loop {
        let (ack_tx, ack_rx) = mpsc::channel(4);
        let _ = ack_tx.send(WatchRequest { proxy: proxy.clone(), ..Default::default() }).await;
        match ConfigClient::new(channel.clone()).watch(ReceiverStream::new(ack_rx)).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(msg)) => {
                            failures = 0;
                            let ack = match serde_json::from_str::<Snapshot>(&msg.snapshot_json) {
                                Ok(mut snapshot) => {
                                    snapshot.version.clone_from(&msg.version);
                                    let roots: Vec<CertificateDer<'static>> = msg.trust_bundle_der.into_iter().map(CertificateDer::from).collect();
                                    if !roots.is_empty() && *bundle.borrow() != roots {
                                        bundle.send_replace(roots);
                                    }
                                    tracing::info!(version = %msg.version, "applied snapshot from the control plane");
                                    live.send_replace(Some(Active::new(snapshot)));
                                    WatchRequest { ack_version: msg.version, ..Default::default() }
                                }
                                Err(e) => {
                                    tracing::error!(version = %msg.version, error = %e, "refused a snapshot; keeping the previous one");
                                    WatchRequest { error: format!("version {}: {e}", msg.version), ..Default::default() }
                                }
                            };
                            if ack_tx.send(ack).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(code = ?status.code(), message = status.message(), "config stream ended");
                            break;
                        }
                    }
                }
            }
            Err(status) => tracing::warn!(code = ?status.code(), message = status.message(), "cannot open the config stream"),
        }
        failures += 1;
        let wait = backoff(failures).min(Duration::from_secs(5));
        tracing::info!(retry_in = ?wait, "keeping the last good snapshot while the control plane is away");
        tokio::time::sleep(wait).await;
    }
}
