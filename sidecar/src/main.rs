//! `trustmesh-sidecar`: the data plane's command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use trustmesh_core::proto::v1::identity_client::IdentityClient;
use trustmesh_core::spiffe::SpiffeId;
use trustmesh_core::tls;
use trustmesh_sidecar::control;
use trustmesh_sidecar::identity::{CredentialSource, GrpcSigner, fetch_svid};
use trustmesh_sidecar::inbound::AppTarget;
use trustmesh_sidecar::outbound::Upstream;
use trustmesh_sidecar::proxy::Limits;
use trustmesh_sidecar::run::{IdentitySource, RunOptions};

/// trustmesh data plane: mutual TLS and least-privilege enforcement beside a workload.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: inbound and outbound proxies, identity renewal, admin port.
    Run(Box<RunArgs>),
    /// Install the iptables rules that redirect the pod's TCP traffic to the sidecar (needs NET_ADMIN).
    Init(InitArgs),
    /// X.509-SVID tools (debugging and scripting).
    Svid {
        #[command(subcommand)]
        command: SvidCommand,
    },
    /// Would this sidecar allow a call, and why? Decides it from a snapshot as the inbound proxy
    /// does, names the policy or default, and lists the rules that name the caller. Exit status:
    /// 0 allowed, 1 denied, 2 the question could not be answered.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// Ask the running sidecar whose admin port is here (its `/config`, loopback only): e.g.
    /// `kubectl exec POD -c trustmesh-sidecar -- trustmesh-sidecar check --admin 127.0.0.1:15020 ...`.
    #[arg(long, conflicts_with = "snapshot", required_unless_present = "snapshot")]
    admin: Option<SocketAddr>,
    /// Or a snapshot file: `--snapshot` of `run`, `trustmesh-operator local snapshot`, or a saved
    /// `/config`; `-` reads standard input.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// The caller's SPIFFE ID, or `unauthenticated` (a plaintext caller in permissive mode).
    #[arg(long)]
    caller: String,
    /// The port called on this workload.
    #[arg(long)]
    port: u16,
    /// HTTP method (default GET when --path is given). Without --method and --path the call is a
    /// TCP connection that speaks no HTTP.
    #[arg(long)]
    method: Option<String>,
    /// HTTP path as the caller sends it, before normalization (default / when --method is given).
    #[arg(long)]
    path: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// Use certificate files from this directory (svid.pem, svid.key, bundle.pem, as `svid fetch`
    /// writes them); re-read when they change, so an external rotator can renew them.
    #[arg(long, conflicts_with_all = ["operator", "token_file", "sa_token_file"])]
    svid_dir: Option<PathBuf>,
    /// The operator's gRPC address, host:port (certificates and policy come from it).
    #[arg(long)]
    operator: Option<String>,
    /// Trust bundle (PEM) to verify the operator with.
    #[arg(long, requires = "operator")]
    bundle: Option<PathBuf>,
    /// Join token file (local mode).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Projected service-account token file (cluster mode).
    #[arg(long)]
    sa_token_file: Option<PathBuf>,
    /// The operator's SPIFFE ID (default: derived from the bundle's trust domain).
    #[arg(long)]
    operator_id: Option<String>,
    /// Policy snapshot file (JSON), watched for changes, instead of following the operator's
    /// Config.Watch stream. Until a snapshot is in force, all traffic is refused.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Explicit inbound listener: LISTEN=APP (mTLS in on LISTEN, plain to APP). Repeatable.
    #[arg(long, value_parser = parse_pair)]
    inbound: Vec<(SocketAddr, SocketAddr)>,
    /// Explicit outbound listener: LISTEN=REMOTE (plain in, mTLS to REMOTE when meshed). Repeatable.
    #[arg(long, value_parser = parse_pair)]
    outbound: Vec<(SocketAddr, SocketAddr)>,
    /// Transparent mode: inbound on 0.0.0.0:15006 and outbound on 127.0.0.1:15001, original
    /// destinations from SO_ORIGINAL_DST (after `trustmesh-sidecar init`).
    #[arg(long)]
    transparent: bool,
    /// With --transparent: also inbound on [::]:15006 and outbound on [::1]:15001, for the
    /// IPv6 rules of `init --ipv6`.
    #[arg(long, requires = "transparent")]
    ipv6: bool,
    /// Admin listener (/live, /ready, /metrics, /config, /app-health).
    #[arg(long, default_value = "127.0.0.1:15020")]
    admin: SocketAddr,
    /// Accept plaintext and certificate-less callers as `unauthenticated` (migration aid).
    #[arg(long)]
    permissive: bool,
    /// An app probe the kubelet may reach through /app-health/<port>/<path> on the admin port, as
    /// PORT:/PATH[?QUERY] (repeat the flag for each). Matched and forwarded exactly as written;
    /// nothing else on the app is reachable there.
    #[arg(long = "probe-path", value_parser = parse_probe)]
    probe_paths: Vec<(u16, String)>,
    /// Do not write the JSON access log to stdout.
    #[arg(long)]
    no_access_log: bool,
    /// Connections open at once, per direction (inbound, outbound); more are closed at accept.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Seconds a client has to send a complete request head (slow-client protection: the connection is closed after, and the access log says `header_timeout`).
    #[arg(long, default_value_t = 10)]
    header_seconds: u64,
    /// Seconds to finish in-flight requests after SIGTERM.
    #[arg(long, default_value_t = 20)]
    drain_seconds: u64,
    /// Seconds a connection (HTTP, opaque TCP, outbound) may carry no byte before it is closed.
    #[arg(long, default_value_t = 3600)]
    idle_seconds: u64,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

