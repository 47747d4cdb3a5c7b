//! Wiring for local mode: the directory source, the compiler, the CA and the servers, started
//! together and stopped together (dropping [`Running`] stops every task).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trustmesh_core::proto::v1::config_server::ConfigServer;
use trustmesh_core::proto::v1::identity_server::IdentityServer;
use trustmesh_core::spiffe::SpiffeId;
use trustmesh_core::tls::{self, ClientAuth, SwappableCert};

use crate::ca::{CertificateAuthority, load_or_generate_dir};
use crate::local::{LocalDir, LocalError, write_file};
use crate::metrics::Metrics;
use crate::server::incoming::tls_incoming;
use crate::server::ratelimit::RateLimiter;
use crate::server::{Authenticator, ConfigService, IdentityService, ProxyRegistry};
use crate::state::MeshView;

/// Lifetime of the operator's own serving certificate; renewed at half-life.
pub const OPERATOR_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The local directory is unusable.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another address with --listen / --metrics-listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The operator's own certificate could not be made.
    #[error("cannot issue the operator's serving certificate: {0}")]
    ServingCert(String),
}

/// Options of `trustmesh-operator local`.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The directory (see [`crate::local`]).
    pub dir: PathBuf,
    /// gRPC listen address (identity and config).
    pub grpc_listen: SocketAddr,
    /// Metrics, health and bundle listen address.
    pub metrics_listen: SocketAddr,
    /// How often the directory is checked for changes.
    pub poll_interval: Duration,
    /// Signing requests one caller may burst.
    pub sign_burst: u32,
    /// Signing requests per second one caller may sustain.
    pub sign_rate: f64,
}

/// A running local control plane.
pub struct Running {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where metrics listen.
    pub metrics_addr: SocketAddr,
    /// The operator's SPIFFE ID (what sidecars expect of the server).
    pub operator_id: SpiffeId,
    /// The current view (for in-process callers and tests).
    pub view: watch::Receiver<Arc<MeshView>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Sidecars connected to `Config.Watch`.
    pub proxies: Arc<ProxyRegistry>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until a task ends (they run forever unless something fails).
    pub async fn wait(mut self) {
        if let Some(t) = self.tasks.pop() {
            let _ = t.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the local control plane.
pub async fn start_local(opts: LocalOptions) -> Result<Running, RunError> {
    let dir = LocalDir::new(&opts.dir);
    let mut state = dir.load()?;
    crate::local::carry_generations(None, &mut state);
    let td = state.settings.trust_domain.clone();
    let (ca, created) = load_or_generate_dir(&dir.ca_dir(), &td).map_err(|source| LocalError::Ca { dir: dir.ca_dir(), source })?;
    if created {
        tracing::info!(dir = %dir.ca_dir().display(), "generated a new root CA");
    }
    write_file(&dir.bundle_pem(), ca.bundle().to_pem().as_bytes(), 0o644)?;
    write_file(&dir.bundle_jwks(), ca.bundle().to_spiffe_jwks(ca.bundle().sequence(), 300).as_bytes(), 0o644)?;
    let ca = Arc::new(ca);
    let operator_id = state.operator_id.clone();
    let metrics = Metrics::new();

    let initial = Arc::new(MeshView::from_local(&state, 1));
    metrics.set_coverage(&initial);
    let (view_tx, view_rx) = watch::channel(initial);
    let mut tasks = Vec::new();
    let mut previous = state.clone();
    let coverage = metrics.clone();
    tasks.push(tokio::spawn(crate::local::watch::run(dir.clone(), opts.poll_interval, move |mut state| {
        crate::local::carry_generations(Some(&previous), &mut state);
        let version = view_tx.borrow().version + 1;
        let view = Arc::new(MeshView::from_local(&state, version));
        coverage.set_coverage(&view);
        view_tx.send_replace(view);
        previous = state;
    })));

    let serving = SwappableCert::new();
    let dns = vec!["localhost".to_owned()];
    renew_serving_cert(&ca, &operator_id, &dns, &serving).map_err(RunError::ServingCert)?;
    tasks.push(tokio::spawn(keep_serving_cert_fresh(ca.clone(), operator_id.clone(), dns, serving.clone())));
    let config = tls::server_config(ca.bundle().roots_der(), ClientAuth::Optional, serving, vec![b"h2".to_vec()])
        .map_err(|e| RunError::ServingCert(e.to_string()))?;

    let grpc = TcpListener::bind(opts.grpc_listen).await.map_err(|source| RunError::Bind { addr: opts.grpc_listen, source })?;
    let grpc_addr = grpc.local_addr().map_err(|source| RunError::Bind { addr: opts.grpc_listen, source })?;
    let limiter = RateLimiter::new(opts.sign_burst, opts.sign_rate);
    let identity = IdentityService::new(ca.clone(), view_rx.clone(), Authenticator::Local, limiter, metrics.clone());
    let proxies = Arc::new(ProxyRegistry::default());
    let config_service = ConfigService::new(view_rx.clone(), ca.clone(), proxies.clone(), metrics.clone());
    let incoming = tls_incoming(grpc, Arc::new(config));
    tasks.push(tokio::spawn(async move {
        let server = tonic::transport::Server::builder()
            .add_service(IdentityServer::new(identity))
            .add_service(ConfigServer::new(config_service));
        if let Err(e) = server.serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    }));

    let m = TcpListener::bind(opts.metrics_listen).await.map_err(|source| RunError::Bind { addr: opts.metrics_listen, source })?;
    let metrics_addr = m.local_addr().map_err(|source| RunError::Bind { addr: opts.metrics_listen, source })?;
    let bundle_ca = ca.clone();
    tasks.push(tokio::spawn(crate::metrics::serve(m, metrics.clone(), Arc::new(move || bundle_ca.bundle().to_spiffe_jwks(bundle_ca.bundle().sequence(), 300)))));

    tracing::info!(%grpc_addr, %metrics_addr, operator_id = %operator_id, trust_domain = %td, "control plane running in local mode");
    Ok(Running { grpc_addr, metrics_addr, operator_id, view: view_rx, metrics, proxies, tasks })
}

/// Issues a fresh serving certificate for the operator into `slot`.
pub(crate) fn renew_serving_cert(ca: &CertificateAuthority, id: &SpiffeId, dns: &[String], slot: &SwappableCert) -> Result<SystemTime, String> {
    let (svid, key_pem) = ca.issue_with_new_key(id, OPERATOR_CERT_TTL, SystemTime::now(), dns).map_err(|e| e.to_string())?;
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let chain = std::iter::once(svid.cert_der).chain(svid.chain_der).map(rustls::pki_types::CertificateDer::from).collect();
    let certified = tls::certified_key(chain, key).map_err(|e| e.to_string())?;
    slot.set(certified).map_err(|e| e.to_string())?;
    Ok(svid.not_after)
}

pub(crate) async fn keep_serving_cert_fresh(ca: Arc<CertificateAuthority>, id: SpiffeId, dns: Vec<String>, slot: Arc<SwappableCert>) {
    loop {
        let wait = slot
            .not_after()
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .map_or(Duration::from_secs(5), |left| left / 2);
        tokio::time::sleep(wait).await;
        match renew_serving_cert(&ca, &id, &dns, &slot) {
            Ok(not_after) => tracing::info!(?not_after, "renewed the operator's serving certificate"),
            Err(e) => tracing::error!(error = %e, "cannot renew the operator's serving certificate; retrying in 5s"),
        }
    }
}
