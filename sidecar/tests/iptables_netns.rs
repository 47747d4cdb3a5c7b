//! `init` against the real kernel, in a throwaway network namespace (needs root: CI runs as root).
//!
//! The rules are applied twice and must appear once; cleanup must leave no `TRUSTMESH_*` chain;
//! and a real connection from inside the namespace to 10.200.0.1:80 (IPv4) and fd00:200::1:80
//! (IPv6) must land on the outbound listener with `original_dst()` reporting where it was going.
//! The test process stays in the host namespace; the connection half runs as a child — this test
//! binary again, under `ip netns exec`, running the `#[ignore]`d helper test.

use std::net::SocketAddr;
use std::process::Command;

use trustmesh_sidecar::iptables::{self, InitConfig, PortSelection, Runner};
use trustmesh_sidecar::orig_dst::original_dst;

/// Set for the child: the helper does nothing without it.
const HELPER_ENV: &str = "TRUSTMESH_IPT_NETNS_HELPER";
const HELPER_TEST: &str = "redirect_helper_inside_netns";

/// Deletes the namespace however the test ends.
struct Netns(String);

impl Netns {
    fn create(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).output(); // a leftover from a crashed run
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(o) if o.status.success() => Netns(name),
            Ok(o) => panic!(
                "`ip netns add {name}` failed: {}\nthis test needs root (CI runs as root) and iproute2; run it as root",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run `ip` ({e}); install iproute2 (apt-get install iproute2) and run as root"),
        }
    }

    fn sh(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.0));
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}\n(is iptables installed? apt-get install iptables)",
            self.0,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ours(save: &str) -> Vec<&str> {
    save.lines().filter(|l| l.contains("TRUSTMESH_")).collect()
}

fn assert_installed_once(save: &str, cfg: &InitConfig, family: iptables::Family, inbound: u16, outbound: u16) {
    let lines = ours(save);
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), lines.len(), "duplicate trustmesh lines:\n{save}");
    for chain in [iptables::INBOUND, iptables::IN_REDIRECT, iptables::OUTPUT, iptables::OUT_REDIRECT] {
        let decl = format!(":{chain} - [0:0]");
        assert_eq!(lines.iter().filter(|l| **l == decl).count(), 1, "{chain} declared once:\n{save}");
    }
    let expected_rules = iptables::family_rules(cfg, family).iter().filter(|c| c.contains(&"-A".to_owned())).count();
    let got_rules = lines.iter().filter(|l| l.starts_with("-A ")).count();
    assert_eq!(got_rules, expected_rules, "one line per rule:\n{save}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("-A PREROUTING") && l.ends_with("-j TRUSTMESH_INBOUND")).count(),
        1
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("-A OUTPUT") && l.ends_with("-j TRUSTMESH_OUTPUT")).count(), 1);
    for (chain, port) in [(iptables::IN_REDIRECT, inbound), (iptables::OUT_REDIRECT, outbound)] {
        let want = format!("-j REDIRECT --to-ports {port}");
        assert!(lines.iter().any(|l| l.starts_with(&format!("-A {chain} ")) && l.ends_with(&want)), "{want}:\n{save}");
    }
    assert!(lines.iter().any(|l| l.contains("--uid-owner 1337") && l.ends_with("-j RETURN")), "{save}");
}

#[test]
fn init_is_idempotent_cleans_up_and_redirects() {
    let ns = Netns::create(format!("tm-ipt-{}", std::process::id()));
    let runner = Runner::in_netns(&ns.0);
    ns.sh(&["ip", "link", "set", "lo", "up"]);
    // Test addresses on `lo` (not a dummy link: not every kernel has the dummy driver). Nothing
    // listens on port 80, so only the redirect can make the connection succeed.
    ns.sh(&["ip", "addr", "add", "10.200.0.1/24", "dev", "lo"]);
    ns.sh(&["ip", "addr", "add", "fd00:200::1/64", "dev", "lo", "nodad"]);

    let cfg = InitConfig {
        ipv6: true,
        include_inbound_ports: PortSelection::All,
        // The helper's connection goes to port 80: redirected through the include list.
        include_outbound_ports: PortSelection::Only(vec![80, 8080]),
        exclude_outbound_ports: vec![5432],
        exclude_outbound_cidrs: vec!["10.96.0.0/12".into(), "fd00:96::/64".into()],
        ..InitConfig::default()
    };
    iptables::apply(&cfg, &runner).unwrap_or_else(|e| panic!("first apply: {e}"));
    iptables::apply(&cfg, &runner).unwrap_or_else(|e| panic!("second apply: {e}"));
    let v4 = ns.sh(&["iptables-save", "-t", "nat"]);
    let v6 = ns.sh(&["ip6tables-save", "-t", "nat"]);
    assert_installed_once(&v4, &cfg, iptables::Family::V4, 15006, 15001);
    assert_installed_once(&v6, &cfg, iptables::Family::V6, 15006, 15001);
    assert!(v4.contains("-d 10.96.0.0/12") && !v4.contains("fd00:96::"), "{v4}");
    assert!(v6.contains("-d fd00:96::/64") && !v6.contains("10.96.0.0"), "{v6}");

    // A real redirect: the child is root, not uid 1337, so its connection goes to 15001.
    let exe = std::env::current_exe().expect("current test binary");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(&exe)
        .args(["--exact", HELPER_TEST, "--ignored", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, "1")
        .output()
        .expect("run the helper in the namespace");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "redirect helper failed:\n{log}");
    assert!(log.contains("1 passed"), "the helper did not run:\n{log}");

    iptables::cleanup(&cfg, &runner).unwrap_or_else(|e| panic!("cleanup: {e}"));
    for save in [ns.sh(&["iptables-save", "-t", "nat"]), ns.sh(&["ip6tables-save", "-t", "nat"])] {
        assert!(ours(&save).is_empty(), "left behind after cleanup:\n{save}");
    }
    // Cleanup of a clean namespace is a no-op, not an error.
    iptables::cleanup(&cfg, &runner).unwrap_or_else(|e| panic!("second cleanup: {e}"));
}

/// Runs inside the namespace (see above); a no-op anywhere else.
#[tokio::test]
#[ignore = "helper: run by init_is_idempotent_cleans_up_and_redirects inside a network namespace"]
async fn redirect_helper_inside_netns() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    for (bind, target) in [("0.0.0.0:15001", "10.200.0.1:80"), ("[::]:15001", "[fd00:200::1]:80")] {
        let listener = tokio::net::TcpListener::bind(bind).await.expect("bind the outbound port");
        let target: SocketAddr = target.parse().expect("target");
        let connect = tokio::spawn(async move { tokio::net::TcpStream::connect(target).await });
        let (accepted, peer) = tokio::time::timeout(std::time::Duration::from_secs(10), listener.accept())
            .await
            .unwrap_or_else(|_| panic!("{target}: nothing reached {bind}: not redirected"))
            .expect("accept");
        let client = connect.await.expect("join").expect("connect");
        assert_eq!(client.peer_addr().expect("peer"), target, "the app sees the address it dialled");
        let dst = original_dst(&accepted).unwrap_or_else(|e| panic!("{target} (from {peer}): {e}"));
        assert_eq!(dst, target);
        println!("{target}: redirected to {}, original_dst = {dst}", accepted.local_addr().expect("local"));
    }
}