#[derive(Args)]
struct InitArgs {
    /// Remove the rules instead of installing them.
    #[arg(long)]
    cleanup: bool,
    /// Inbound ports to redirect to the sidecar: `*` (all) or a comma list.
    #[arg(long, default_value = "*")]
    inbound_ports: String,
    /// Inbound ports never redirected (comma list).
    #[arg(long, default_value = "")]
    exclude_inbound_ports: String,
    /// Outbound destination ports to redirect to the sidecar: `*` (all) or a comma list.
    #[arg(long, default_value = "*")]
    outbound_ports: String,
    /// Outbound destination ports never redirected (comma list).
    #[arg(long, default_value = "")]
    exclude_outbound_ports: String,
    /// Outbound destination CIDRs never redirected (comma list).
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<String>,
    /// The sidecar's uid: its own traffic is never redirected.
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,
    /// Also install the rules for IPv6 (ip6tables).
    #[arg(long)]
    ipv6: bool,
}

fn init(a: InitArgs) -> anyhow::Result<()> {
    use trustmesh_sidecar::iptables::{self, InitConfig, Runner, parse_port_selection, parse_ports};
    let ports = |s: &str| if s.trim().is_empty() { Ok(Vec::new()) } else { parse_ports(s) };
    let cfg = InitConfig {
        proxy_uid: a.proxy_uid,
        include_inbound_ports: parse_port_selection(&a.inbound_ports)?,
        exclude_inbound_ports: ports(&a.exclude_inbound_ports)?,
        include_outbound_ports: parse_port_selection(&a.outbound_ports)?,
        exclude_outbound_ports: ports(&a.exclude_outbound_ports)?,
        exclude_outbound_cidrs: a.exclude_outbound_cidrs.iter().map(|c| iptables::parse_cidr(c)).collect::<Result<_, _>>()?,
        ipv6: a.ipv6,
        ..InitConfig::default()
    };
    if a.cleanup {
        iptables::cleanup(&cfg, &Runner::local())?;
        println!("removed the trustmesh iptables rules");
    } else {
        iptables::apply(&cfg, &Runner::local())?;
        println!("installed the trustmesh iptables rules (inbound -> {}, outbound -> {}, uid {} excluded)", cfg.inbound_port, cfg.outbound_port, cfg.proxy_uid);
    }
    Ok(())
}

fn parse_probe(s: &str) -> Result<(u16, String), String> {
    let (port, path) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected PORT:/PATH, e.g. 8080:/healthz"))?;
    let port: u16 = port.parse().map_err(|e| format!("{s:?}: port: {e}"))?;
    let parsed: Option<http::uri::PathAndQuery> = path.parse().ok();
    if !path.starts_with('/') || parsed.is_none_or(|p| p.as_str() != path) {
        return Err(format!("{s:?}: {path:?} is not an absolute URI path with an optional query, e.g. /healthz?full=1"));
    }
    Ok((port, path.to_owned()))
}

fn parse_pair(s: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let (a, b) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected LISTEN=TARGET, e.g. 127.0.0.1:18445=127.0.0.1:18080"))?;
    Ok((a.parse().map_err(|e| format!("{a:?}: {e}"))?, b.parse().map_err(|e| format!("{b:?}: {e}"))?))
}

#[derive(Subcommand)]
enum SvidCommand {
    /// Fetch an X.509-SVID from the operator and write svid.pem, svid.key (0600) and bundle.pem.
    Fetch(FetchArgs),
}

