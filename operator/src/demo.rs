//! `trustmesh-operator demo`: a real mesh on this machine, no cluster and no root needed.
//!
//! Three services (frontend, orders, payments), each a small HTTP app with a real
//! `trustmesh-sidecar` process in explicit mode on loopback, and this control plane in local mode.
//! The demo makes allowed and denied calls and prints who decided each one (read from the called
//! sidecar's access log by request id), edits a policy and times how long until it is enforced,
//! quarantines the frontend and times how long until its calls stop, then exits 0.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use trustmesh_core::spiffe::TrustDomain;

use crate::local::init::{add_workload, init};
use crate::local::{LocalDir, write_file};
use crate::run::{LocalOptions, start_local};

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Setting up the directory or the control plane failed.
    #[error("setup: {0}")]
    Setup(String),
    /// The sidecar binary is missing and could not be built.
    #[error("the trustmesh-sidecar binary is missing next to {0} and could not be built; run `cargo build --release -p trustmesh-sidecar`")]
    NoSidecar(PathBuf),
    /// A step did not behave as the demo expects.
    #[error("{0}")]
    Unexpected(String),
}

fn setup<E: std::fmt::Display>(e: E) -> DemoError {
    DemoError::Setup(e.to_string())
}

fn free_port() -> Result<u16, DemoError> {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(setup)
}

/// Kills the sidecars when the demo ends, however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One row of the table.
struct Row {
    caller: &'static str,
    target: &'static str,
    method: &'static str,
    path: &'static str,
    status: u16,
    decided_by: String,
}

/// A service of the demo: its app port, its sidecar's inbound port and its outbound ports.
struct Service {
    app: u16,
    inbound: u16,
    admin: u16,
    outbound: BTreeMap<&'static str, u16>,
    log: PathBuf,
}

