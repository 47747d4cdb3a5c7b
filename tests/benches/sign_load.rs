//! Issuance latency under 100 concurrent requesters, through the real gRPC server (TLS, join
//! tokens, rate limiter sized out of the way), in one process on loopback.
//!
//! Run: `cargo bench -p trustmesh-tests --bench sign_load` (env `CLIENTS`, `PER_CLIENT`).
//! Prints throughput and p50/p90/p99/max latency of `Identity.Sign` as a client sees it,
//! including key generation and CSR building on the client side.

use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use trustmesh_core::proto::v1::identity_client::IdentityClient;
use trustmesh_core::spiffe::TrustDomain;
use trustmesh_operator::local::{LocalDir, init::init};
use trustmesh_operator::run::{LocalOptions, start_local};
use trustmesh_sidecar::control;
use trustmesh_sidecar::identity::{CredentialSource, GrpcSigner, fetch_svid};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let clients = env("CLIENTS", 100);
    let per_client = env("PER_CLIENT", 50);
    let dir = std::env::temp_dir().join(format!("trustmesh-sign-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    init(&LocalDir::new(&dir), &TrustDomain::new("bench.local").expect("td")).expect("local init");
    let running = start_local(LocalOptions {
        dir: dir.clone(),
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        poll_interval: Duration::from_secs(1),
        sign_burst: u32::MAX,
        sign_rate: 1e9,
    })
    .await
    .expect("control plane");
    let roots: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("bundle.pem")).expect("bundle").collect::<Result<_, _>>().expect("bundle pem");
    let credential = CredentialSource::JoinTokenFile(dir.join("tokens/demo"));

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let channel = control::channel(running.grpc_addr.to_string(), tokio::sync::watch::channel(roots.clone()).1, running.operator_id.clone(), None).expect("channel");
        let signer = GrpcSigner(IdentityClient::new(channel));
        let credential = credential.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                fetch_svid(&signer, &credential).await.expect("signed");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let wall = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "Identity.Sign, {clients} concurrent clients x {per_client}: {} SVIDs in {:.2?} = {:.0}/s; latency p50 {:.2?} p90 {:.2?} p99 {:.2?} max {:.2?}",
        all.len(),
        wall,
        all.len() as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all[all.len() - 1]
    );
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
}
