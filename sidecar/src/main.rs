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

/// trustmesh data plane: mutual TLS and least-privilege enforcement beside a workload.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// X.509-SVID tools (debugging and scripting).
    Svid {
        #[command(subcommand)]
        command: SvidCommand,
    },
}

#[derive(Subcommand)]
enum SvidCommand {
    /// Fetch an X.509-SVID from the operator and write svid.pem, svid.key (0600) and bundle.pem.
    Fetch(FetchArgs),
}

#[derive(Args)]
struct FetchArgs {
    /// The operator's gRPC address.
    #[arg(long, default_value = "127.0.0.1:15012")]
    operator: SocketAddr,
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
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Svid { command: SvidCommand::Fetch(args) } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
            rt.block_on(fetch(args))
        }
    }
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
    let channel = control::channel(args.operator, &roots, operator_id, None)?;
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

fn write(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
