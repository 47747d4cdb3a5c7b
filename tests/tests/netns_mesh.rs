//! Network-namespace end-to-end tests (test tier 4; needs root, as in CI): pods are network
//! namespaces, `trustmesh-sidecar init` installs the real iptables redirection in each, the
//! sidecars run as uid 1337 in transparent mode, and the callers are tools we did not write
//! (`curl`, `openssl s_client`, a Python socket client).
//!
//! ```text
//!                 namespace tm<pid><t>node: bridge br0 10.77.0.1/24, fd77::1/64
//!                 (openssl s_client, plaintext curl, kubelet-style probes; the operator in the
//!                  live test)
//!          ┌──────────────────────┬──────────────────────┐
//!        veth                   veth                   veth
//!   ┌──────┴──────────┐   ┌───────┴─────────┐   ┌────────┴────────┐
//!   │ client 10.77.0.2│   │ server 10.77.0.3│   │intruder 10.77.0.4│
//!   │ curl, echo check│   │ app.py :8080 http│   │ curl, echo check│
//!   │ sidecar uid 1337│   │        :9000 echo│   │ sidecar uid 1337│
//!   └─────────────────┘   │ sidecar uid 1337 │   └─────────────────┘
//!                         └──────────────────┘
//! curl 10.77.0.3:8080 in client -> OUTPUT REDIRECT :15001 (client sidecar) -> mTLS as uid 1337
//!   -> server PREROUTING REDIRECT :15006 (server sidecar: authorize) -> 127.0.0.1:8080 (app)
//! ```
//!
//! Every pod also has `fd77::<octet>/64`: `init --ipv6` redirects IPv6 with ip6tables and the
//! sidecars listen on `[::]:15006` and `[::1]:15001` too (`run --ipv6`), so the same policy holds
//! for `curl http://[fd77::3]:8080/...`.
//!
//! Identities: the operator's local mode (`local init`, `add-workload`), SVIDs fetched with
//! `trustmesh-sidecar svid fetch`, and per-pod snapshot files from `local snapshot` (the sidecar
//! watches the file). The second test runs the operator on the bridge and lets the sidecars
//! follow it over Config.Watch instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use trustmesh_tests::{Proc, bin, eventually, free_port, run, text, wait_for_port};

const TD: &str = "spiffe://local.trustmesh/ns/default/sa/";
const SERVER: &str = "10.77.0.3";
const PODS: [(&str, u8); 3] = [("client", 2), ("server", 3), ("intruder", 4)];

fn policy(methods: &str) -> String {
    [
        "apiVersion: trustmesh.dev/v1alpha1",
        "kind: AccessPolicy",
        "metadata: {name: server-callers, namespace: default}",
        "spec:",
        "  targetRef: {name: server}",
        "  rules:",
        &format!("  - from: [{{identity: client}}]\n    to: [{{ports: [8080], methods: [{methods}], paths: [\"/api/*\", \"/healthz\"]}}]"),
        "  - from: [{identity: client}]\n    to: [{ports: [9000]}]\n",
    ]
    .join("\n")
}

const SERVER_V6: &str = "[fd77::3]";

/// The server's IPv6 address, so callers' sidecars mesh it like the IPv4 one.
const V6_WORKLOAD: &str = "apiVersion: trustmesh.dev/v1alpha1\nkind: LocalWorkload\nmetadata:\n  name: server-v6\n  namespace: default\nspec:\n  identity: server\n  address: \"[fd77::3]:8080\"\n  joinTokenSha256: \"0000000000000000000000000000000000000000000000000000000000000000\"\n";

/// A second address of the server's identity, so callers' sidecars mesh the echo port too.
const ECHO_WORKLOAD: &str = "apiVersion: trustmesh.dev/v1alpha1\nkind: LocalWorkload\nmetadata:\n  name: server-echo\n  namespace: default\nspec:\n  identity: server\n  address: \"10.77.0.3:9000\"\n  joinTokenSha256: \"0000000000000000000000000000000000000000000000000000000000000000\"\n";

