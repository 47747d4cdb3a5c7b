//! The control plane and real sidecars in local mode, through the binaries: the demo runs and
//! exits 0; a policy edit reaches running sidecars over Config.Watch without a restart; a
//! quarantine refuses new connections and closes the open one.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use trustmesh_tests::local::{LocalMesh, Pair, app, connect, request};
use trustmesh_tests::{Proc, bin, eventually, free_port, run, text};

#[test]
fn the_demo_prints_its_table_and_exits_zero() {
    let out = run(Command::new(bin("trustmesh-operator")).arg("demo").env("RUST_LOG", "warn"));
    let t = text(&out);
    assert!(out.status.success(), "demo failed:\n{t}");
    for row in [
        "frontend  orders    GET     /api/orders/42             allow     shop/orders-callers@1 rule 0",
        "frontend  orders    GET     /api/orders/../../admin    deny 403  default (deny)",
        "orders    payments  POST    /api/charge                allow     shop/payments-callers@1 rule 0",
    ] {
        assert!(t.contains(row), "missing row {row:?} in:\n{t}");
    }
    assert!(t.contains("is now allowed") && t.contains("are refused") && t.contains("demo finished"), "{t}");
}

#[test]
fn policy_edits_and_quarantine_reach_running_sidecars() {
    let policy = |methods: &str| {
        format!("apiVersion: trustmesh.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: server-callers, namespace: default}}\nspec:\n  targetRef: {{name: server}}\n  rules:\n  - from: [{{identity: client}}]\n    to: [{{methods: [{methods}], paths: [/api/*]}}]\n")
    };
    let mesh = LocalMesh::start("local-mesh", &policy("GET"));
    let metrics = mesh.metrics;
    let app = app();
    let Pair { server, server_admin: _, client: _client, outbound } = mesh.pair(app, "");

    let mut conn = connect(outbound);
    assert_eq!(request(&mut conn, "GET"), 200, "the client may GET");
    assert_eq!(request(&mut conn, "POST"), 403, "the client may not POST yet");

    // A policy edit reaches the running server sidecar over Config.Watch.
    mesh.write("policy.yaml", &policy("GET, POST"));
    eventually(Duration::from_secs(5), "the edited policy to allow POST", || (request(&mut conn, "POST") == 200).then_some(()));
    // The access log is written in batches (every 20 ms): wait for the line.
    let allow_line = eventually(Duration::from_secs(5), "an access-log line for the allowed POST", || {
        server.output().lines().rev().find(|l| l.contains("\"method\":\"POST\"") && l.contains("\"decision\":\"allow\"")).map(str::to_owned)
    });
    assert!(allow_line.contains("\"policy\":\"default/server-callers@2\""), "the log names the new generation: {allow_line}");

    // Quarantine the client: the open connection is closed and new ones are refused.
    let yaml = std::fs::read_to_string(mesh.dir.join("resources/workload-default-client.yaml")).unwrap();
    mesh.write("workload-default-client.yaml", &yaml.replacen("serviceAccount: client", "serviceAccount: client\n  suspended: true", 1));
    eventually(Duration::from_secs(5), "the open connection to be closed", || (request(&mut conn, "GET") == 0).then_some(()));
    let mut fresh = connect(outbound);
    assert_eq!(request(&mut fresh, "GET"), 0, "a new connection from a quarantined caller is refused");
    let m = run(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{metrics}/metrics")]));
    assert!(text(&m).contains("trustmesh_proxies_connected 2"), "{}", text(&m));
    // Policy coverage is computed in local mode too: client and server, at least, fall under the
    // mesh default deny.
    let deny_default = text(&m)
        .lines()
        .find_map(|l| l.strip_prefix("trustmesh_policy_coverage_workloads{protection=\"default_deny\"} "))
        .and_then(|n| n.trim().parse::<i64>().ok());
    assert!(deny_default.is_some_and(|n| n >= 2), "{}", text(&m));
    mesh.passed();
}

/// A server that speaks first (like SMTP or a database): a banner line on every connection.
fn banner_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"220 external ready\r\n");
        }
    });
    port
}