#[derive(Args)]
struct FetchArgs {
    /// The operator's gRPC address (host:port).
    #[arg(long, default_value = "127.0.0.1:15012")]
    operator: String,
    /// Trust bundle (PEM) to verify the operator with.
    #[arg(long)]
    bundle: PathBuf,
    /// Join token file (local mode).
    #[arg(long, conflicts_with = "sa_token_file", required_unless_present = "sa_token_file")]
    token_file: Option<PathBuf>,
    /// Projected service-account token file (cluster mode).
    #[arg(long)]
    sa_token_file: Option<PathBuf>,
    /// The operator's SPIFFE ID (default: spiffe://<bundle trust domain>/ns/trustmesh-system/sa/trustmesh-operator).
    #[arg(long)]
    operator_id: Option<String>,
    /// Directory to write the files into.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Command::Check(args) = &cli.command {
        return match check(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// GET /config from a sidecar's admin port (plain HTTP/1.0 on loopback; no async needed).
fn admin_config(addr: SocketAddr) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let timeout = Some(std::time::Duration::from_secs(5));
    let mut conn = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .with_context(|| format!("connecting to the sidecar's admin port {addr} (run this inside the pod: kubectl exec)"))?;
    conn.set_read_timeout(timeout)?;
    conn.write_all(b"GET /config HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw).with_context(|| format!("reading /config from {addr}"))?;
    let (head, body) = raw.split_once("\r\n\r\n").with_context(|| format!("{addr} did not answer HTTP"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{addr}/config answered {}: {}", head.lines().next().unwrap_or(""), body.trim());
    Ok(body.to_owned())
}

/// Answers `check`: prints the explanation, returns whether the call is allowed.
fn check(a: &CheckArgs) -> anyhow::Result<bool> {
    use trustmesh_core::check::{Call, check_and_explain};
    use trustmesh_core::snapshot::Snapshot;
    let (text, source) = match (&a.admin, &a.snapshot) {
        (Some(addr), _) => (admin_config(*addr)?, format!("http://{addr}/config")),
        (None, Some(p)) if p.as_os_str() == "-" => (std::io::read_to_string(std::io::stdin()).context("reading the snapshot from standard input")?, "standard input".into()),
        (None, Some(p)) => (std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?, p.display().to_string()),
        (None, None) => bail!("pass --admin ADDR or --snapshot FILE"),
    };
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{source} is not JSON"))?;
    // A sidecar's /config wraps the snapshot (null until one is in force).
    let snapshot = match json.get("snapshot") {
        Some(serde_json::Value::Null) => bail!("that sidecar has no snapshot yet: it refuses every call (fail closed)"),
        Some(inner) => inner.clone(),
        None => json,
    };
    let snapshot: Snapshot = serde_json::from_value(snapshot).context("not a trustmesh snapshot (nor a sidecar's /config)")?;
    let caller = match a.caller.as_str() {
        "unauthenticated" => None,
        id => Some(SpiffeId::parse(id).with_context(|| format!("--caller {id:?}: a SPIFFE ID or `unauthenticated`"))?),
    };
    let http = Call::http_of(a.method.as_deref(), a.path.as_deref());
    let (allowed, explanation) = check_and_explain(&snapshot, &Call { caller: caller.as_ref(), port: a.port, http });
    print!("{explanation}");
    Ok(allowed)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(args) => init(args),
        Command::Check(_) => unreachable!("answered in main"),
        Command::Run(args) => {
            // One worker: a current-thread runtime (no cross-thread wake-ups or work stealing).
            let mut rt = match args.workers {
                Some(1) => tokio::runtime::Builder::new_current_thread(),
                Some(n) => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n.max(1));
                    b
                }
                None => tokio::runtime::Builder::new_multi_thread(),
            };
            let rt = rt.enable_all().build().context("starting the async runtime")?;
            rt.block_on(async { Ok::<_, anyhow::Error>(trustmesh_sidecar::run::run(run_options(*args)?).await?) })
        }
        Command::Svid { command: SvidCommand::Fetch(args) } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
            rt.block_on(fetch(args))
        }
    }
}