/// The namespaces, the mesh directory and every process; dropping it kills the processes and
/// deletes the namespaces (their veths go with them).
struct Topology {
    tag: String,
    tmp: PathBuf,
    mesh: PathBuf,
    procs: Vec<(String, Proc)>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.procs.clear();
        for pod in ["node", "client", "server", "intruder"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(pod)]).output();
        }
        if std::thread::panicking() || std::env::var_os("TRUSTMESH_KEEP_LOGS").is_some() {
            eprintln!("logs kept in {}", self.tmp.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

impl Topology {
    /// Namespaces and veths, the mesh directory with three workloads and the policy, and the
    /// server pod's apps. No sidecars yet.
    fn new(test: &str) -> Self {
        let tag = format!("tm{}{test}", std::process::id());
        let tmp = std::env::temp_dir().join(format!("trustmesh-netns-{tag}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let mut t = Topology { mesh: tmp.join("mesh"), tmp, tag, procs: Vec::new() };
        let node = t.ns("node");
        sh(&["ip", "netns", "add", &node]);
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "add", "br0", "type", "bridge"],
            &["addr", "add", "10.77.0.1/24", "dev", "br0"],
            &["addr", "add", "fd77::1/64", "dev", "br0", "nodad"],
            &["link", "set", "br0", "up"],
        ] {
            sh(&[&["ip", "-n", &node][..], args].concat());
        }
        for (pod, octet) in PODS {
            let ns = t.ns(pod);
            let veth = format!("v{pod}");
            sh(&["ip", "netns", "add", &ns]);
            sh(&["ip", "-n", &node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            sh(&["ip", "-n", &node, "link", "set", &veth, "master", "br0", "up"]);
            sh(&["ip", "-n", &ns, "addr", "add", &format!("10.77.0.{octet}/24"), "dev", "eth0"]);
            sh(&["ip", "-n", &ns, "addr", "add", &format!("fd77::{octet}/64"), "dev", "eth0", "nodad"]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }

        let op = |args: &[&str]| {
            let out = run(Command::new(bin("trustmesh-operator")).arg("local").args(args));
            assert!(out.status.success(), "trustmesh-operator local {args:?} failed: {}", text(&out));
        };
        let mesh = t.mesh.to_str().unwrap().to_owned();
        op(&["init", &mesh]);
        op(&["add-workload", &mesh, "--name", "client"]);
        op(&["add-workload", &mesh, "--name", "server", "--address", "10.77.0.3:8080"]);
        op(&["add-workload", &mesh, "--name", "intruder"]);
        // The echo port speaks no HTTP: declared opaque, as every non-HTTP port must be.
        let wid = t.mesh.join("resources/workload-default-server.yaml");
        let yaml = std::fs::read_to_string(&wid).unwrap();
        std::fs::write(&wid, yaml.replacen("serviceAccount: server", "serviceAccount: server\n  opaquePorts: [9000]", 1)).unwrap();
        std::fs::write(t.mesh.join("resources/echo.yaml"), ECHO_WORKLOAD).unwrap();
        std::fs::write(t.mesh.join("resources/server-v6.yaml"), V6_WORKLOAD).unwrap();
        t.write_policy("GET");

        let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("netns/app.py");
        let app = t.ns_cmd("server", &["python3", app.to_str().unwrap(), "8080", "9000"]);
        t.spawn("app", app);
        eventually(Duration::from_secs(10), "the server pod's app to answer on 127.0.0.1:8080", || {
            (curl(&t.ns("server"), &["http://127.0.0.1:8080/"]).code == 200).then_some(())
        });
        for (pod, _) in PODS {
            let dir = t.pod_dir(pod);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(t.mesh.join(format!("tokens/{pod}")), dir.join("token")).unwrap();
        }
        t
    }

    fn ns(&self, pod: &str) -> String {
        format!("{}{pod}", self.tag)
    }

    fn pod_dir(&self, pod: &str) -> PathBuf {
        self.tmp.join("pods").join(pod)
    }

    /// `ip netns exec <pod's namespace> args...`.
    fn ns_cmd(&self, pod: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(pod)]).args(args);
        cmd
    }

    fn spawn(&mut self, name: &str, cmd: Command) {
        let p = Proc::spawn(cmd, self.tmp.join(format!("{name}.log")));
        self.procs.push((name.to_owned(), p));
    }

    fn stop(&mut self, name: &str) {
        self.procs.retain(|(n, _)| n != name);
    }

    fn log(&self, name: &str) -> String {
        self.procs.iter().find(|(n, _)| n == name).map(|(_, p)| p.output()).unwrap_or_default()
    }

    fn write_policy(&self, methods: &str) {
        std::fs::write(self.mesh.join("resources/policy.yaml"), policy(methods)).unwrap();
    }

    /// Fetches every pod's SVID from an operator in the host namespace (then stopped), into a
    /// per-pod copy the sidecar's uid can read, and writes each pod's snapshot file.
    fn fetch_svids_and_snapshots(&mut self) {
        let (grpc, metrics) = (free_port(), free_port());
        let mut operator = Command::new(bin("trustmesh-operator"));
        operator.args(["local", "--dir"]).arg(&self.mesh);
        operator.args(["--listen", &format!("127.0.0.1:{grpc}"), "--metrics-listen", &format!("127.0.0.1:{metrics}")]);
        let operator = Proc::spawn(operator, self.tmp.join("operator-host.log"));
        wait_for_port(format!("127.0.0.1:{grpc}").parse().unwrap(), Duration::from_secs(20));
        for (pod, _) in PODS {
            let out = self.pod_dir(pod).join("svid");
            let fetched = run(Command::new(bin("trustmesh-sidecar"))
                .args(["svid", "fetch", "--operator", &format!("127.0.0.1:{grpc}"), "--bundle"])
                .arg(self.mesh.join("bundle.pem"))
                .arg("--token-file")
                .arg(self.mesh.join(format!("tokens/{pod}")))
                .arg("--out")
                .arg(&out));
            assert!(fetched.status.success(), "svid fetch for {pod} failed: {}\noperator:\n{}", text(&fetched), operator.output());
            self.write_snapshot(pod);
        }
    }

    /// Regenerates a pod's snapshot file from the mesh directory (atomically: the sidecar watches it).
    fn write_snapshot(&self, pod: &str) {
        let out = run(Command::new(bin("trustmesh-operator")).args(["local", "snapshot"]).arg(&self.mesh).arg(format!("default/{pod}")));
        assert!(out.status.success(), "local snapshot default/{pod} failed: {}", text(&out));
        let path = self.pod_dir(pod).join("snapshot.json");
        std::fs::write(path.with_extension("tmp"), &out.stdout).unwrap();
        std::fs::rename(path.with_extension("tmp"), path).unwrap();
    }

    /// Installs the pod's iptables rules (`trustmesh-sidecar init --ipv6`: IPv4 and IPv6).
    fn init(&self, pod: &str) {
        let out = run(&mut self.ns_cmd(pod, &[bin("trustmesh-sidecar").to_str().unwrap(), "init", "--ipv6"]));
        assert!(out.status.success(), "trustmesh-sidecar init in {pod} failed: {}", text(&out));
    }

    /// Starts the pod's sidecar as uid 1337 in transparent mode, with `identity` as its
    /// certificate source, and waits until /ready says so.
    fn start_sidecar(&mut self, pod: &str, identity: &[&str], log: &str) {
        let _ = run(Command::new("chown").arg("-R").arg("1337:1337").arg(self.pod_dir(pod)));
        let sidecar = bin("trustmesh-sidecar");
        let mut args = vec!["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", sidecar.to_str().unwrap(), "run", "--transparent", "--ipv6"];
        args.extend_from_slice(&["--admin", "0.0.0.0:15020", "--probe-path", "8080:/healthz", "--probe-path", "8080:/healthz?deep=1"]);
        args.extend_from_slice(identity);
        let cmd = self.ns_cmd(pod, &args);
        self.spawn(log, cmd);
        eventually(Duration::from_secs(15), &format!("the {pod} sidecar to be ready"), || {
            let r = curl(&self.ns(pod), &["http://127.0.0.1:15020/ready"]);
            (r.code == 200).then_some(())
        });
    }

    /// A sidecar with the fetched files of `svid_of` and the pod's own snapshot file.
    fn start_file_sidecar(&mut self, pod: &str, svid_of: &str, log: &str) {
        let svid = self.pod_dir(svid_of).join("svid");
        let snapshot = self.pod_dir(pod).join("snapshot.json");
        self.start_sidecar(pod, &["--svid-dir", svid.to_str().unwrap(), "--snapshot", snapshot.to_str().unwrap()], log);
    }

    fn metrics(&self, pod: &str) -> String {
        curl(&self.ns(pod), &["http://127.0.0.1:15020/metrics"]).body
    }
}

fn sh(args: &[&str]) {
    let out = run(Command::new(args[0]).args(&args[1..]));
    assert!(out.status.success(), "{args:?} failed: {}", text(&out));
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// What curl got: the status (0 when there was no HTTP response), the response head and body.
struct Http {
    code: u16,
    head: String,
    body: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
    }
}

/// Runs curl in a namespace (as root, so an app's outbound traffic: redirected by iptables).
fn curl(ns: &str, args: &[&str]) -> Http {
    let out = run(Command::new("ip").args(["netns", "exec", ns, "curl", "-s", "-i", "--max-time", "5", "-w", "\n%{http_code}"]).args(args));
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (resp, code) = all.rsplit_once('\n').unwrap_or(("", "0"));
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    Http { code: code.trim().parse().unwrap_or(0), head: head.to_owned(), body: body.to_owned() }
}

fn get(t: &Topology, pod: &str, path: &str) -> Http {
    curl(&t.ns(pod), &["--path-as-is", &format!("http://{SERVER}:8080{path}")])
}

fn post(t: &Topology, pod: &str, path: &str) -> Http {
    curl(&t.ns(pod), &["-X", "POST", "-d", "qty=1", &format!("http://{SERVER}:8080{path}")])
}

/// The Python echo check against the server's TCP port from a pod: `echo: ...`, `closed`, ...
fn echo(t: &Topology, pod: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("netns/echo_check.py");
    let out = run(&mut t.ns_cmd(pod, &["python3", script.to_str().unwrap(), SERVER, "9000"]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `openssl s_client` from the node namespace straight to the server's inbound sidecar
/// (PREROUTING redirect), optionally presenting a certificate, sending one HTTP request.
fn s_client(t: &Topology, cert: Option<(&Path, &Path)>) -> Output {
    let bundle = t.mesh.join("bundle.pem");
    let mut args: Vec<String> = ["timeout", "10", "openssl", "s_client", "-quiet", "-connect", "10.77.0.3:8080", "-CAfile"].map(String::from).to_vec();
    args.push(bundle.display().to_string());
    if let Some((c, k)) = cert {
        args.extend(["-cert".into(), c.display().to_string(), "-key".into(), k.display().to_string()]);
    }
    let mut cmd = t.ns_cmd("node", &args.iter().map(String::as_str).collect::<Vec<_>>());
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("openssl s_client");
    let _ = std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"GET /api/orders HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n");
    // Closes stdin; -quiet implies -ign_eof, so s_client reads on until the server hangs up.
    child.wait_with_output().expect("openssl s_client output")
}

fn step(start: Instant, what: &str) {
    eprintln!("[{:>6.2}s] {what}", start.elapsed().as_secs_f64());
}

/// The namespace tests need root, as CI has. Without it they fail, unless the developer opts out
/// explicitly with `TRUSTMESH_SKIP_NETNS=1` (then they say so).
fn root_or_skip() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("TRUSTMESH_SKIP_NETNS").is_some(),
        "the network-namespace tests need root (CI runs them as root); run as root or set TRUSTMESH_SKIP_NETNS=1 to skip them"
    );
    eprintln!("SKIPPED (TRUSTMESH_SKIP_NETNS is set): the network-namespace tests need root");
    false
}

#[test]
fn policy_is_enforced_between_pod_namespaces() {
    if !root_or_skip() {
        return;
    }
    let start = Instant::now();
    let mut t = Topology::new("f");
    t.fetch_svids_and_snapshots();
    for (pod, _) in PODS {
        t.init(pod);
        t.start_file_sidecar(pod, pod, &format!("sidecar-{pod}"));
    }
    step(start, "topology, SVIDs, iptables and sidecars are up");

    // 1. The allowed caller reaches the allowed paths, and the app learns who called.
    let r = get(&t, "client", "/api/orders");
    assert_eq!(r.code, 200, "the client should reach GET /api/orders through both sidecars; got {} {}\n{}", r.code, r.body, t.log("sidecar-client"));
    assert!(r.body.contains(&format!("GET /api/orders\npeer={TD}client")), "the app should see the client's SPIFFE ID in x-trustmesh-peer, but answered {:?}", r.body);
    assert_eq!(get(&t, "client", "/healthz").code, 200, "the client should reach GET /healthz");

    // 2. The same caller is denied other methods and paths, with an id found in the access log.
    let r = post(&t, "client", "/api/orders");
    assert_eq!(r.code, 403, "POST /api/orders should be denied to the client, got {}: {}", r.code, r.body);
    assert!(r.header("x-trustmesh-denied").is_some(), "a mesh denial should say so in x-trustmesh-denied:\n{}", r.head);
    let id = r.header("x-trustmesh-request-id").expect("a denial should carry x-trustmesh-request-id").to_owned();
    let line = eventually(Duration::from_secs(5), "the denial's access-log line", || {
        t.log("sidecar-server").lines().find(|l| l.contains(&format!("\"id\":\"{id}\""))).map(str::to_owned)
    });
    assert!(line.contains("\"decision\":\"deny\"") && line.contains("\"method\":\"POST\""), "the access-log line for request {id} should record a denied POST: {line}");
    assert_eq!(get(&t, "client", "/admin").code, 403, "GET /admin should be denied to the client");

    // 4. The client's opaque TCP connection to port 9000 is allowed (rule 2) and echoes.
    assert_eq!(echo(&t, "client"), "echo: hello trustmesh", "the client's TCP connection to port 9000 should echo through the mesh");

    // 3. The intruder has a valid certificate but the wrong identity.
    let r = get(&t, "intruder", "/api/orders");
    assert_eq!(r.code, 403, "the intruder should be denied GET /api/orders, got {}: {}", r.code, r.body);
    assert!(r.body.contains(&format!("{TD}intruder")), "the denial should name the intruder: {}", r.body);
    assert_eq!(echo(&t, "intruder"), "closed", "the intruder's TCP connection to port 9000 should be closed without an echo");
    step(start, "allowed and denied callers checked");

    // 3b. The same policy over IPv6: ip6tables redirection, the sidecars' IPv6 listeners, and
    // the server's IPv6 address meshed like the IPv4 one.
    let v6 = |pod: &str, method: &str| curl(&t.ns(pod), &["-g", "-X", method, &format!("http://{SERVER_V6}:8080/api/orders")]);
    let r = v6("client", "GET");
    assert_eq!(r.code, 200, "the client should reach GET /api/orders over IPv6, got {} {}\n{}", r.code, r.body, t.log("sidecar-client"));
    // The app seeing the client's SPIFFE ID proves the call went sidecar to sidecar over mTLS (a
    // passed-through plaintext call would have been refused by the strict server sidecar).
    assert!(r.body.contains(&format!("peer={TD}client")), "over IPv6 too the app should see the client's SPIFFE ID: {:?}", r.body);
    assert_eq!(v6("client", "POST").code, 403, "POST is denied over IPv6 as over IPv4");
    let r = v6("intruder", "GET");
    assert_eq!(r.code, 403, "the intruder is denied over IPv6, got {}: {}", r.code, r.body);
    step(start, "IPv6 checked");

    // 7. Attack-shaped paths: normalized before authorization, or refused.
    for (path, code) in [("/api/../admin", 403), ("//admin", 403), ("/%61dmin", 403), ("/api/%2e%2e/admin", 403), ("/admin%2F..", 400), ("/api/..;/admin", 400)] {
        let r = get(&t, "client", path);
        assert_eq!(r.code, code, "GET {path} should be answered {code} by the mesh, got {}: {}", r.code, r.body);
    }
    let r = get(&t, "client", "/api/./orders//x");
    assert!(r.code == 200 && r.body.starts_with("GET /api/orders/x\n"), "the app should receive the normalized path, got {} {:?}", r.code, r.body);

    // 5. TLS-level checks straight to the server's inbound sidecar from the node namespace.
    let svid = t.pod_dir("client").join("svid");
    let ok = s_client(&t, Some((&svid.join("svid.pem"), &svid.join("svid.key"))));
    assert!(text(&ok).contains("HTTP/1.1 200"), "openssl s_client with the client's SVID should get a 200 (control): {}", text(&ok));
    let bad = t.tmp.join("bad-certs");
    let made = run(Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("netns/certs.py"))
        .arg(&bad)
        .arg(t.mesh.join("ca/tls.crt"))
        .arg(t.mesh.join("ca/tls.key"))
        .arg(format!("{TD}client")));
    assert!(made.status.success(), "certs.py failed (is `cryptography` installed? scripts/test.sh does it): {}", text(&made));
    for (what, cert) in [("a certificate from another CA", Some("foreign")), ("an expired certificate", Some("expired")), ("no certificate", None)] {
        let files = cert.map(|c| (bad.join(format!("{c}.pem")), bad.join(format!("{c}.key"))));
        let out = s_client(&t, files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())));
        assert!(!text(&out).contains("HTTP/1."), "a caller with {what} should get no HTTP response, but got: {}", text(&out));
    }
    let r = curl(&t.ns("node"), &["http://10.77.0.3:8080/healthz"]);
    assert_eq!(r.code, 0, "plaintext to the server's inbound port should be refused in strict mode, got {}", r.code);
    let m = t.metrics("server");
    for reason in ["unknown_issuer", "expired", "no_client_certificate", "plaintext"] {
        let series = format!("trustmesh_tls_failures_total{{direction=\"inbound\",reason=\"{reason}\"}}");
        assert!(m.contains(&series), "the server sidecar should count the refused handshake as {series}:\n{m}");
    }

    // Kubelet-style probe through the admin port (not redirected), from the node.
    let r = curl(&t.ns("node"), &["http://10.77.0.3:15020/app-health/8080/healthz"]);
    assert_eq!(r.code, 200, "the probe /app-health/8080/healthz should reach the app: {}", r.body);
    let r = curl(&t.ns("node"), &["http://10.77.0.3:15020/app-health/8080/healthz?deep=1"]);
    assert_eq!(r.code, 200, "a probe with a query is forwarded as configured: {}", r.body);
    // ... and nothing but the configured probes: no other path or query, no path tricks, no other method.
    for other in ["/app-health/8080/healthz?deep=2", "/app-health/8080/admin", "/app-health/8080//healthz", "/app-health/8080/../../admin", "/app-health/9000/healthz"] {
        let r = curl(&t.ns("node"), &["--path-as-is", &format!("http://10.77.0.3:15020{other}")]);
        assert_eq!(r.code, 403, "{other} is not a configured probe and must not reach the app: {}", r.body);
    }
    let r = curl(&t.ns("node"), &["-X", "POST", "http://10.77.0.3:15020/app-health/8080/healthz"]);
    assert_eq!(r.code, 405, "a probe is a GET; a POST must not reach the app");
    // The workload's policy (/config) is for the pod itself only, not for the network.
    let r = curl(&t.ns("node"), &["http://10.77.0.3:15020/config"]);
    assert_eq!(r.code, 403, "/config must not be readable from outside the pod: {}", r.body);
    step(start, "paths, TLS refusals and probe checked");

    // 6. An impostor at the server's address (the intruder's SVID) is refused by the client's sidecar.
    t.stop("sidecar-server");
    t.start_file_sidecar("server", "intruder", "sidecar-impostor");
    let r = get(&t, "client", "/api/orders");
    assert_eq!(r.code, 0, "the client should get no response from a server proving the wrong identity, got {} {}", r.code, r.body);
    let series = "trustmesh_tls_failures_total{direction=\"outbound\",reason=\"unexpected_identity\"}";
    let m = t.metrics("client");
    assert!(m.contains(series), "the client sidecar should count the impostor as {series}:\n{m}");
    t.stop("sidecar-impostor");
    t.start_file_sidecar("server", "server", "sidecar-server-2");
    assert_eq!(get(&t, "client", "/api/orders").code, 200, "the real server should be reachable again");
    step(start, "impostor refused");

    // 8. A policy change reaches the sidecar without a restart.
    t.write_policy("GET, POST");
    t.write_snapshot("server");
    let changed = Instant::now();
    eventually(Duration::from_secs(5), "POST /api/orders to be allowed after the policy change", || (post(&t, "client", "/api/orders").code == 200).then_some(()));
    step(start, &format!("policy change in force after {:?}", changed.elapsed()));
    assert_eq!(get(&t, "client", "/admin").code, 403, "GET /admin should still be denied after the change");
}

