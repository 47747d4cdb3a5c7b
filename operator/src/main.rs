//! `trustmesh-operator`: the control plane's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use trustmesh_core::spiffe::{SpiffeId, TrustDomain};
use trustmesh_operator::local::{LocalDir, init::init};
use trustmesh_operator::run::{LocalOptions, start_local};

/// trustmesh control plane: workload identity and least-privilege policy for a service mesh.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CustomResourceDefinition as YAML (or write one file per CRD with --out-dir).
    Crds {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run the control plane in a Kubernetes cluster (what the Helm chart starts).
    Run(Box<RunArgs>),
    /// A real mesh on this machine: three services with sidecars, allowed and denied calls, a live
    /// policy edit and a quarantine. No cluster, no root.
    Demo,
    /// Run the control plane without Kubernetes, from a directory of resources.
    Local(LocalArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The operator's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// This replica's pod name (leader election).
    #[arg(long, env = "POD_NAME")]
    pod_name: String,
    /// Trust domain of every SPIFFE ID.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// deny | audit | allow: what happens to calls no enforced rule matches.
    #[arg(long, default_value = "deny")]
    default_action: String,
    /// open | locked: whether sidecars pass through connections to destinations that are not
    /// meshed, or refuse them. A namespace label trustmesh.dev/egress overrides it.
    #[arg(long, default_value = "open")]
    egress: String,
    /// strict | permissive: whether injected sidecars accept plaintext callers.
    #[arg(long, default_value = "strict")]
    mtls_mode: String,
    /// Secret (in --namespace) holding the CA: tls.crt, tls.key, ca.crt.
    #[arg(long, default_value = "trustmesh-ca")]
    ca_secret: String,
    /// The CA Secret is supplied by you (root or intermediate); never generate one.
    #[arg(long)]
    ca_user_supplied: bool,
    /// Certificate lifetime of WorkloadIdentities that set no ttl.
    #[arg(long, env = "TRUSTMESH_CERT_DEFAULT_TTL", default_value = "1h")]
    cert_default_ttl: String,
    /// Longest certificate lifetime a WorkloadIdentity may ask for (at most 24h).
    #[arg(long, env = "TRUSTMESH_CERT_MAX_TTL", default_value = "24h")]
    cert_max_ttl: String,
    /// Image of injected sidecars.
    #[arg(long)]
    sidecar_image: String,
    /// uid of injected sidecars (their own traffic is not redirected).
    #[arg(long, env = "TRUSTMESH_SIDECAR_UID", default_value_t = 1337)]
    sidecar_uid: i64,
    /// Injected pods also redirect IPv6 (ip6tables) and their sidecars listen on IPv6: for
    /// dual-stack and IPv6 clusters.
    #[arg(long, env = "TRUSTMESH_SIDECAR_IPV6", default_value_t = false, action = clap::ArgAction::Set)]
    sidecar_ipv6: bool,
    /// imagePullPolicy of injected containers.
    #[arg(long, env = "TRUSTMESH_SIDECAR_IMAGE_PULL_POLICY")]
    sidecar_image_pull_policy: Option<String>,
    /// Requests and limits of injected containers, as JSON ({"requests": {...}, "limits": {...}}).
    #[arg(long, env = "TRUSTMESH_SIDECAR_RESOURCES")]
    sidecar_resources: Option<String>,
    /// MutatingWebhookConfiguration whose caBundle is kept current.
    #[arg(long, default_value = "trustmesh-injector")]
    webhook_config: String,
    /// The operator's Service name.
    #[arg(long, default_value = "trustmesh-operator")]
    service_name: String,
    /// gRPC address (identity and config).
    #[arg(long, default_value = "0.0.0.0:15012")]
    listen: SocketAddr,
    /// Admission webhook address.
    #[arg(long, default_value = "0.0.0.0:15017")]
    webhook_listen: SocketAddr,
    /// Metrics and health address.
    #[arg(long, default_value = "0.0.0.0:15014")]
    metrics_listen: SocketAddr,
    /// Signing requests one pod may burst.
    #[arg(long, default_value_t = 10)]
    sign_burst: u32,
    /// Signing requests per second one pod may sustain.
    #[arg(long, default_value_t = 1.0)]
    sign_rate: f64,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct LocalArgs {
    #[command(subcommand)]
    command: Option<LocalCommand>,
    /// The directory (`local init DIR` makes one).
    #[arg(long, env = "TRUSTMESH_DIR")]
    dir: Option<PathBuf>,
    /// gRPC address for the identity and config APIs.
    #[arg(long, default_value = "127.0.0.1:15012")]
    listen: SocketAddr,
    /// Address for /metrics, /healthz and /bundle.jwks.
    #[arg(long, default_value = "127.0.0.1:15014")]
    metrics_listen: SocketAddr,
    /// How often to check the directory for changes, in milliseconds.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// Signing requests one workload may burst.
    #[arg(long, default_value_t = 10)]
    sign_burst: u32,
    /// Signing requests per second one workload may sustain.
    #[arg(long, default_value_t = 1.0)]
    sign_rate: f64,
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Write a ready example directory: CA, bundle, a WorkloadIdentity, a LocalWorkload and its join token.
    Init {
        /// Where to write it (must not hold a mesh yet).
        dir: PathBuf,
        /// Trust domain of the mesh.
        #[arg(long, default_value = "local.trustmesh")]
        trust_domain: String,
    },
    /// Register a local workload: a WorkloadIdentity, a LocalWorkload and a fresh join token.
    AddWorkload {
        /// The local directory.
        dir: PathBuf,
        /// Namespace of the identity.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Name of the identity (and of its service account).
        #[arg(long)]
        name: String,
        /// Where its sidecar accepts inbound mTLS (host:port), so callers' sidecars mesh to it.
        #[arg(long)]
        address: Option<String>,
    },
    /// Print the snapshot (JSON) the sidecars of one identity enforce, as the control plane computes it.
    Snapshot {
        /// The local directory.
        dir: PathBuf,
        /// The identity, as NAMESPACE/NAME.
        identity: String,
    },
    /// Would the target's sidecar allow a call, and why? Compiles the directory as the running
    /// control plane would and decides the call as the sidecar does. Exit status: 0 allowed,
    /// 1 denied, 2 the question could not be answered.
    Check(Box<LocalCheckArgs>),
}

/// The question of `local check`.
#[derive(Args)]
struct LocalCheckArgs {
    /// The local directory.
    dir: PathBuf,
    /// The called WorkloadIdentity, as NAMESPACE/NAME.
    #[arg(long)]
    target: String,
    /// The caller: a WorkloadIdentity as NAMESPACE/NAME, a SPIFFE ID, or `unauthenticated`.
    #[arg(long)]
    caller: String,
    /// The port called.
    #[arg(long)]
    port: u16,
    /// HTTP method (default GET when --path is given). Without --method and --path the call
    /// is a TCP connection that speaks no HTTP.
    #[arg(long)]
    method: Option<String>,
    /// HTTP path as the caller sends it, before normalization (default / with --method).
    #[arg(long)]
    path: Option<String>,
}

fn ttl_flag(flag: &str, value: &str) -> anyhow::Result<Duration> {
    let ttl = trustmesh_api::duration::parse_duration(value).with_context(|| format!("{flag} {value:?}"))?;
    let (min, max) = trustmesh_operator::compile::TTL_BOUNDS;
    anyhow::ensure!(ttl >= min && ttl <= max, "{flag} {value:?} must be between 5m and 24h");
    Ok(ttl)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Local(LocalArgs { command: Some(LocalCommand::Check(q)), .. }) = &cli.command {
        return match local_check(q) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    // The demo prints its own story; the servers log at info.
    let default_level = if matches!(cli.command, Command::Demo) { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The compiled view of a local directory, as `local --dir` would serve it.
fn local_view(dir: &std::path::Path) -> anyhow::Result<trustmesh_operator::state::MeshView> {
    let mut state = LocalDir::new(dir).load()?;
    trustmesh_operator::local::carry_generations(None, &mut state);
    Ok(trustmesh_operator::state::MeshView::from_local(&state, 1))
}

/// The snapshot of `identity` (NAMESPACE/NAME), or why there is none.
fn snapshot_of(view: &trustmesh_operator::state::MeshView, identity: &str) -> anyhow::Result<trustmesh_core::snapshot::Snapshot> {
    let (namespace, name) = identity.split_once('/').with_context(|| format!("{identity:?}: a WorkloadIdentity as NAMESPACE/NAME"))?;
    let key = trustmesh_operator::compile::ObjectKey { namespace: namespace.into(), name: name.into() };
    view.snapshot_for(&key).with_context(|| {
        let why = view.compiled.identities.get(&key).and_then(|r| r.problems.first()).map(|p| p.to_string());
        format!("no servable WorkloadIdentity {identity}: {}", why.unwrap_or_else(|| "it does not exist".into()))
    })
}

/// Answers `local check`: prints the explanation, returns whether the call is allowed.
fn local_check(q: &LocalCheckArgs) -> anyhow::Result<bool> {
    use trustmesh_core::check::{Call, check_and_explain};
    let (dir, target, caller, port) = (q.dir.as_path(), q.target.as_str(), q.caller.as_str(), q.port);
    let (method, path) = (q.method.as_deref(), q.path.as_deref());
    let view = local_view(dir)?;
    let snapshot = snapshot_of(&view, target)?;
    let caller = match caller {
        "unauthenticated" => None,
        id if id.starts_with("spiffe://") => Some(SpiffeId::parse(id).with_context(|| format!("--caller {id:?}"))?),
        identity => {
            let (namespace, name) = identity.split_once('/').with_context(|| format!("--caller {identity:?}: NAMESPACE/NAME, a SPIFFE ID, or `unauthenticated`"))?;
            let key = trustmesh_operator::compile::ObjectKey { namespace: namespace.into(), name: name.into() };
            let id = view.compiled.identities.get(&key).and_then(|r| r.spiffe_id.clone());
            Some(id.with_context(|| format!("--caller {identity}: no such WorkloadIdentity in {}", dir.display()))?)
        }
    };
    let http = Call::http_of(method, path);
    let (allowed, explanation) = check_and_explain(&snapshot, &Call { caller: caller.as_ref(), port, http });
    print!("{explanation}");
    Ok(allowed)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => {
            let opts = trustmesh_operator::cluster::ClusterOptions {
                namespace: a.namespace,
                pod_name: a.pod_name,
                trust_domain: TrustDomain::new(&a.trust_domain).with_context(|| format!("--trust-domain {:?}", a.trust_domain))?,
                default_action: a.default_action.parse().map_err(anyhow::Error::msg).context("--default-action")?,
                egress: a.egress.parse().map_err(anyhow::Error::msg).context("--egress")?,
                permissive: match a.mtls_mode.as_str() {
                    "strict" => false,
                    "permissive" => true,
                    other => anyhow::bail!("--mtls-mode {other:?}: use strict or permissive"),
                },
                ca_secret: a.ca_secret,
                ca_user_supplied: a.ca_user_supplied,
                default_ttl: ttl_flag("--cert-default-ttl", &a.cert_default_ttl)?,
                max_ttl: ttl_flag("--cert-max-ttl", &a.cert_max_ttl)?,
                sidecar_image: a.sidecar_image,
                sidecar_uid: a.sidecar_uid,
                sidecar_ipv6: a.sidecar_ipv6,
                sidecar_pull_policy: a.sidecar_image_pull_policy.filter(|p| !p.is_empty()),
                sidecar_resources: match a.sidecar_resources.as_deref().filter(|r| !r.is_empty()) {
                    Some(json) => Some(serde_json::from_str(json).context("--sidecar-resources must be a ResourceRequirements JSON object")?),
                    None => None,
                },
                webhook_config: a.webhook_config,
                service_name: a.service_name,
                listen: a.listen,
                webhook_listen: a.webhook_listen,
                metrics_listen: a.metrics_listen,
                sign_burst: a.sign_burst,
                sign_rate: a.sign_rate,
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(trustmesh_operator::cluster::run(opts))?;
        }
        Command::Demo => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(trustmesh_operator::demo::run())?;
        }
        Command::Crds { out_dir: None } => print!("{}", trustmesh_operator::crdgen::render_all()?),
        Command::Crds { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, yaml) in trustmesh_operator::crdgen::render()? {
                let path = dir.join(name);
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Local(LocalArgs { command: Some(LocalCommand::Init { dir, trust_domain }), .. }) => {
            let td = TrustDomain::new(&trust_domain).with_context(|| format!("--trust-domain {trust_domain:?}"))?;
            let report = init(&LocalDir::new(&dir), &td)?;
            println!("initialized {} (trust domain {})", dir.display(), td.as_str());
            println!("  trust bundle:   {}", report.bundle_path.display());
            println!("  join token for workload {:?}: {}", report.workload, report.token_path.display());
            println!("start it with: trustmesh-operator local --dir {}", dir.display());
        }
        Command::Local(LocalArgs { command: Some(LocalCommand::AddWorkload { dir, namespace, name, address }), .. }) => {
            let token = trustmesh_operator::local::init::add_workload(&LocalDir::new(&dir), &namespace, &name, address.as_deref())?;
            println!("registered {namespace}/{name}; join token in {}", token.display());
        }
        Command::Local(LocalArgs { command: Some(LocalCommand::Snapshot { dir, identity }), .. }) => {
            let snapshot = snapshot_of(&local_view(&dir)?, &identity)?;
            println!("{}", serde_json::to_string_pretty(&snapshot)?);
        }
        Command::Local(LocalArgs { command: Some(LocalCommand::Check(_)), .. }) => unreachable!("answered in main"),
        Command::Local(args) => {
            let dir = args.dir.context("--dir DIR is required (or `local init DIR` to create one)")?;
            let opts = LocalOptions {
                dir,
                grpc_listen: args.listen,
                metrics_listen: args.metrics_listen,
                poll_interval: Duration::from_millis(args.poll_ms.max(10)),
                sign_burst: args.sign_burst,
                sign_rate: args.sign_rate,
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(async {
                let running = start_local(opts).await?;
                tokio::select! {
                    _ = running.wait() => anyhow::bail!("a control-plane task stopped unexpectedly"),
                    _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; stopping"); Ok(()) }
                }
            })?;
        }
    }
    Ok(())
}
