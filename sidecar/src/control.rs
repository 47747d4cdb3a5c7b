//! The gRPC channel to the operator: TLS 1.3, the operator's certificate checked against the
//! trust bundle and its SPIFFE ID (secure naming), optionally our own SVID as client certificate.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
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
/// connection so a Service name follows its endpoints), which must present `operator_id`.
pub fn channel(
    addr: impl Into<String>,
    bundle: &[CertificateDer<'static>],
    operator_id: SpiffeId,
    client_cert: Option<Arc<dyn ResolvesClientCert>>,
) -> Result<Channel, ControlError> {
    let addr: String = addr.into();
    let verifier = SpiffeServerVerifier::new(bundle, ExpectedServer::Ids(vec![operator_id]))?;
    let config = Arc::new(tls::client_config(verifier, client_cert, vec![b"h2".to_vec()])?);
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ControlError::Connect { addr: addr.clone(), reason: e.to_string() })?
        .connect_timeout(std::time::Duration::from_secs(5));
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let (config, addr) = (config.clone(), addr.clone());
        async move {
            let tcp = TcpStream::connect(addr.as_str()).await?;
            tcp.set_nodelay(true)?;
            let stream = TlsConnector::from(config).connect(tls::placeholder_server_name(), tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}
