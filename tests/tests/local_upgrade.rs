//! WebSocket upgrades through real sidecars in local mode: an allowed handshake is switched and
//! bytes flow both ways through the tunnel; a handshake the policy does not allow gets 403; an
//! `h2c` upgrade is not passed on (it would carry requests no rule sees); quarantining the
//! caller closes an open tunnel.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use trustmesh_tests::local::{LocalMesh, Pair, connect, read_head};
use trustmesh_tests::eventually;

const POLICY: &str = "apiVersion: trustmesh.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: server-callers, namespace: default}\nspec:\n  targetRef: {name: server}\n  rules:\n  - from: [{identity: client}]\n    to: [{methods: [GET], paths: [/ws, /plain]}]\n";

/// An app that switches a request carrying `Upgrade: websocket` to an echo of raw bytes, and
/// answers anything else with 200 and `upgrade=<the Upgrade header it got, or none>`.
fn ws_app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                let head = read_head(&mut reader).unwrap_or_default();
                let upgrade = head.iter().find_map(|l| l.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("upgrade")).map(|(_, v)| v.trim().to_owned()));
                if upgrade.as_deref().is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
                    let _ = stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n");
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = reader.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                } else {
                    let body = format!("upgrade={}", upgrade.as_deref().unwrap_or("none"));
                    let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                }
            });
        }
    });
    port
}

/// Sends a handshake and returns the response head (and, for non-101 answers, what follows).
fn handshake(conn: &mut TcpStream, path: &str, upgrade: &str, connection: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nhost: server\r\nconnection: {connection}\r\nupgrade: {upgrade}\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Writes `msg` into the tunnel and reads it back; `None` when the tunnel is gone.
fn echo(conn: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
    conn.write_all(msg).ok()?;
    let mut back = vec![0u8; msg.len()];
    conn.read_exact(&mut back).ok()?;
    Some(back)
}

#[test]
fn websocket_tunnels_are_authorized_switched_and_closed_on_quarantine() {
    let mesh = LocalMesh::start("local-upgrade", POLICY);
    let app = ws_app();
    let Pair { server: _server, server_admin: _, client: _client, outbound } = mesh.pair(app, "");

    // Allowed: switched, and raw bytes flow both ways through both sidecars.
    let mut tunnel = connect(outbound);
    let head = handshake(&mut tunnel, "/ws", "websocket", "Upgrade");
    assert!(head.starts_with("HTTP/1.1 101"), "an allowed WebSocket handshake is switched: {head:?}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head:?}");
    for msg in [&b"\x81\x05hello"[..], b"not even a websocket frame\n"] {
        assert_eq!(echo(&mut tunnel, msg).as_deref(), Some(msg), "bytes cross the tunnel unchanged");
    }

    // Not allowed: the handshake is an HTTP request like any other.
    let head = handshake(&mut connect(outbound), "/admin", "websocket", "Upgrade");
    assert!(head.starts_with("HTTP/1.1 403"), "a handshake the policy does not allow is denied: {head:?}");

    // h2c is not passed on: the app answers the plain request and never sees the Upgrade.
    let mut h2c = connect(outbound);
    let head = handshake(&mut h2c, "/plain", "h2c", "Upgrade, HTTP2-Settings");
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    let mut body = [0u8; 12];
    h2c.read_exact(&mut body).unwrap();
    assert_eq!(&body, b"upgrade=none", "the app never saw Upgrade: h2c");

    // Quarantining the caller closes the open tunnel.
    let yaml = std::fs::read_to_string(mesh.dir.join("resources/workload-default-client.yaml")).unwrap();
    mesh.write("workload-default-client.yaml", &yaml.replacen("serviceAccount: client", "serviceAccount: client\n  suspended: true", 1));
    tunnel.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    eventually(Duration::from_secs(10), "the tunnel of the quarantined caller to close", || echo(&mut tunnel, b"still there?").is_none().then_some(()));
    mesh.passed();
}
