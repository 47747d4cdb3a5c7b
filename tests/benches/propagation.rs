//! Policy propagation to 1,000 `Config.Watch` streams, through the real gRPC server, in one
//! process on loopback: one local-mode operator and W workloads x R replicas of simulated
//! sidecars, each replica with its own TLS connection (client certificate = its workload's
//! X.509-SVID) and its own stream that parses and acknowledges every snapshot.
//!
//! Run: `cargo bench -p trustmesh-tests --bench propagation` (env `WORKLOADS`, default 100, and
//! `REPLICAS`, default 10).
//!
//! Measures, from the moment a file write in the local directory completes (T0) to each
//! affected stream's receipt + acknowledgement (recorded by the stream task itself):
//! 1. a policy change for one workload (only its replicas may receive anything),
//! 2. a mesh-wide change (suspending a workload changes every snapshot's revocation list),
//! 3. five more mesh-wide changes for the CPU cost per change.
//!
//! Latencies include the operator's directory poll interval (100 ms, the real default): the
//! change is noticed 0..100 ms after T0. CPU and memory are the whole process's, so they include
//! the simulated sidecars and are an upper bound for the operator alone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trustmesh_core::proto::v1::WatchRequest;
use trustmesh_core::proto::v1::config_client::ConfigClient;
use trustmesh_core::proto::v1::identity_client::IdentityClient;
use trustmesh_core::snapshot::Snapshot;
use trustmesh_core::spiffe::{SpiffeId, TrustDomain};
use trustmesh_core::tls::{self, SwappableCert};
use trustmesh_operator::compile::ObjectKey;
use trustmesh_operator::local::init::{add_workload, init};
use trustmesh_operator::local::{LocalDir, write_file};
use trustmesh_operator::run::{LocalOptions, Running, start_local};
use trustmesh_sidecar::control;
use trustmesh_sidecar::identity::{CredentialSource, GrpcSigner, fetch_svid};

const NAMESPACE: &str = "bench";
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long scenario 1 waits after its last affected ack before checking that nobody else got anything.
const QUIET_PERIOD: Duration = Duration::from_millis(500);
const TOGGLES: usize = 5;
/// Linux USER_HZ: /proc/self/stat counts CPU time in 1/100 s.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One snapshot as a simulated sidecar received, parsed and acknowledged it.
#[derive(Clone, Copy, Debug)]
struct Event {
    version: u64,
    at: Instant,
    revoked: usize,
    rules: usize,
    /// Size of the snapshot JSON.
    bytes: usize,
}

type Log = Arc<Mutex<Vec<Event>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A simulated sidecar's config stream: opens `Config.Watch`, parses every snapshot as the real
/// sidecar does, acknowledges it and records (version, time). Reopens the stream (up to a few
/// times) when it fails, recording why. (A macro rather than a function: tonic's channel type is
/// not nameable here without a direct tonic dependency.)
macro_rules! follow {
    ($channel:expr, $proxy:expr, $log:expr, $errors:expr) => {{
        let (channel, proxy, log, errors): (_, String, Log, Arc<Mutex<Vec<String>>>) = ($channel, $proxy, $log, $errors);
        async move {
            for attempt in 0..5u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                let (ack_tx, ack_rx) = mpsc::channel(4);
                let _ = ack_tx.send(WatchRequest { proxy: proxy.clone(), ..Default::default() }).await;
                let mut stream = match ConfigClient::new(channel.clone()).watch(ReceiverStream::new(ack_rx)).await {
                    Ok(resp) => resp.into_inner(),
                    Err(status) => {
                        lock(&errors).push(format!("{proxy}: cannot open the stream: {:?} {}", status.code(), status.message()));
                        continue;
                    }
                };
                loop {
                    match stream.message().await {
                        Ok(Some(msg)) => {
                            let (revoked, rules) = match serde_json::from_str::<Snapshot>(&msg.snapshot_json) {
                                Ok(s) => (s.revoked.len(), s.inbound.rules.len()),
                                Err(e) => {
                                    lock(&errors).push(format!("{proxy}: version {} does not parse: {e}", msg.version));
                                    (usize::MAX, usize::MAX)
                                }
                            };
                            let version = msg.version.parse().unwrap_or(0);
                            let bytes = msg.snapshot_json.len();
                            if ack_tx.send(WatchRequest { ack_version: msg.version, ..Default::default() }).await.is_err() {
                                break;
                            }
                            lock(&log).push(Event { version, at: Instant::now(), revoked, rules, bytes });
                        }
                        Ok(None) => {
                            lock(&errors).push(format!("{proxy}: the operator ended the stream"));
                            break;
                        }
                        Err(status) => {
                            lock(&errors).push(format!("{proxy}: stream failed: {:?} {}", status.code(), status.message()));
                            break;
                        }
                    }
                }
            }
        }
    }};
}