/// The first line a fresh connection to `port` receives ("" when it is closed without one).
fn first_line(port: u16) -> String {
    let mut line = String::new();
    let _ = BufReader::new(connect(port)).read_line(&mut line);
    line
}

/// What a sidecar's admin port says it enforces (`/config`).
fn config_of(admin: u16) -> serde_json::Value {
    let out = run(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{admin}/config")]));
    serde_json::from_str(&text(&out)).expect("/config is JSON")
}

/// The newest inbound access-log line of a sidecar that records a decision.
fn last_inbound_decision(sidecar: &Proc) -> Option<String> {
    sidecar.output().lines().rev().find(|l| l.contains("\"direction\":\"inbound\"") && l.contains("\"decision\":")).map(str::to_owned)
}

#[test]
fn egress_lock_and_opaque_ports_reach_running_sidecars() {
    let policy = "apiVersion: trustmesh.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: server-callers, namespace: default}\nspec:\n  targetRef: {name: server}\n  rules:\n  - from: [{identity: client}]\n";
    let mesh = LocalMesh::start("local-egress", policy);
    let (inbound, meshed, external) = (mesh.inbound, free_port(), free_port());
    let (app, outside) = (app(), banner_server());
    let (server, admin_s) = mesh.sidecar("server", &format!("--inbound 127.0.0.1:{inbound}=127.0.0.1:{app}"));
    let outbound = format!("--outbound 127.0.0.1:{meshed}=127.0.0.1:{inbound} --outbound 127.0.0.1:{external}=127.0.0.1:{outside}");
    let (client, admin_c) = mesh.sidecar("client", &outbound);

    // Egress is open by default: a destination that is not meshed is passed through.
    assert_eq!(first_line(external), "220 external ready\r\n");
    // Locking the namespace's egress refuses it, while the meshed destination keeps working.
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels: {trustmesh.dev/egress: locked}\n";
    mesh.write("namespace.yaml", ns);
    eventually(Duration::from_secs(5), "egress to be locked", || first_line(external).is_empty().then_some(()));
    assert_eq!(request(&mut connect(meshed), "GET"), 200);
    let refused = eventually(Duration::from_secs(5), "a log line for the refused egress", || {
        client.output().lines().rev().find(|l| l.contains("egress_locked")).map(str::to_owned)
    });
    assert!(refused.contains(&format!("\"port\":{outside}")), "{refused}");
    assert_eq!(config_of(admin_c)["snapshot"]["egress"], "deny");
    let m = text(&run(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{admin_c}/metrics")])));
    let gauge = |name: &str| m.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<i64>().ok());
    assert!(gauge("trustmesh_snapshot_version").is_some_and(|v| v >= 2), "the locked-egress version is in force:\n{m}");
    assert!(gauge("trustmesh_snapshot_applied_timestamp_seconds").is_some_and(|t| t > 1_700_000_000), "{m}");
    // Connections let through are logged too, naming the identity the server proved.
    let passed = eventually(Duration::from_secs(5), "a log line for the meshed connection", || {
        client.output().lines().rev().find(|l| l.contains("\"reason\":\"meshed\"")).map(str::to_owned)
    });
    assert!(passed.contains("\"dst\":\"spiffe://local.trustmesh/ns/default/sa/server\"") && passed.contains("\"decision\":\"allow\""), "{passed}");

    // Malformed HTTP gets a 400 from the server's sidecar and an access-log line, never the app.
    let mut bad = connect(meshed);
    bad.write_all(b"GET /api/x HTTP/1.1\r\nhost: server\r\nno colon here\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = BufReader::new(bad).read_line(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    eventually(Duration::from_secs(5), "a log line for the malformed request", || {
        server.output().lines().rev().find(|l| l.contains("\"reason\":\"bad_request\"")).map(|_| ())
    });
    // Bytes that are not HTTP, on a port not declared opaque, are refused: otherwise HTTP sent
    // late or disguised would reach the app unchecked, with a caller-written x-trustmesh-peer.
    let mut raw = connect(meshed);
    raw.write_all(b"get /api/x HTTP/1.1\r\nx-trustmesh-peer: spiffe://local.trustmesh/ns/default/sa/admin\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = BufReader::new(raw).read_line(&mut answer);
    assert_eq!(answer, "", "closed without an answer");
    eventually(Duration::from_secs(5), "a log line for the refused non-HTTP connection", || {
        server.output().lines().rev().find(|l| l.contains("\"reason\":\"not_http\"")).map(|_| ())
    });
    // Empty lines before a request line are still HTTP (RFC 9112).
    let mut crlf = connect(meshed);
    crlf.write_all(b"\r\n").unwrap();
    assert_eq!(request(&mut crlf, "GET"), 200);

    // HTTP is detected on the app port and authorized per request (the log names the method) ...
    assert_eq!(request(&mut connect(meshed), "GET"), 200);
    let line = eventually(Duration::from_secs(5), "an HTTP decision", || last_inbound_decision(&server).filter(|l| l.contains("\"method\":\"GET\"")));
    assert!(line.contains("\"decision\":\"allow\""), "{line}");
    // An audit pilot: the namespace's default becomes `audit`, and the policy now only allows
    // POST. A GET goes through, logged and counted as what enforcement would have done.
    mesh.write("policy.yaml", &format!("{policy}    to: [{{methods: [POST]}}]\n"));
    let audit_ns = ns.replace("{trustmesh.dev/egress: locked}", "{trustmesh.dev/egress: locked, trustmesh.dev/default-policy: audit}");
    mesh.write("namespace.yaml", &audit_ns);
    let line = eventually(Duration::from_secs(5), "a GET allowed under the audit default", || {
        let status = request(&mut connect(meshed), "GET");
        let line = last_inbound_decision(&server)?;
        (status == 200 && line.contains("\"method\":\"GET\"") && line.contains("\"audit\":\"would deny\"")).then_some(line)
    });
    assert!(line.contains("\"decision\":\"allow\""), "{line}");
    let m = text(&run(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{admin_s}/metrics")])));
    assert!(m.lines().any(|l| l.starts_with("trustmesh_audit_findings_total{direction=\"inbound\",would=\"deny\"}") && !l.ends_with(" 0")), "{m}");

    // ... until the identity declares it opaque: then each connection is authorized once, with
    // no method or path, and the bytes pass through untouched.
    let yaml = std::fs::read_to_string(mesh.dir.join("resources/workload-default-server.yaml")).unwrap();
    mesh.write("workload-default-server.yaml", &yaml.replacen("serviceAccount: server", &format!("serviceAccount: server\n  opaquePorts: [{app}]"), 1));
    eventually(Duration::from_secs(5), "the server sidecar to treat the app port as opaque", || {
        let status = request(&mut connect(meshed), "GET");
        let line = last_inbound_decision(&server)?;
        (status == 200 && !line.contains("\"method\"") && line.contains("\"decision\":\"allow\"")).then_some(())
    });
    assert_eq!(config_of(admin_s)["snapshot"]["opaquePorts"], serde_json::json!([app]));
    mesh.passed();
}

/// An app that answers HTTP/1.1 and HTTP/2 over cleartext (h2c, like a gRPC server) with the
/// protocol version it saw, the caller identity the sidecar asserted, and any x-trustmesh-peer
/// request trailer that reached it.
fn h2c_app() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt;
                        let peer = req.headers().get("x-trustmesh-peer").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
                        let version = req.version();
                        let trailers = req.into_body().collect().await.ok().and_then(|c| c.trailers().cloned());
                        let forged = trailers.as_ref().and_then(|t| t.get("x-trustmesh-peer")).map(|v| format!(" trailer-peer={}", v.to_str().unwrap_or("?"))).unwrap_or_default();
                        let body = format!("{version:?} {peer}{forged}\n");
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body))))
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc).await;
                });
            }
        });
    });
    port
}

