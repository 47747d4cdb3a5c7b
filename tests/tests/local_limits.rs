//! The sidecar's limits and its behaviour at the edges, through the binaries in local mode:
//! oversized and slow requests, the connection cap, a graceful drain on SIGTERM, permissive mode,
//! and fail-static when the operator goes away.

use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use trustmesh_tests::local::{LocalMesh, Pair, SLOW_REQUESTS_STARTED, app, connect, request, request_path};
use trustmesh_tests::{Proc, eventually, run, text};

const ALLOW_GET: &str = "apiVersion: trustmesh.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: server-callers, namespace: default}\nspec:\n  targetRef: {name: server}\n  rules:\n  - from: [{identity: client}]\n    to: [{methods: [GET]}]\n";

/// Everything the server answers on `conn` until it closes it or 5 s pass.
fn answer(conn: &mut std::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = conn.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn wait_for_log(sidecar: &Proc, what: &str, needle: &str) -> String {
    eventually(Duration::from_secs(5), what, || sidecar.output().lines().rev().find(|l| l.contains(needle)).map(str::to_owned))
}

fn metric(admin: u16, name: &str) -> Option<f64> {
    let m = text(&run(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{admin}/metrics")])));
    m.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn status_of(url: &str, extra: &[&str]) -> String {
    text(&run(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"]).args(extra).arg(url)))
}

#[test]
fn oversized_slow_and_excess_requests_are_refused_and_logged() {
    let mesh = LocalMesh::start("local-limits", ALLOW_GET);
    let app = app();
    let Pair { server, server_admin: admin_s, client: _client, outbound } = mesh.pair(app, "--header-seconds 1 --max-connections 3");

    // A request head over 64 KiB, and one with more than 100 headers: 431, never the app.
    let mut big = connect(outbound);
    big.write_all(format!("GET /api/x HTTP/1.1\r\nhost: server\r\nx-big: {}\r\n\r\n", "a".repeat(70 * 1024)).as_bytes()).unwrap();
    assert!(answer(&mut big).starts_with("HTTP/1.1 431"), "an oversized head gets 431");
    let mut many = connect(outbound);
    let headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    many.write_all(format!("GET /api/x HTTP/1.1\r\nhost: server\r\n{headers}\r\n").as_bytes()).unwrap();
    assert!(answer(&mut many).starts_with("HTTP/1.1 431"), "too many headers get 431");
    wait_for_log(&server, "a log line for the oversized head", "\"reason\":\"headers_too_large\"");

    // A client that starts a request and never finishes its head is cut off after
    // --header-seconds (closed without an answer, as nginx does; the log says why), well before
    // the 5 s read timeout of this client.
    let mut slow = connect(outbound);
    slow.write_all(b"GET /api/x HTTP/1.1\r\nhost: ser").unwrap();
    let mut got = Vec::new();
    let closed = slow.read_to_end(&mut got);
    assert!(closed.is_ok() && got.is_empty(), "a slow head is closed (not left waiting for the client's read timeout): {closed:?} {got:?}");
    wait_for_log(&server, "a log line for the slow head", "\"reason\":\"header_timeout\"");

    // The connection cap: three keep-alive connections fill it; a fourth is closed at accept.
    eventually(Duration::from_secs(5), "the refused connections' slots to be free", || {
        (metric(admin_s, "trustmesh_open_connections") == Some(0.0)).then_some(())
    });
    let mut held: Vec<_> = (0..3).map(|_| connect(outbound)).collect();
    for c in &mut held {
        assert_eq!(request(c, "GET"), 200);
    }
    assert_eq!(request(&mut connect(outbound), "GET"), 0, "a fourth connection is over the cap");
    assert!(metric(admin_s, "trustmesh_connections_overloaded_total").is_some_and(|n| n >= 1.0), "the overload is counted");
    drop(held.pop());
    eventually(Duration::from_secs(5), "a slot to be free again", || (request(&mut connect(outbound), "GET") == 200).then_some(()));
    for c in &mut held {
        assert_eq!(request(c, "GET"), 200, "connections under the cap were never disturbed");
    }
    mesh.passed();
}

#[test]
fn sigterm_finishes_in_flight_requests_and_stops_being_ready() {
    let mesh = LocalMesh::start("local-drain", ALLOW_GET);
    let app = app();
    let Pair { mut server, server_admin: admin_s, client: _client, outbound } = mesh.pair(app, "--drain-seconds 10");

    let before = SLOW_REQUESTS_STARTED.load(Ordering::SeqCst);
    let in_flight = std::thread::spawn(move || request_path(&mut connect(outbound), "GET", "/slow"));
    eventually(Duration::from_secs(5), "the slow request to reach the app", || (SLOW_REQUESTS_STARTED.load(Ordering::SeqCst) > before).then_some(()));
    server.terminate();
    eventually(Duration::from_secs(5), "/ready to say draining", || {
        (status_of(&format!("http://127.0.0.1:{admin_s}/ready"), &[]) == "503").then_some(())
    });
    assert_eq!(in_flight.join().unwrap(), 200, "the request in flight at SIGTERM is answered");
    let status = server.wait_exit(Duration::from_secs(15)).expect("the sidecar exits once drained");
    assert!(status.success(), "a drained sidecar exits 0: {status:?}\n{}", server.output());
    assert!(std::net::TcpStream::connect(("127.0.0.1", mesh.inbound)).is_err(), "no listener after the drain");
    mesh.passed();
}

#[test]
fn permissive_mode_serves_plaintext_and_certificate_less_callers_as_unauthenticated() {
    let mesh = LocalMesh::start("local-permissive", ALLOW_GET);
    let app = app();
    let Pair { server, server_admin: _, client: _client, outbound } = mesh.pair(app, "--permissive");
    let direct = format!("127.0.0.1:{}/api/x", mesh.inbound);

    // Accepted, but as the caller `unauthenticated`, which no rule names: the default denies.
    assert_eq!(status_of(&format!("http://{direct}"), &[]), "403", "plaintext is heard, then denied by default");
    let line = wait_for_log(&server, "the plaintext caller's decision", "\"src\":\"unauthenticated\"");
    assert!(line.contains("\"decision\":\"deny\"") && line.contains("\"policy\":\"default\""), "{line}");
    assert_eq!(status_of(&format!("https://{direct}"), &["-k"]), "403", "TLS without a client certificate is unauthenticated too");
    // The meshed caller is still identified and allowed.
    assert_eq!(request(&mut connect(outbound), "GET"), 200);

    // A namespace piloting `allow` lets the unauthenticated caller through, and still logs it.
    mesh.write("namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels: {trustmesh.dev/default-policy: allow}\n");
    eventually(Duration::from_secs(5), "the allow default to reach the sidecar", || (status_of(&format!("http://{direct}"), &[]) == "200").then_some(()));
    let line = wait_for_log(&server, "the allowed plaintext caller's decision", "\"decision\":\"allow\",\"policy\":\"default\"");
    assert!(line.contains("\"src\":\"unauthenticated\""), "{line}");
    mesh.passed();
}

#[test]
fn sidecars_keep_their_last_snapshot_while_the_operator_is_away_and_reconnect() {
    let mut mesh = LocalMesh::start("local-failstatic", ALLOW_GET);
    let app = app();
    let Pair { server, server_admin: admin_s, client: _client, outbound } = mesh.pair(app, "");
    assert_eq!(request(&mut connect(outbound), "GET"), 200);
    let applied = metric(admin_s, "trustmesh_snapshots_applied_total").expect("snapshots applied");

    mesh.stop_operator();
    // Without its control plane the mesh goes on enforcing what it last knew, on new
    // connections too: GET allowed, POST denied, still ready.
    for _ in 0..3 {
        let mut c = connect(outbound);
        assert_eq!(request(&mut c, "GET"), 200, "the last good snapshot stays in force");
        assert_eq!(request(&mut c, "POST"), 403, "... denials included");
    }
    assert_eq!(status_of(&format!("http://127.0.0.1:{admin_s}/ready"), &[]), "200");

    // An edit made while it is away reaches the sidecars once it is back.
    mesh.write("policy.yaml", &ALLOW_GET.replace("methods: [GET]", "methods: [GET, POST]"));
    mesh.start_operator();
    eventually(Duration::from_secs(30), "the sidecar to reconnect and apply the edit", || {
        (request(&mut connect(outbound), "POST") == 200).then_some(())
    });
    assert!(metric(admin_s, "trustmesh_snapshots_applied_total").is_some_and(|n| n > applied), "a new snapshot is in force");
    assert!(!server.output().contains("panicked"));
    mesh.passed();
}