fn run_options(a: RunArgs) -> anyhow::Result<RunOptions> {
    let identity = match (a.svid_dir, a.operator) {
        (Some(dir), _) => IdentitySource::Files(dir),
        (None, Some(addr)) => {
            let bundle = a.bundle.context("--bundle is required with --operator")?;
            let roots = read_bundle(&bundle)?;
            let credential = match (a.token_file, a.sa_token_file) {
                (Some(p), _) => CredentialSource::JoinTokenFile(p),
                (None, Some(p)) => CredentialSource::ServiceAccountTokenFile(p),
                (None, None) => bail!("pass --token-file (local mode) or --sa-token-file (cluster mode)"),
            };
            IdentitySource::Operator { addr, operator_id: operator_id(a.operator_id, &roots)?, bundle, credential }
        }
        (None, None) => bail!("pass --svid-dir DIR, or --operator ADDR --bundle FILE --token-file FILE"),
    };
    let mut inbound: Vec<(SocketAddr, AppTarget)> = a.inbound.into_iter().map(|(l, app)| (l, AppTarget::Fixed(app))).collect();
    let mut outbound: Vec<(SocketAddr, Upstream)> = a.outbound.into_iter().map(|(l, r)| (l, Upstream::Fixed(r))).collect();
    if a.transparent {
        inbound.push((SocketAddr::from(([0, 0, 0, 0], 15006)), AppTarget::OriginalDst));
        outbound.push((SocketAddr::from(([127, 0, 0, 1], 15001)), Upstream::OriginalDst));
        if a.ipv6 {
            inbound.push((SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 15006)), AppTarget::OriginalDst));
            outbound.push((SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 15001)), Upstream::OriginalDst));
        }
    }
    if inbound.is_empty() && outbound.is_empty() {
        bail!("no listeners: pass --inbound LISTEN=APP, --outbound LISTEN=REMOTE or --transparent");
    }
    let limits = Limits {
        max_connections: a.max_connections,
        drain_timeout: std::time::Duration::from_secs(a.drain_seconds),
        header_timeout: std::time::Duration::from_secs(a.header_seconds.max(1)),
        idle_timeout: std::time::Duration::from_secs(a.idle_seconds.max(1)),
        ..Limits::default()
    };
    Ok(RunOptions {
        identity,
        snapshot: a.snapshot,
        inbound,
        outbound,
        admin: a.admin,
        permissive: a.permissive,
        probe_paths: a.probe_paths.into_iter().collect(),
        limits,
        access_log: !a.no_access_log,
    })
}

fn read_bundle(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading the trust bundle {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the trust bundle {}", path.display()))?;
    if roots.is_empty() {
        bail!("{} holds no certificate; pass the mesh's bundle.pem", path.display());
    }
    Ok(roots)
}

fn operator_id(explicit: Option<String>, roots: &[CertificateDer<'static>]) -> anyhow::Result<SpiffeId> {
    if let Some(id) = explicit {
        return SpiffeId::parse(&id).with_context(|| format!("--operator-id {id:?}"));
    }
    let td = tls::trust_domain_of_ca(&roots[0]).context("the bundle's first root names no trust domain; pass --operator-id")?;
    Ok(SpiffeId::for_service_account(&td, "trustmesh-system", "trustmesh-operator")?)
}

async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let roots = read_bundle(&args.bundle)?;
    let operator_id = operator_id(args.operator_id, &roots)?;
    let credential = match (args.token_file, args.sa_token_file) {
        (Some(p), _) => CredentialSource::JoinTokenFile(p),
        (None, Some(p)) => CredentialSource::ServiceAccountTokenFile(p),
        (None, None) => bail!("pass --token-file or --sa-token-file"),
    };
    let (_bundle, roots) = tokio::sync::watch::channel(roots);
    let channel = control::channel(args.operator, roots, operator_id, None)?;
    let svid = fetch_svid(&GrpcSigner(IdentityClient::new(channel)), &credential).await?;

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let chain_pem: String = svid.chain.iter().map(|c| pem_block("CERTIFICATE", c)).collect();
    let bundle_pem: String = svid.bundle.iter().map(|c| pem_block("CERTIFICATE", c)).collect();
    write(&args.out.join("svid.pem"), chain_pem.as_bytes(), 0o644)?;
    write(&args.out.join("svid.key"), pem_block("PRIVATE KEY", svid.key.secret_pkcs8_der()).as_bytes(), 0o600)?;
    write(&args.out.join("bundle.pem"), bundle_pem.as_bytes(), 0o644)?;
    let expiry = svid.not_after.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    println!("SPIFFE ID:  {}", svid.spiffe_id);
    println!("expires:    {expiry} (unix seconds; in {} s)", expiry.saturating_sub(now_secs()));
    println!("wrote:      {0}/svid.pem {0}/svid.key {0}/bundle.pem", args.out.display());
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// Writes `path` through a fresh temporary file created with `mode` (never one left behind with
/// another mode), synced, then renamed: a reader never sees half a key, nor a readable one.
fn write(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(|| format!("removing {}", tmp.display())),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
