//! Identity issuance through the real binaries in local mode, checked by tools we did not write:
//! `local init`, start the operator, fetch an SVID with `trustmesh-sidecar svid fetch`, verify it
//! with `openssl verify` and the Python `spiffe` package, suspend the identity and see the next
//! fetch refused with a clear message, restart the operator and see the same root.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use trustmesh_tests::{Proc, bin, eventually, free_port, run, text, wait_for_port};

fn start_operator(dir: &Path, grpc: u16, metrics: u16, log: &str) -> Proc {
    let mut cmd = Command::new(bin("trustmesh-operator"));
    cmd.args(["local", "--dir"]).arg(dir);
    cmd.args(["--listen", &format!("127.0.0.1:{grpc}"), "--metrics-listen", &format!("127.0.0.1:{metrics}")]);
    let p = Proc::spawn(cmd, dir.join(log));
    wait_for_port(format!("127.0.0.1:{grpc}").parse().unwrap(), Duration::from_secs(20));
    p
}

fn fetch(dir: &Path, grpc: u16, out: &Path) -> std::process::Output {
    run(Command::new(bin("trustmesh-sidecar"))
        .args(["svid", "fetch", "--operator", &format!("127.0.0.1:{grpc}"), "--bundle"])
        .arg(dir.join("bundle.pem"))
        .arg("--token-file")
        .arg(dir.join("tokens/demo"))
        .arg("--out")
        .arg(out))
}

fn openssl_verify(bundle: &Path, svid: &Path, purpose: &str) -> String {
    let out = run(Command::new("openssl").args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"]).arg(bundle).arg(svid));
    assert!(out.status.success(), "openssl verify -purpose {purpose} failed: {}", text(&out));
    text(&out)
}

#[test]
fn issue_verify_suspend_restart() {
    let tmp = tempdir();
    let dir = tmp.join("mesh");
    let init = run(Command::new(bin("trustmesh-operator")).args(["local", "init"]).arg(&dir));
    assert!(init.status.success(), "{}", text(&init));
    assert!(text(&init).contains("tokens/demo"), "{}", text(&init));
    let mode = |p: &str| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join(p)).unwrap().permissions()) & 0o777;
    assert_eq!(mode("tokens/demo"), 0o600, "join tokens are private");
    assert_eq!(mode("ca/tls.key"), 0o600, "the CA key is private");

    let (grpc, metrics) = (free_port(), free_port());
    let mut operator = start_operator(&dir, grpc, metrics, "operator-1.log");

    // Fetch, then check with openssl and py-spiffe.
    let out = tmp.join("svid");
    let fetched = fetch(&dir, grpc, &out);
    assert!(fetched.status.success(), "fetch failed: {}\noperator:\n{}", text(&fetched), operator.output());
    let expected = "spiffe://local.trustmesh/ns/default/sa/demo";
    assert!(text(&fetched).contains(expected), "{}", text(&fetched));
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(out.join("svid.key")).unwrap().permissions()) & 0o777, 0o600);
    openssl_verify(&out.join("bundle.pem"), &out.join("svid.pem"), "sslclient");
    openssl_verify(&out.join("bundle.pem"), &out.join("svid.pem"), "sslserver");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/check_svid.py");
    let py = run(Command::new("python3").arg(script).arg(&out).arg(expected).arg(format!("http://127.0.0.1:{metrics}/bundle.jwks")));
    assert!(py.status.success(), "py-spiffe check failed (is `pip install spiffe` done? scripts/test.sh does it): {}", text(&py));

    // Quarantine: the next fetch is refused with a message that says why and what to do.
    let resources = dir.join("resources/demo.yaml");
    let yaml = std::fs::read_to_string(&resources).unwrap();
    std::fs::write(&resources, yaml.replace("ttl: 1h", "ttl: 1h\n  suspended: true")).unwrap();
    let refused = eventually(Duration::from_secs(5), "the suspension to take effect", || {
        let o = fetch(&dir, grpc, &tmp.join("refused"));
        (!o.status.success()).then_some(o)
    });
    let msg = text(&refused);
    assert!(msg.contains("is suspended") && msg.contains("spec.suspended is false") && msg.contains("PermissionDenied"), "{msg}");
    let m = run(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{metrics}/metrics")]));
    assert!(text(&m).contains("trustmesh_svid_refusals_total{reason=\"suspended\"} 1"), "{}", text(&m));

    // A wrong token is refused as unauthenticated.
    std::fs::write(tmp.join("bad-token"), "not-a-token\n").unwrap();
    let bad = run(Command::new(bin("trustmesh-sidecar"))
        .args(["svid", "fetch", "--operator", &format!("127.0.0.1:{grpc}"), "--bundle"])
        .arg(dir.join("bundle.pem"))
        .arg("--token-file")
        .arg(tmp.join("bad-token"))
        .arg("--out")
        .arg(tmp.join("bad")));
    assert!(!bad.status.success() && text(&bad).contains("join token is not registered"), "{}", text(&bad));

    // Restart: the same root, and issuance works again once the identity is resumed.
    let root_before = std::fs::read(dir.join("ca/tls.crt")).unwrap();
    operator.stop();
    std::fs::write(&resources, yaml).unwrap();
    let _operator = start_operator(&dir, grpc, metrics, "operator-2.log");
    assert_eq!(std::fs::read(dir.join("ca/tls.crt")).unwrap(), root_before, "restart keeps the root");
    let again = fetch(&dir, grpc, &tmp.join("svid2"));
    assert!(again.status.success(), "{}", text(&again));
    openssl_verify(&out.join("bundle.pem"), &tmp.join("svid2/svid.pem"), "sslclient");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("trustmesh-e2e-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
