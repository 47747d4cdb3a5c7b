//! A local-mode mesh for the end-to-end tests: a directory made by `trustmesh-operator local
//! init`, workloads `client` and `server`, the operator running on it, real sidecars started on
//! demand, and a small keep-alive HTTP/1.1 app to put behind them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{Proc, bin, eventually, free_port, run, text, wait_for_port};

/// Requests for `/slow` the app has started on (see [`app`]).
pub static SLOW_REQUESTS_STARTED: AtomicUsize = AtomicUsize::new(0);

/// Reads one request head (request line and headers, up to the empty line); `None` when the
/// connection ends before a line.
pub fn read_head(reader: &mut impl BufRead) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line == "\r\n" {
            return Some(lines);
        }
        lines.push(std::mem::take(&mut line));
    }
    (!lines.is_empty()).then_some(lines)
}

/// An app that answers every HTTP/1.1 request with 200 on a keep-alive connection; a request
/// for `/slow` is answered after 1.5 s (counted in [`SLOW_REQUESTS_STARTED`] when it arrives).
pub fn app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                while let Some(head) = read_head(&mut reader) {
                    if head.first().is_some_and(|l| l.contains(" /slow ")) {
                        SLOW_REQUESTS_STARTED.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(1500));
                    }
                    if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Sends one request for `/api/x` on `conn` and returns the status code (0 when the connection
/// is gone).
pub fn request(conn: &mut TcpStream, method: &str) -> u16 {
    request_path(conn, method, "/api/x")
}

/// Sends one request for `path` on `conn` and returns the status code (0 when the connection is
/// gone).
pub fn request_path(conn: &mut TcpStream, method: &str, path: &str) -> u16 {
    let req = format!("{method} {path} HTTP/1.1\r\nhost: server\r\ncontent-length: 0\r\n\r\n");
    if conn.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

pub fn connect(port: u16) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

/// A server sidecar and a client sidecar whose outbound leads to it (see [`LocalMesh::pair`]).
pub struct Pair {
    /// The server's sidecar (its log holds the inbound decisions).
    pub server: Proc,
    /// The server sidecar's admin port.
    pub server_admin: u16,
    /// The client's sidecar.
    pub client: Proc,
    /// The client's outbound listener: plain HTTP in, mTLS to the server's inbound.
    pub outbound: u16,
}

/// A local-mode directory with workloads `client` and `server` (the latter at
/// 127.0.0.1:`inbound`), `policy` written to `resources/policy.yaml`, and the operator running on
/// it. The directory (with every process's log) is kept when a test fails.
pub struct LocalMesh {
    /// The local-mode directory.
    pub dir: PathBuf,
    /// The operator's gRPC port.
    pub grpc: u16,
    /// The operator's metrics port.
    pub metrics: u16,
    /// The port the `server` workload's sidecar is registered at.
    pub inbound: u16,
    operator: Option<Proc>,
}

impl LocalMesh {
    /// Makes the directory and starts the operator on it.
    pub fn start(name: &str, policy: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("trustmesh-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.to_str().unwrap();
        let op = |args: &[&str]| {
            let o = run(Command::new(bin("trustmesh-operator")).args(["local"]).args(args));
            assert!(o.status.success(), "{}", text(&o));
        };
        let (inbound, grpc, metrics) = (free_port(), free_port(), free_port());
        op(&["init", d]);
        op(&["add-workload", d, "--name", "client"]);
        op(&["add-workload", d, "--name", "server", "--address", &format!("127.0.0.1:{inbound}")]);
        std::fs::write(dir.join("resources/policy.yaml"), policy).unwrap();
        let mut mesh = Self { dir, grpc, metrics, inbound, operator: None };
        mesh.start_operator();
        mesh
    }

    /// Starts the operator (again) on the same directory and ports, and waits for its gRPC port.
    pub fn start_operator(&mut self) {
        let mut cmd = Command::new(bin("trustmesh-operator"));
        cmd.args(["local", "--dir"]).arg(&self.dir);
        cmd.args(["--listen", &format!("127.0.0.1:{}", self.grpc), "--metrics-listen", &format!("127.0.0.1:{}", self.metrics)]);
        let runs = std::fs::read_dir(&self.dir).map_or(0, |d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("operator")).count());
        self.operator = Some(Proc::spawn(cmd, self.dir.join(format!("operator-{runs}.log"))));
        wait_for_port(format!("127.0.0.1:{}", self.grpc).parse().unwrap(), Duration::from_secs(20));
    }

    /// Stops the operator (SIGKILL): sidecars lose their control plane.
    pub fn stop_operator(&mut self) {
        if let Some(mut p) = self.operator.take() {
            p.stop();
        }
    }

    /// Starts the sidecar of workload `name` with `listeners` and waits until it is ready
    /// (certificate and snapshot). Returns it and its admin port.
    pub fn sidecar(&self, name: &str, listeners: &str) -> (Proc, u16) {
        let admin = free_port();
        let mut cmd = Command::new(bin("trustmesh-sidecar"));
        cmd.args(["run", "--operator", &format!("127.0.0.1:{}", self.grpc), "--bundle"]).arg(self.dir.join("bundle.pem"));
        cmd.arg("--token-file").arg(self.dir.join("tokens").join(name));
        cmd.args(listeners.split(' ')).args(["--admin", &format!("127.0.0.1:{admin}")]);
        let p = Proc::spawn(cmd, self.dir.join(format!("{name}.log")));
        eventually(Duration::from_secs(20), "the sidecar to be ready (certificate + snapshot)", || {
            let o = run(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{admin}/ready")]));
            o.status.success().then_some(())
        });
        assert!(!p.output().contains("panicked"));
        (p, admin)
    }

    /// The usual pair in front of `app`: the `server` sidecar's inbound on [`Self::inbound`]
    /// (plus `server_flags`, space-separated), and the `client` sidecar's outbound on a fresh port
    /// leading to it. Both are ready when this returns.
    pub fn pair(&self, app: u16, server_flags: &str) -> Pair {
        let inbound = format!("--inbound 127.0.0.1:{}=127.0.0.1:{app} {server_flags}", self.inbound);
        let (server, server_admin) = self.sidecar("server", inbound.trim_end());
        let outbound = free_port();
        let (client, _) = self.sidecar("client", &format!("--outbound 127.0.0.1:{outbound}=127.0.0.1:{}", self.inbound));
        Pair { server, server_admin, client, outbound }
    }

    /// Writes `resources/<file>`.
    pub fn write(&self, file: &str, content: &str) {
        std::fs::write(self.dir.join("resources").join(file), content).unwrap();
    }

    /// Removes the directory (call at the end of a test that passed).
    pub fn passed(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