const POLICIES: &str = "\
apiVersion: trustmesh.dev/v1alpha1
kind: AccessPolicy
metadata: {name: orders-callers, namespace: shop}
spec:
  targetRef: {name: orders}
  rules:
  - from: [{identity: frontend}]
    to: [{methods: [GET], paths: [/api/orders, /api/orders/*]}]
---
apiVersion: trustmesh.dev/v1alpha1
kind: AccessPolicy
metadata: {name: payments-callers, namespace: shop}
spec:
  targetRef: {name: payments}
  rules:
  - from: [{identity: orders}]
    to: [{methods: [POST], paths: [/api/charge]}]
";

/// Runs the demo; prints as it goes.
pub async fn run() -> Result<(), DemoError> {
    let sidecar = sidecar_binary()?;
    let dir = std::env::temp_dir().join(format!("trustmesh-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let local = LocalDir::new(&dir);
    init(&local, &TrustDomain::new("demo.trustmesh").map_err(setup)?).map_err(setup)?;
    let _ = std::fs::remove_file(local.resources().join("demo.yaml"));

    let names = ["frontend", "orders", "payments"];
    let mut services = BTreeMap::new();
    for name in names {
        services.insert(name, Service { app: free_port()?, inbound: free_port()?, admin: free_port()?, outbound: BTreeMap::new(), log: dir.join(format!("{name}.log")) });
    }
    for name in names {
        let address = format!("127.0.0.1:{}", services[name].inbound);
        add_workload(&local, "shop", name, Some(&address)).map_err(setup)?;
    }
    write_file(&local.resources().join("policies.yaml"), POLICIES.as_bytes(), 0o644).map_err(setup)?;
    for (from, to) in [("frontend", "orders"), ("frontend", "payments"), ("orders", "payments")] {
        let port = free_port()?;
        services.get_mut(from).map(|s| s.outbound.insert(to, port));
    }

    let control = start_local(LocalOptions {
        dir: dir.clone(),
        grpc_listen: "127.0.0.1:0".parse().map_err(setup)?,
        metrics_listen: "127.0.0.1:0".parse().map_err(setup)?,
        poll_interval: Duration::from_millis(50),
        sign_burst: 10,
        sign_rate: 1.0,
    })
    .await
    .map_err(setup)?;
    println!("control plane (local mode) on {} — trust domain demo.trustmesh, default action deny", control.grpc_addr);

    for name in names {
        tokio::spawn(app(name, services[name].app));
    }
    let mut procs = Procs(Vec::new());
    for name in names {
        procs.0.push(start_sidecar(&sidecar, &dir, control.grpc_addr, name, &services[name], &services)?);
    }
    for name in names {
        wait_ready(services[name].admin).await?;
    }
    println!("3 services with sidecars are up: frontend -> orders -> payments, each on loopback with mTLS between sidecars\n");

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let calls: [(&str, &str, &str, &str); 7] = [
        ("frontend", "orders", "GET", "/api/orders/42"),
        ("frontend", "orders", "DELETE", "/api/orders/42"),
        ("frontend", "orders", "GET", "/admin"),
        ("frontend", "orders", "GET", "/api/orders/../../admin"),
        ("frontend", "payments", "POST", "/api/charge"),
        ("orders", "payments", "POST", "/api/charge"),
        ("orders", "payments", "GET", "/api/charge"),
    ];
    let mut rows = Vec::new();
    for (caller, target, method, path) in calls {
        let port = services[caller].outbound[target];
        let (status, id) = call(&client, port, method, path).await?;
        rows.push(Row { caller, target, method, path, status, decided_by: decided_by(&services[target].log, &id).await });
    }
    print_table(&rows);
    let expected = [200, 403, 403, 403, 403, 200, 403];
    if rows.iter().map(|r| r.status).ne(expected) {
        return Err(DemoError::Unexpected(format!("decisions differ from the policy: expected statuses {expected:?}")));
    }

    println!("\nEditing orders-callers to also allow DELETE from frontend...");
    let edited = POLICIES.replacen("methods: [GET]", "methods: [GET, DELETE]", 1);
    write_file(&local.resources().join("policies.yaml"), edited.as_bytes(), 0o644).map_err(setup)?;
    let took = until(Duration::from_secs(5), || async { call(&client, services["frontend"].outbound["orders"], "DELETE", "/api/orders/42").await.is_ok_and(|(s, _)| s == 200) }).await?;
    println!("  frontend DELETE /api/orders/42 is now allowed, {} ms after the file changed, without a restart", took.as_millis());

    println!("\nQuarantining frontend (WorkloadIdentity shop/frontend, suspended: true)...");
    let workload = local.resources().join("workload-shop-frontend.yaml");
    let yaml = std::fs::read_to_string(&workload).map_err(setup)?;
    let fresh = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http::<Empty<Bytes>>();
    write_file(&workload, yaml.replacen("serviceAccount: frontend", "serviceAccount: frontend\n  suspended: true", 1).as_bytes(), 0o644).map_err(setup)?;
    let took = until(Duration::from_secs(5), || async { call(&fresh, services["frontend"].outbound["orders"], "GET", "/api/orders/42").await.is_err() }).await?;
    let (still, _) = call(&client, services["orders"].outbound["payments"], "POST", "/api/charge").await?;
    println!("  frontend's connections to orders are refused {} ms after the change; orders -> payments still works: {still}", took.as_millis());
    drop(procs);
    drop(control);
    println!("\ndemo finished; resources, certificates and each sidecar's access log (one JSON line per decision) are in {}", dir.display());
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!("{:<9} {:<9} {:<7} {:<26} {:<9} decided by", "caller", "target", "method", "path", "decision");
    println!("{}", "-".repeat(100));
    for r in rows {
        let decision = match r.status {
            200..=299 => "allow".to_owned(),
            s => format!("deny {s}"),
        };
        println!("{:<9} {:<9} {:<7} {:<26} {:<9} {}", r.caller, r.target, r.method, r.path, decision, r.decided_by);
    }
}

/// Polls `check` every 10 ms until it holds; returns how long it took.
async fn until<F, Fut>(limit: Duration, mut check: F) -> Result<Duration, DemoError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < limit {
        if check().await {
            return Ok(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(DemoError::Unexpected(format!("the change was not enforced within {limit:?}")))
}

async fn call(client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>, port: u16, method: &str, path: &str) -> Result<(u16, String), DemoError> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .body(Empty::new())
        .map_err(|e| DemoError::Unexpected(e.to_string()))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| DemoError::Unexpected("call timed out".into()))?
        .map_err(|e| DemoError::Unexpected(format!("call failed: {e}")))?;
    let id = resp.headers().get("x-trustmesh-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok((status, id))
}

/// Finds the access-log line of request `id` in a sidecar's log and says who decided.
async fn decided_by(log: &Path, id: &str) -> String {
    for _ in 0..50 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let line = text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|v| v["id"] == id);
        if let Some(v) = line {
            return match (v["policy"].as_str(), &v["rule"], v["reason"].as_str()) {
                (Some("default"), _, _) => format!("default ({})", v["default_action"].as_str().unwrap_or("?")),
                (Some(p), rule, _) => format!("{p} rule {rule}"),
                (None, _, Some(reason)) => format!("refused: {reason}"),
                _ => "?".into(),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    "(no access-log line)".into()
}

fn start_sidecar(bin: &Path, dir: &Path, operator: SocketAddr, name: &str, me: &Service, all: &BTreeMap<&str, Service>) -> Result<Child, DemoError> {
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .args(["--operator", &operator.to_string(), "--bundle"])
        .arg(dir.join("bundle.pem"))
        .arg("--token-file")
        .arg(dir.join("tokens").join(name))
        .args(["--operator-id", "spiffe://demo.trustmesh/ns/trustmesh-system/sa/trustmesh-operator"])
        .args(["--admin", &format!("127.0.0.1:{}", me.admin), "--workers", "1"])
        .args(["--inbound", &format!("127.0.0.1:{}=127.0.0.1:{}", me.inbound, me.app)]);
    for (target, port) in &me.outbound {
        cmd.args(["--outbound", &format!("127.0.0.1:{port}=127.0.0.1:{}", all[target].inbound)]);
    }
    let log = std::fs::File::create(&me.log).map_err(setup)?;
    let err = std::fs::File::create(dir.join(format!("{name}.stderr"))).map_err(setup)?;
    cmd.stdout(Stdio::from(log)).stderr(Stdio::from(err)).stdin(Stdio::null());
    cmd.spawn().map_err(|e| DemoError::Setup(format!("starting {}: {e}", bin.display())))
}

async fn wait_ready(admin: u16) -> Result<(), DemoError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://127.0.0.1:{admin}/ready").parse().map_err(setup)?;
    until(Duration::from_secs(20), || {
        let (client, uri) = (client.clone(), uri.clone());
        async move { client.get(uri).await.is_ok_and(|r| r.status() == 200) }
    })
    .await
    .map(|_| ())
    .map_err(|_| DemoError::Unexpected(format!("the sidecar with admin port {admin} did not become ready (certificate and snapshot)")))
}

/// A tiny app: answers every request with 200 and who called.
async fn app(name: &'static str, port: u16) {
    let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await else { return };
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| async move {
                let peer = req.headers().get("x-trustmesh-peer").and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
                let body = format!("{name}: {} {} from {peer}\n", req.method(), req.uri().path());
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// The sidecar binary next to this one, built on first use when run through cargo.
fn sidecar_binary() -> Result<PathBuf, DemoError> {
    let me = std::env::current_exe().map_err(setup)?;
    let dir = me.parent().map(Path::to_path_buf).unwrap_or_default();
    let bin = dir.join("trustmesh-sidecar");
    if bin.exists() {
        return Ok(bin);
    }
    let Ok(cargo) = std::env::var("CARGO") else { return Err(DemoError::NoSidecar(dir)) };
    println!("building trustmesh-sidecar (first run only)...");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "trustmesh-sidecar"]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    match cmd.status() {
        Ok(s) if s.success() && bin.exists() => Ok(bin),
        _ => Err(DemoError::NoSidecar(dir)),
    }
}