fn proc_field(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Resident set size in KiB.
fn rss_kib() -> u64 {
    proc_field("/proc/self/status", "VmRSS:").unwrap_or(0)
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let get = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    get(14) + get(15)
}

/// Busy CPU time of the whole machine (all processes), in clock ticks.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    // cpu user nice system idle iowait irq softirq steal ...
    let f: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn summary(lat: &[Duration]) -> String {
    if lat.is_empty() {
        return "no samples".into();
    }
    let mut s = lat.to_vec();
    s.sort();
    format!("n={} p50 {} p99 {} max {}", s.len(), ms(pct(&s, 0.50)), ms(pct(&s, 0.99)), ms(s[s.len() - 1]))
}

struct Bench {
    dir: std::path::PathBuf,
    running: Running,
    workloads: usize,
    replicas: usize,
    logs: Vec<Log>,
    errors: Arc<Mutex<Vec<String>>>,
    ids: Vec<SpiffeId>,
    results: Vec<String>,
    /// When each view version was published by the directory watcher.
    published: Arc<Mutex<Vec<(u64, Instant)>>>,
}

/// What a wait for the affected streams found.
struct Wait {
    latencies: Vec<Duration>,
    missing: Vec<usize>,
    /// Events beyond the first new one, per affected stream.
    extra: usize,
    /// Affected streams whose new snapshot did not look as expected.
    unexpected: usize,
}

impl Bench {
    fn stream_name(&self, i: usize) -> String {
        format!("w{}-{}", i / self.replicas, i % self.replicas)
    }

    fn fail(&self, msg: &str) -> ! {
        eprintln!("FAILED: {msg}");
        self.print_errors();
        for r in &self.results {
            println!("{r}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        std::process::exit(1);
    }

    fn print_errors(&self) {
        let errors = lock(&self.errors);
        if !errors.is_empty() {
            eprintln!("stream errors ({}), first 10:", errors.len());
            for e in errors.iter().take(10) {
                eprintln!("  {e}");
            }
        }
    }

    /// How long after `t0` the first view newer than `base` was published (poll + load + compile).
    fn published_after(&self, base: u64, t0: Instant) -> String {
        lock(&self.published).iter().find(|(v, _)| *v > base).map_or("?".into(), |(_, at)| ms(at.saturating_duration_since(t0)))
    }

    fn version(&self) -> u64 {
        self.running.view.borrow().version
    }

    /// Waits until every stream in `affected` recorded a snapshot newer than `base`; latencies
    /// are from `t0`. `expect` checks the first new snapshot's content.
    async fn wait_for(&self, affected: &[usize], base: u64, t0: Instant, expect: impl Fn(&Event) -> bool) -> Result<Wait, Wait> {
        let deadline = t0 + SCENARIO_TIMEOUT;
        loop {
            let mut w = Wait { latencies: Vec::with_capacity(affected.len()), missing: Vec::new(), extra: 0, unexpected: 0 };
            for &i in affected {
                let log = lock(&self.logs[i]);
                let mut new = log.iter().filter(|e| e.version > base);
                match new.next() {
                    Some(e) => {
                        w.latencies.push(e.at.saturating_duration_since(t0));
                        w.unexpected += usize::from(!expect(e));
                        w.extra += new.count();
                    }
                    None => w.missing.push(i),
                }
            }
            if w.missing.is_empty() {
                return Ok(w);
            }
            if Instant::now() > deadline {
                return Err(w);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the operator's registry shows every proxy of every workload acknowledging
    /// `version` (or later); returns when that was first seen (10 ms polling).
    async fn operator_saw_acks(&self, version: u64, t0: Instant) -> Option<Duration> {
        let deadline = t0 + SCENARIO_TIMEOUT;
        loop {
            let all = (0..self.workloads).all(|w| {
                let p = self.running.proxies.proxies(&ObjectKey { namespace: NAMESPACE.into(), name: format!("w{w}") });
                p.len() == self.replicas && p.iter().all(|s| s.acked.as_deref().and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v >= version))
            });
            if all {
                return Some(t0.elapsed());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn workload_file(&self, w: usize) -> std::path::PathBuf {
        self.dir.join("resources").join(format!("workload-{NAMESPACE}-w{w}.yaml"))
    }

    /// Rewrites workload `w`'s file with `suspended` set or removed; returns T0 (write done).
    fn set_suspended(&self, w: usize, suspended: bool) -> Instant {
        let path = self.workload_file(w);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| self.fail(&format!("{}: {e}", path.display())));
        let plain = text.replace("  suspended: true\n", "");
        let sa = format!("  serviceAccount: w{w}\n");
        let new = if suspended { plain.replacen(&sa, &format!("{sa}  suspended: true\n"), 1) } else { plain };
        if new == text {
            self.fail(&format!("{}: rewriting it changed nothing", path.display()));
        }
        write_file(&path, new.as_bytes(), 0o644).unwrap_or_else(|e| self.fail(&e.to_string()));
        Instant::now()
    }

    fn metric(&self, text: &str, name: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
    }

    fn ack_metric(&self) -> (f64, f64) {
        let text = self.running.metrics.encode();
        (
            self.metric(&text, "trustmesh_config_push_ack_seconds_sum").unwrap_or(f64::NAN),
            self.metric(&text, "trustmesh_config_push_ack_seconds_count").unwrap_or(f64::NAN),
        )
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let workloads = env("WORKLOADS", 100).max(2);
    let replicas = env("REPLICAS", 10).max(1);
    let streams = workloads * replicas;
    let dir = std::env::temp_dir().join(format!("trustmesh-propagation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let local = LocalDir::new(&dir);
    init(&local, &TrustDomain::new("bench.local").expect("td")).expect("local init");
    let mut tokens = Vec::with_capacity(workloads);
    for w in 0..workloads {
        let address = format!("127.0.0.1:{}", 20_000 + w);
        tokens.push(add_workload(&local, NAMESPACE, &format!("w{w}"), Some(&address)).expect("add workload"));
    }
    let running = start_local(LocalOptions {
        dir: dir.clone(),
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        poll_interval: POLL_INTERVAL,
        sign_burst: u32::MAX,
        sign_rate: 1e9,
    })
    .await
    .expect("control plane");
    let roots: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("bundle.pem")).expect("bundle").collect::<Result<_, _>>().expect("bundle pem");

    let mut bench = Bench {
        dir: dir.clone(),
        running,
        workloads,
        replicas,
        logs: (0..streams).map(|_| Log::default()).collect(),
        errors: Arc::default(),
        ids: Vec::new(),
        results: Vec::new(),
        published: Arc::default(),
    };
    // Record when each view is published on a thread of its own: a task on the benchmark's
    // runtime would be woken in the same batch as the 1,000 stream tasks and record late.
    let mut view = bench.running.view.clone();
    let published = bench.published.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let view_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            loop {
                tokio::select! {
                    changed = view.changed() => {
                        if changed.is_err() { break }
                        let at = Instant::now();
                        let v = view.borrow_and_update().version;
                        lock(&published).push((v, at));
                    }
                    _ = &mut stop_rx => break,
                }
            }
        });
    });
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    // One SVID per workload, shared by its replicas.
    let signer = GrpcSigner(IdentityClient::new(
        control::channel(bench.running.grpc_addr.to_string(), tokio::sync::watch::channel(roots.clone()).1, bench.running.operator_id.clone(), None).expect("channel"),
    ));
    let svid_started = Instant::now();
    let mut certs = Vec::with_capacity(workloads);
    for token in &tokens {
        let svid = fetch_svid(&signer, &CredentialSource::JoinTokenFile(token.clone()))
            .await
            .unwrap_or_else(|e| bench.fail(&format!("fetch_svid: {e}")));
        let key = tls::certified_key(svid.chain.clone(), PrivateKeyDer::Pkcs8(svid.key.clone_key())).expect("certified key");
        let slot = SwappableCert::new();
        slot.set(key).expect("install svid");
        bench.ids.push(svid.spiffe_id.clone());
        certs.push(slot);
    }
    let svid_time = svid_started.elapsed();
    drop(signer);

    // Let the allocator settle, then open every stream at once (a fleet starting together).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_kib();
    let cpu_before_open = cpu_ticks();
    let opened = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let cert: Arc<dyn ResolvesClientCert> = certs[i / replicas].clone();
        let channel = control::channel(bench.running.grpc_addr.to_string(), tokio::sync::watch::channel(roots.clone()).1, bench.running.operator_id.clone(), Some(cert)).expect("channel");
        tasks.push(tokio::spawn(follow!(channel, bench.stream_name(i), bench.logs[i].clone(), bench.errors.clone())));
    }
    let all: Vec<usize> = (0..streams).collect();
    let cold = match bench.wait_for(&all, 0, opened, |_| true).await {
        Ok(w) => w,
        Err(w) => bench.fail(&format!("cold start: {} of {streams} streams got no snapshot in {SCENARIO_TIMEOUT:?}; {}", w.missing.len(), summary(&w.latencies))),
    };
    let cold_cpu = cpu_ticks() - cpu_before_open;
    // Let the last acks land and buffers settle before measuring memory.
    let base_version = bench.version();
    let op_cold = bench.operator_saw_acks(base_version, opened).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = rss_kib();
    let connected = bench.running.proxies.connected();
    let (cold_sum, cold_count) = bench.ack_metric();
    bench.results.push(format!(
        "setup: {workloads} workloads x {replicas} replicas = {streams} streams, {workloads} SVIDs fetched in {}, poll interval {}",
        ms(svid_time),
        ms(POLL_INTERVAL)
    ));
    bench.results.push(format!(
        "cold start: all {streams} streams got their first snapshot in {} ({}); operator registry saw all acks at {}; CPU {:.0} ms",
        ms(cold.latencies.iter().max().copied().unwrap_or_default()),
        summary(&cold.latencies),
        op_cold.map_or("NOT SEEN".into(), ms),
        cold_cpu as f64 * 1e3 / CLOCK_TICKS_PER_SEC,
    ));
    let sizes: Vec<usize> = bench.logs.iter().filter_map(|l| lock(l).first().map(|e| e.bytes)).collect();
    bench.results.push(format!(
        "snapshot JSON per stream: {}..{} bytes; {:.1} MB pushed for one mesh-wide change",
        sizes.iter().min().copied().unwrap_or(0),
        sizes.iter().max().copied().unwrap_or(0),
        sizes.iter().sum::<usize>() as f64 / 1e6
    ));
    bench.results.push(format!(
        "memory: VmRSS {:.1} MiB after setup (operator + {streams} clients); +{:.1} MiB for the streams = {:.1} KiB per stream (client + server side); operator registry: {connected} proxies",
        rss_after as f64 / 1024.0,
        (rss_after as f64 - rss_before as f64) / 1024.0,
        (rss_after as f64 - rss_before as f64) / streams as f64,
    ));
    for r in &bench.results {
        println!("{r}");
    }

    // From here on: how much CPU other processes on the machine take (they skew latencies).
    let (machine0, own0, wall0) = (machine_busy_ticks(), cpu_ticks(), Instant::now());

    // Scenario 1: a policy for w0 only.
    let base = bench.version();
    let s1_cpu0 = cpu_ticks();
    let policy = format!(
        "apiVersion: trustmesh.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: w0-callers, namespace: {NAMESPACE}}}\nspec:\n  targetRef: {{name: w0}}\n  rules:\n  - from: [{{identity: w1}}]\n    to: [{{methods: [GET], paths: [/x]}}]\n"
    );
    write_file(&dir.join("resources").join("policy-w0.yaml"), policy.as_bytes(), 0o644).expect("write policy");
    let t0 = Instant::now();
    let affected: Vec<usize> = (0..replicas).collect();
    let s1 = match bench.wait_for(&affected, base, t0, |e| e.rules > 0).await {
        Ok(w) => w,
        Err(w) => bench.fail(&format!("scenario 1: {} of {replicas} w0 streams got nothing in {SCENARIO_TIMEOUT:?}; {}", w.missing.len(), summary(&w.latencies))),
    };
    tokio::time::sleep(QUIET_PERIOD).await;
    let s1_cpu = (cpu_ticks() - s1_cpu0) as f64 * 1e3 / CLOCK_TICKS_PER_SEC;
    let others: Vec<usize> = (replicas..streams).filter(|&i| lock(&bench.logs[i]).iter().any(|e| e.version > base)).collect();
    bench.results.push(format!(
        "scenario 1 (policy for w0): view published at {}; {} w0 replicas acked: {}; wrong content {}, extra snapshots {}; other {} streams that received anything within {} after: {}{}; CPU {:.0} ms (incl. the quiet period)",
        bench.published_after(base, t0),
        s1.latencies.len(),
        summary(&s1.latencies),
        s1.unexpected,
        s1.extra,
        streams - replicas,
        ms(QUIET_PERIOD),
        others.len(),
        if others.is_empty() { " (OK: only the affected workload was pushed)" } else { " (UNEXPECTED)" },
        s1_cpu
    ));
    println!("{}", bench.results.last().expect("line"));

    // Scenario 2: suspend the last workload; every snapshot's revocation list changes.
    let last = workloads - 1;
    let base = bench.version();
    let t0 = bench.set_suspended(last, true);
    let s2 = match bench.wait_for(&all, base, t0, |e| e.revoked == 1).await {
        Ok(w) => w,
        Err(w) => bench.fail(&format!("scenario 2: {} of {streams} streams got nothing in {SCENARIO_TIMEOUT:?}; {}", w.missing.len(), summary(&w.latencies))),
    };
    let op_s2 = bench.operator_saw_acks(base + 1, t0).await;
    let own: Vec<Duration> = s2.latencies[last * replicas..].to_vec();
    bench.results.push(format!(
        "scenario 2 (suspend w{last}, all {streams} streams): view published at {}; {}; wrong content {}, extra {}; w{last}'s own replicas: {}; operator registry saw all acks at {}",
        bench.published_after(base, t0),
        summary(&s2.latencies),
        s2.unexpected,
        s2.extra,
        summary(&own),
        op_s2.map_or("NOT SEEN".into(), ms),
    ));
    println!("{}", bench.results.last().expect("line"));

    // Scenario 3: toggle suspension TOGGLES times; CPU per change.
    let mut cpu_ms = Vec::with_capacity(TOGGLES);
    let mut all_lat = Vec::new();
    let mut per_change = Vec::new();
    let mut publish = Vec::new();
    let mut suspended = true;
    for n in 0..TOGGLES {
        suspended = !suspended;
        // Nothing else is going on: wait out the acks of the previous change.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let base = bench.version();
        let cpu0 = cpu_ticks();
        let t0 = bench.set_suspended(last, suspended);
        let want = usize::from(suspended);
        let w = match bench.wait_for(&all, base, t0, |e| e.revoked == want).await {
            Ok(w) => w,
            Err(w) => bench.fail(&format!("scenario 3, change {}: {} of {streams} streams got nothing in {SCENARIO_TIMEOUT:?}; {}", n + 1, w.missing.len(), summary(&w.latencies))),
        };
        if bench.operator_saw_acks(base + 1, t0).await.is_none() {
            bench.fail(&format!("scenario 3, change {}: the operator did not see every ack", n + 1));
        }
        let cpu1 = cpu_ticks();
        publish.push(bench.published_after(base, t0));
        cpu_ms.push((cpu1 - cpu0) as f64 * 1e3 / CLOCK_TICKS_PER_SEC);
        let mut s = w.latencies.clone();
        s.sort();
        per_change.push(format!("{}/{}/{}{}", ms(pct(&s, 0.5)), ms(pct(&s, 0.99)), ms(s[s.len() - 1]), if w.unexpected + w.extra > 0 { "!" } else { "" }));
        all_lat.extend(w.latencies);
    }
    // Idle cost for comparison: the poll loop and the runtime with nothing changing.
    let idle0 = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_ms = (cpu_ticks() - idle0) as f64 * 1e3 / CLOCK_TICKS_PER_SEC;
    bench.results.push(format!(
        "scenario 3 ({TOGGLES} suspend toggles x {streams} streams): {}; per change p50/p99/max: {}; view published at: {}",
        summary(&all_lat),
        per_change.join(", "),
        publish.join(", ")
    ));
    bench.results.push(format!(
        "CPU per mesh-wide change (whole process, write to last operator-side ack incl. {streams} clients): avg {:.0} ms [{}]; idle process: {idle_ms:.0} ms/s",
        cpu_ms.iter().sum::<f64>() / cpu_ms.len() as f64,
        cpu_ms.iter().map(|c| format!("{c:.0}")).collect::<Vec<_>>().join(", ")
    ));
    println!("{}", bench.results[bench.results.len() - 2]);
    println!("{}", bench.results.last().expect("line"));

    let wall = wall0.elapsed().as_secs_f64();
    let others_cpu = (machine_busy_ticks() - machine0).saturating_sub(cpu_ticks() - own0) as f64 / CLOCK_TICKS_PER_SEC;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);

    // The operator's own view.
    let text = bench.running.metrics.encode();
    let connected_metric = bench.metric(&text, "trustmesh_proxies_connected");
    let (sum, count) = bench.ack_metric();
    let pushes = bench.metric(&text, "trustmesh_config_pushes_total").or_else(|| bench.metric(&text, "trustmesh_config_pushes"));
    bench.results.push(format!(
        "operator metrics: trustmesh_proxies_connected {}; trustmesh_config_push_ack_seconds count {count} sum {sum:.3} mean {}; after cold start only: count {} mean {}; config pushes {}",
        connected_metric.map_or("?".into(), |v| v.to_string()),
        ms(Duration::from_secs_f64((sum / count).max(0.0))),
        count - cold_count,
        ms(Duration::from_secs_f64(((sum - cold_sum) / (count - cold_count)).max(0.0))),
        pushes.map_or("?".into(), |v| v.to_string()),
    ));
    for l in text.lines().filter(|l| l.starts_with("trustmesh_proxies_connected") || l.starts_with("trustmesh_config_push_ack_seconds_sum") || l.starts_with("trustmesh_config_push_ack_seconds_count")) {
        bench.results.push(format!("  {l}"));
    }

    bench.print_errors();
    println!("---- propagation results ----");
    for r in &bench.results {
        println!("{r}");
    }
    println!("(CPU and memory are the whole process: operator + simulated clients; an upper bound for the operator alone)");
    println!(
        "machine: {cores} cores; during the scenarios ({wall:.1} s) other processes used {:.0}% of the machine; loadavg at start {} at end {}",
        others_cpu / (wall * cores as f64) * 100.0,
        load_start.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let p99_all = {
        let mut s = s2.latencies.clone();
        s.extend(all_lat);
        s.sort();
        pct(&s, 0.99)
    };
    println!(
        "target p99 < 1 s for {streams} streams: {} (p99 over scenarios 2+3 = {})",
        if p99_all < Duration::from_secs(1) { "MET" } else { "MISSED" },
        ms(p99_all)
    );

    for t in tasks {
        t.abort();
    }
    let _ = stop_tx.send(());
    let _ = view_thread.join();
    drop(bench.running);
    let _ = std::fs::remove_dir_all(&dir);
}
