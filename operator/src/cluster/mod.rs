//! Cluster mode (`trustmesh-operator run`): desired state from the Kubernetes API, the CA in a
//! Secret, the gRPC APIs and the injection webhook on every replica, and the status controllers,
//! bundle publishing and webhook caBundle on the elected leader only.

pub mod lease;
pub mod reports;
pub mod secrets;
pub mod source;
pub mod status;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::net::TcpListener;
use tokio::sync::watch;
use trustmesh_core::policy::DefaultAction;
use trustmesh_core::proto::v1::config_server::ConfigServer;
use trustmesh_core::proto::v1::identity_server::IdentityServer;
use trustmesh_core::spiffe::{SpiffeId, TrustDomain};
use trustmesh_core::tls::{self, ClientAuth, SwappableCert};

use crate::compile::MeshSettings;
use crate::local::model::OPERATOR_SERVICE_ACCOUNT;
use crate::metrics::Metrics;
use crate::run::{keep_serving_cert_fresh, renew_serving_cert};
use crate::server::incoming::tls_incoming;
use crate::server::ratelimit::RateLimiter;
use crate::server::{Authenticator, ConfigService, IdentityService, ProxyRegistry};
use crate::webhook::inject::{InjectConfig, InjectionContext, MtlsMode};

/// Options of `trustmesh-operator run` (from the Helm chart's values).
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The operator's namespace.
    pub namespace: String,
    /// This replica's pod name (leader-election identity).
    pub pod_name: String,
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// Mesh-wide default action.
    pub default_action: DefaultAction,
    /// Mesh-wide egress mode for destinations that are not meshed.
    pub egress: trustmesh_core::snapshot::Egress,
    /// Strict or permissive mTLS for injected sidecars.
    pub permissive: bool,
    /// Secret holding the CA.
    pub ca_secret: String,
    /// The CA Secret is supplied by the user (never generated).
    pub ca_user_supplied: bool,
    /// Certificate lifetime of identities that set no `ttl`.
    pub default_ttl: Duration,
    /// Longest certificate lifetime.
    pub max_ttl: Duration,
    /// Image of injected sidecars.
    pub sidecar_image: String,
    /// uid of injected sidecars.
    pub sidecar_uid: i64,
    /// Injected pods redirect IPv6 too (`init --ipv6`, `run --ipv6`).
    pub sidecar_ipv6: bool,
    /// imagePullPolicy of injected containers.
    pub sidecar_pull_policy: Option<String>,
    /// Requests and limits of injected containers.
    pub sidecar_resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// MutatingWebhookConfiguration whose caBundle the leader keeps current.
    pub webhook_config: String,
    /// The operator's Service name (DNS SANs of the serving certificate, sidecars' operator address).
    pub service_name: String,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Webhook listen address.
    pub webhook_listen: SocketAddr,
    /// Metrics listen address.
    pub metrics_listen: SocketAddr,
    /// Signing requests one pod may burst.
    pub sign_burst: u32,
    /// Signing requests per second one pod may sustain.
    pub sign_rate: f64,
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No kubeconfig or in-cluster configuration.
    #[error("cannot reach the Kubernetes API: {0}; run inside a cluster or set KUBECONFIG")]
    Client(kube::Error),
    /// The CA could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] secrets::SecretError),
    /// A listener or the serving certificate failed.
    #[error("{0}")]
    Serve(String),
}