#[test]
fn sidecars_follow_the_operator_over_config_watch() {
    if !root_or_skip() {
        return;
    }
    let start = Instant::now();
    let mut t = Topology::new("w");
    let mut operator = t.ns_cmd("node", &[bin("trustmesh-operator").to_str().unwrap(), "local", "--dir", t.mesh.to_str().unwrap()]);
    operator.args(["--listen", "10.77.0.1:15012", "--metrics-listen", "10.77.0.1:15014"]);
    t.spawn("operator", operator);
    eventually(Duration::from_secs(20), "the operator on the bridge to be healthy", || (curl(&t.ns("node"), &["http://10.77.0.1:15014/healthz"]).code == 200).then_some(()));
    for pod in ["client", "server"] {
        t.init(pod);
        // The mesh directory is private (0700): the sidecar's uid gets copies.
        let (token, bundle) = (t.pod_dir(pod).join("token"), t.pod_dir(pod).join("bundle.pem"));
        std::fs::copy(t.mesh.join("bundle.pem"), &bundle).unwrap();
        let args = ["--operator", "10.77.0.1:15012", "--bundle", bundle.to_str().unwrap(), "--token-file", token.to_str().unwrap()];
        t.start_sidecar(pod, &args, &format!("sidecar-{pod}"));
    }
    step(start, "operator on the bridge, sidecars following it");

    let r = get(&t, "client", "/api/orders");
    assert_eq!(r.code, 200, "the client should reach GET /api/orders with operator-issued SVIDs, got {} {}", r.code, r.body);
    assert!(r.body.contains(&format!("peer={TD}client")), "the app should see the client's SPIFFE ID: {:?}", r.body);
    assert_eq!(echo(&t, "client"), "echo: hello trustmesh", "the client's TCP connection to port 9000 should echo");
    assert_eq!(post(&t, "client", "/api/orders").code, 403, "POST should be denied before the policy change");

    t.write_policy("GET, POST");
    let changed = Instant::now();
    eventually(Duration::from_secs(5), "POST /api/orders to be allowed once Config.Watch delivers the change", || {
        (post(&t, "client", "/api/orders").code == 200).then_some(())
    });
    step(start, &format!("policy change arrived over Config.Watch after {:?}", changed.elapsed()));

    t.write_policy("GET");
    eventually(Duration::from_secs(5), "POST /api/orders to be denied again once the change is reverted", || {
        (post(&t, "client", "/api/orders").code == 403).then_some(())
    });
}