/// POSTs over HTTP/2 (prior knowledge) with one request trailer; returns the response body.
fn h2_post_with_trailer(port: u16, name: &'static str, value: &'static str) -> String {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let mut trailers = hyper::HeaderMap::new();
        trailers.insert(name, hyper::header::HeaderValue::from_static(value));
        let frames = vec![Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from_static(b"x"))), Ok(hyper::body::Frame::trailers(trailers))];
        let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
        let req = hyper::Request::post(format!("http://127.0.0.1:{port}/pkg.Service/Method")).body(body).unwrap();
        let resp = send.send_request(req).await.unwrap();
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    })
}

#[test]
fn http2_callers_reach_an_h2c_app_over_http2() {
    let policy = "apiVersion: trustmesh.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: server-callers, namespace: default}\nspec:\n  targetRef: {name: server}\n  rules:\n  - from: [{identity: client}]\n    to: [{methods: [GET, POST]}]\n";
    let mesh = LocalMesh::start("local-h2", policy);
    let app = h2c_app();
    let Pair { server: _server, server_admin: _, client: _client, outbound } = mesh.pair(app, "");
    let url = format!("http://127.0.0.1:{outbound}/pkg.Service/Method");
    let h2 = text(&run(Command::new("curl").args(["-s", "--http2-prior-knowledge", "-X", "POST", &url])));
    assert_eq!(h2, "HTTP/2.0 spiffe://local.trustmesh/ns/default/sa/client\n", "an HTTP/2 caller reaches the app over HTTP/2");
    let h1 = text(&run(Command::new("curl").args(["-s", "--http1.1", &url])));
    assert_eq!(h1, "HTTP/1.1 spiffe://local.trustmesh/ns/default/sa/client\n");
    let denied = run(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge", "-X", "DELETE", &url]));
    assert_eq!(text(&denied), "403", "HTTP/2 requests are authorized one by one");
    // A caller-written x-trustmesh-peer in the request trailers (gRPC metadata) never arrives.
    let got = h2_post_with_trailer(outbound, "x-trustmesh-peer", "spiffe://local.trustmesh/ns/default/sa/admin");
    assert_eq!(got, "HTTP/2.0 spiffe://local.trustmesh/ns/default/sa/client\n", "the forged trailer is dropped");
    mesh.passed();
}

#[test]
fn a_config_stream_ends_when_its_identity_is_repointed_at_another_service_account() {
    let policy = "apiVersion: trustmesh.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: server-callers, namespace: default}\nspec:\n  targetRef: {name: server}\n  rules:\n  - from: [{identity: client}]\n";
    let mesh = LocalMesh::start("local-repoint", policy);
    let (server, _) = mesh.sidecar("server", &format!("--inbound 127.0.0.1:{}=127.0.0.1:{}", mesh.inbound, app()));
    // The resource `default/server` now issues .../sa/payments: the sidecar holding the
    // .../sa/server certificate must not receive what is now another workload's policy.
    let yaml = std::fs::read_to_string(mesh.dir.join("resources/workload-default-server.yaml")).unwrap();
    mesh.write("workload-default-server.yaml", &yaml.replacen("serviceAccount: server", "serviceAccount: payments", 1));
    let line = eventually(Duration::from_secs(10), "the stream to be ended by the operator", || {
        server.output().lines().find(|l| l.contains("config stream ended")).map(str::to_owned)
    });
    assert!(line.contains("no longer issues spiffe://local.trustmesh/ns/default/sa/server"), "{line}");
    mesh.passed();
}
