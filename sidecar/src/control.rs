//! The gRPC channel to the operator: TLS 1.3, the operator's certificate checked against the
//! trust bundle and its SPIFFE ID (secure naming), optionally our own SVID as client certificate.
//!
//! The bundle is read on every (re)connection, not once: after a root rotation the operator
//! presents a certificate from the new root, which the sidecar learned from the bundle the
//! operator streamed before the switch.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use trustmesh_core::spiffe::SpiffeId;
use trustmesh_core::tls::{self, ExpectedServer, SpiffeServerVerifier};

/// Why the operator could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The TLS configuration could not be built (bad bundle).
    #[error("cannot build TLS settings for the operator connection: {0}; check the trust bundle file")]
    Tls(#[from] tls::TlsError),
    /// The channel could not be set up.
    #[error("cannot connect to the operator at {addr}: {reason}; check --operator and that the operator is running")]
    Connect {
        /// The address.
        addr: String,
        /// What failed.
        reason: String,
    },
}

/// A lazily connected channel to the operator at `addr` (`host:port`, resolved on every
/// connection so a Service name follows its endpoints), which must present `operator_id` and a
/// certificate that chains to the bundle `bundle` holds at connection time.
pub fn channel(
    addr: impl Into<String>,
    bundle: watch::Receiver<Vec<CertificateDer<'static>>>,
    operator_id: SpiffeId,
    client_cert: Option<Arc<dyn ResolvesClientCert>>,
) -> Result<Channel, ControlError> {
    let addr: String = addr.into();
    let config_for = move |roots: &[CertificateDer<'static>]| -> Result<Arc<rustls::ClientConfig>, tls::TlsError> {
        let verifier = SpiffeServerVerifier::new(roots, ExpectedServer::Ids(vec![operator_id.clone()]))?;
        Ok(Arc::new(tls::client_config(verifier, client_cert.clone(), vec![b"h2".to_vec()])?))
    };
    // Refuse an unusable bundle now rather than on every connection attempt.
    config_for(&bundle.borrow())?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ControlError::Connect { addr: addr.clone(), reason: e.to_string() })?
        .connect_timeout(std::time::Duration::from_secs(5));
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let addr = addr.clone();
        let config = config_for(&bundle.borrow()).map_err(std::io::Error::other);
        async move {
            let config = config?;
            let tcp = TcpStream::connect(addr.as_str()).await?;
            tcp.set_nodelay(true)?;
            let stream = TlsConnector::from(config).connect(tls::placeholder_server_name(), tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    use rustls::pki_types::PrivateKeyDer;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;
    use trustmesh_core::proto::v1::SignRequest;
    use trustmesh_core::proto::v1::identity_client::IdentityClient;
    use trustmesh_core::tls::{ClientAuth, SwappableCert};

    use super::*;

    const OPERATOR: &str = "spiffe://test.local/ns/trustmesh-system/sa/trustmesh-operator";

    fn root() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// An operator stand-in whose certificate comes from `root`: it counts completed TLS
    /// handshakes (the gRPC calls themselves then fail, which does not matter here).
    async fn operator(root: &CertifiedIssuer<'static, KeyPair>) -> (String, Arc<AtomicUsize>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(OPERATOR.try_into().unwrap())];
        let leaf = params.signed_by(&key, root).unwrap();
        let cert = SwappableCert::new();
        let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        cert.set(tls::certified_key(vec![leaf.der().clone()], der).unwrap()).unwrap();
        let config = tls::server_config(&[root.der().clone()], ClientAuth::Optional, cert, vec![b"h2".to_vec()]).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if acceptor.accept(tcp).await.is_ok() {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        (addr, handshakes)
    }

    #[tokio::test]
    async fn the_channel_trusts_a_root_that_reached_the_bundle_after_it_was_built() {
        let (old, new) = (root(), root());
        let (addr, handshakes) = operator(&new).await;
        let (bundle_tx, bundle_rx) = watch::channel(vec![old.der().clone()]);
        let channel = channel(addr, bundle_rx, SpiffeId::parse(OPERATOR).unwrap(), None).unwrap();
        let mut client = IdentityClient::new(channel);

        let _ = client.sign(SignRequest::default()).await;
        assert_eq!(handshakes.load(Ordering::SeqCst), 0, "an operator certificate from an unknown root is refused");

        // The operator streamed a bundle with both roots before switching to the new one.
        bundle_tx.send_replace(vec![old.der().clone(), new.der().clone()]);
        let _ = client.sign(SignRequest::default()).await;
        assert!(handshakes.load(Ordering::SeqCst) >= 1, "the next connection uses the bundle as it is now");
    }
}