/// Runs cluster mode until the process is stopped.
pub async fn run(opts: ClusterOptions) -> Result<(), ClusterError> {
    let client = Client::try_default().await.map_err(ClusterError::Client)?;
    let settings = MeshSettings {
        trust_domain: opts.trust_domain.clone(),
        default_action: opts.default_action,
        egress: opts.egress,
        default_ttl: opts.default_ttl,
        max_ttl: opts.max_ttl,
    };
    let ca = Arc::new(secrets::load_or_create_ca(&client, &opts.namespace, &opts.ca_secret, &opts.trust_domain, opts.ca_user_supplied).await?);
    let metrics = Metrics::new();
    let (stores, view, matched) = source::watch_cluster(client.clone(), settings.clone()).await;

    let operator_id = SpiffeId::for_service_account(&opts.trust_domain, &opts.namespace, OPERATOR_SERVICE_ACCOUNT).map_err(|e| ClusterError::Serve(e.to_string()))?;
    let svc = &opts.service_name;
    let ns = &opts.namespace;
    let dns = vec![svc.clone(), format!("{svc}.{ns}"), format!("{svc}.{ns}.svc"), format!("{svc}.{ns}.svc.cluster.local")];
    let serving = SwappableCert::new();
    renew_serving_cert(&ca, &operator_id, &dns, &serving).map_err(ClusterError::Serve)?;
    tokio::spawn(keep_serving_cert_fresh(ca.clone(), operator_id.clone(), dns, serving.clone()));

    // gRPC: identity and config, on every replica.
    let grpc_tls = tls::server_config(ca.bundle().roots_der(), ClientAuth::Optional, serving.clone(), vec![b"h2".to_vec()]).map_err(|e| ClusterError::Serve(e.to_string()))?;
    let identity = IdentityService::new(ca.clone(), view.clone(), Authenticator::Kubernetes(client.clone()), RateLimiter::new(opts.sign_burst, opts.sign_rate), metrics.clone());
    let issued = identity.issued();
    let proxies = Arc::new(ProxyRegistry::default());
    let config = ConfigService::new(view.clone(), ca.clone(), proxies.clone(), metrics.clone());
    let grpc = bind(opts.listen).await?;
    let incoming = tls_incoming(grpc, Arc::new(grpc_tls));
    tokio::spawn(async move {
        let server = tonic::transport::Server::builder().add_service(IdentityServer::new(identity)).add_service(ConfigServer::new(config));
        if let Err(e) = server.serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });

    // The injection webhook, on every replica.
    let webhook_tls = tls::server_config(ca.bundle().roots_der(), ClientAuth::None, serving, vec![b"h2".to_vec(), b"http/1.1".to_vec()]).map_err(|e| ClusterError::Serve(e.to_string()))?;
    let mut inject = InjectConfig::new(&opts.sidecar_image, format!("{svc}.{ns}.svc:{}", opts.listen.port()), operator_id.to_string(), opts.trust_domain.as_str());
    inject.mtls_mode = if opts.permissive { MtlsMode::Permissive } else { MtlsMode::Strict };
    inject.proxy_uid = opts.sidecar_uid;
    inject.ipv6 = opts.sidecar_ipv6;
    inject.image_pull_policy = opts.sidecar_pull_policy.clone();
    if let Some(r) = &opts.sidecar_resources {
        inject.resources = r.clone();
    }
    let (hook_stores, operator_ns) = (stores.clone(), opts.namespace.clone());
    let contexts: crate::webhook::server::ContextFn = Arc::new(move |namespace: &str| InjectionContext {
        namespace: namespace.to_owned(),
        namespace_labels: hook_stores.namespace(namespace),
        operator_namespace: operator_ns.clone(),
        config: inject.clone(),
    });
    tokio::spawn(crate::webhook::server::serve(bind(opts.webhook_listen).await?, Arc::new(webhook_tls), contexts));

    let bundle_ca = ca.clone();
    tokio::spawn(crate::metrics::serve(bind(opts.metrics_listen).await?, metrics.clone(), Arc::new(move || bundle_ca.bundle().to_spiffe_jwks(bundle_ca.bundle().sequence(), 300))));

    // Every replica reports its proxies and issued certificates; the leader merges them.
    tokio::spawn(reports::keep_publishing(client.clone(), opts.namespace.clone(), opts.pod_name.clone(), proxies.clone(), issued.clone()));

    // Leader-only work.
    let (leading_tx, mut leading) = watch::channel(false);
    let elector = lease::Elector { namespace: opts.namespace.clone(), name: "trustmesh-operator".into(), identity: opts.pod_name.clone(), duration: Duration::from_secs(15), retry: Duration::from_secs(5) };
    tokio::spawn(elector.run(client.clone(), leading_tx));
    let recorder = Recorder::new(client.clone(), Reporter { controller: "trustmesh-operator".into(), instance: Some(opts.pod_name.clone()) });
    tracing::info!(namespace = %opts.namespace, trust_domain = %opts.trust_domain.as_str(), %operator_id, "control plane running in cluster mode");
    let mut view_changes = view.clone();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = view_changes.changed() => {}
            _ = leading.changed() => {}
            _ = tokio::time::sleep(status::retry_after(failures)) => {}
        }
        if !*leading.borrow() {
            continue;
        }
        let started = Instant::now();
        let current = view_changes.borrow_and_update().clone();
        let objs = stores.snapshot();
        let matched = matched.borrow().clone();
        // Every replica's proxies and issued certificates; this replica's own alone if the
        // reports cannot be read.
        let merged = match reports::collect(&client, &opts.namespace, k8s_openapi::jiff::Timestamp::now()).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the replicas' reports; counting this replica's proxies only");
                reports::merge([&reports::Report::of(&proxies, &issued)])
            }
        };
        let result = status::write_status(
            &client,
            Some(&recorder),
            &current,
            &objs,
            &matched,
            &|key| merged.proxies.get(key).cloned().unwrap_or_default(),
            &|key| merged.issued.get(key).copied().unwrap_or(0),
        )
        .await;
        metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics.reconcile_errors.get_or_create(&crate::metrics::ReasonLabel { reason: e.kind() }).inc();
                tracing::warn!(error = %e, retry_in = ?status::retry_after(failures), "status update failed; retrying on the next change or after the backoff");
            }
        }
        let injected: Vec<String> = view::bundle_namespaces(&objs).into_iter().collect();
        let pem = ca.bundle().to_pem();
        if let Err(e) = secrets::publish_bundle(&client, &injected, &pem).await {
            metrics.reconcile_errors.get_or_create(&crate::metrics::ReasonLabel { reason: "bundle" }).inc();
            tracing::warn!(error = %e, "cannot publish the trust bundle");
        }
        if let Err(e) = secrets::patch_webhook_ca(&client, &opts.webhook_config, &pem).await {
            metrics.reconcile_errors.get_or_create(&crate::metrics::ReasonLabel { reason: "webhook_ca" }).inc();
            tracing::warn!(error = %e, "cannot keep the webhook caBundle current");
        }
        metrics.set_coverage(&current);
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ClusterError> {
    TcpListener::bind(addr).await.map_err(|e| ClusterError::Serve(format!("cannot listen on {addr}: {e}")))
}
