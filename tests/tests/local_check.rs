//! `check` says what the sidecar does: real calls through real sidecars in local mode, then the
//! same calls asked of `trustmesh-operator local check` (compiling the directory) and of
//! `trustmesh-sidecar check --admin` (asking the running server sidecar for its `/config`, as
//! `kubectl exec` would inside the pod). Both must give the
//! verdict the call got and name the same decider as the 403's `x-trustmesh-denied` header or the
//! access-log line.

use std::io::Write;
use std::process::{Command, Stdio};

use trustmesh_tests::local::{LocalMesh, Pair, app};
use trustmesh_tests::{bin, free_port, run, text};

const POLICY: &str = "apiVersion: trustmesh.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: server-callers, namespace: default}\nspec:\n  targetRef: {name: server}\n  rules:\n  - from: [{identity: client}]\n    to: [{methods: [GET], paths: [\"/api/*\"]}]\n";
const CLIENT: &str = "spiffe://local.trustmesh/ns/default/sa/client";

/// A real call through the client's outbound listener: status and the mesh's denial header.
fn call(outbound: u16, method: &str, path: &str) -> (String, Option<String>) {
    let out = run(Command::new("curl").args(["-s", "-i", "--path-as-is", "--max-time", "5", "-X", method, &format!("http://127.0.0.1:{outbound}{path}")]));
    let head = text(&out);
    let status = head.split(' ').nth(1).unwrap_or("0").to_owned();
    let denied_by = head.lines().find_map(|l| l.strip_prefix("x-trustmesh-denied: ")).map(|v| v.trim().to_owned());
    (status, denied_by)
}

/// The decider named on the `decision:` line, and the exit status.
fn decided(out: &std::process::Output) -> (Option<i32>, String) {
    let line = text(out).lines().find(|l| l.starts_with("decision: ")).map(str::to_owned).unwrap_or_default();
    (out.status.code(), line)
}

#[test]
fn check_gives_the_verdict_and_decider_the_sidecar_gave() {
    let mesh = LocalMesh::start("local-check", POLICY);
    let app = app();
    let Pair { server: _server, server_admin: admin, client: _client, outbound } = mesh.pair(app, "");
    let config = text(&run(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{admin}/config")])));
    assert!(config.contains("\"snapshot\""), "{config}");

    let port = app.to_string();
    let local_check = |method: &str, path: &str| {
        let args = ["local", "check", mesh.dir.to_str().unwrap(), "--target", "default/server", "--caller", "default/client", "--port", &port, "--method", method, "--path", path];
        run(Command::new(bin("trustmesh-operator")).args(args))
    };
    let admin_addr = format!("127.0.0.1:{admin}");
    let sidecar_check = |method: &str, path: &str| {
        run(Command::new(bin("trustmesh-sidecar")).args(["check", "--admin", &admin_addr, "--caller", CLIENT, "--port", &port, "--method", method, "--path", path]))
    };

    for (method, path) in [("GET", "/api/orders"), ("POST", "/api/orders"), ("GET", "/admin"), ("GET", "/api/../admin"), ("GET", "/api/./orders//1")] {
        let (status, denied_by) = call(outbound, method, path);
        for (who, out) in [("local check", local_check(method, path)), ("sidecar check", sidecar_check(method, path))] {
            let (code, line) = decided(&out);
            match status.as_str() {
                "200" => {
                    assert_eq!(code, Some(0), "{who} {method} {path}: the sidecar allowed it: {}", text(&out));
                    assert_eq!(line, "decision: ALLOW by default/server-callers@1 rule 0", "{who} {method} {path}: {}", text(&out));
                }
                "403" => {
                    let by = denied_by.clone().expect("a mesh denial names its decider");
                    assert_eq!(code, Some(1), "{who} {method} {path}: the sidecar denied it: {}", text(&out));
                    assert_eq!(line, format!("decision: DENY by {by}"), "{who} {method} {path}: the same decider as the 403: {}", text(&out));
                }
                other => panic!("{method} {path}: unexpected status {other}"),
            }
        }
    }

    // A saved /config on standard input gives the same answer.
    let mut child = Command::new(bin("trustmesh-sidecar"))
        .args(["check", "--snapshot", "-", "--caller", CLIENT, "--port", &port, "--method", "POST", "--path", "/api/orders"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trustmesh-sidecar check");
    child.stdin.take().unwrap().write_all(config.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(decided(&out), (Some(1), "decision: DENY by default (deny)".to_owned()), "{}", text(&out));

    // A near miss is explained, and bad questions are answered with exit status 2.
    let out = local_check("POST", "/api/orders");
    assert!(text(&out).contains("default/server-callers@1 rule 0 (Allow, Enforce): ports any methods GET paths /api/*"), "{}", text(&out));
    let out = run(Command::new(bin("trustmesh-operator")).args(["local", "check", mesh.dir.to_str().unwrap(), "--target", "default/nobody", "--caller", "default/client", "--port", "80"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no servable WorkloadIdentity default/nobody"), "{}", text(&out));
    let out = run(Command::new(bin("trustmesh-sidecar")).args(["check", "--admin", &format!("127.0.0.1:{}", free_port()), "--caller", CLIENT, "--port", "80"]));
    assert_eq!(out.status.code(), Some(2), "nobody listens there: {}", text(&out));
    mesh.passed();
}
