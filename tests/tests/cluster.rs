//! Tier 6: a real cluster. Runs `tests/cluster/run.sh`, which installs the chart, deploys two
//! demo services with WorkloadIdentities and an AccessPolicy, and checks an allowed call (200)
//! and denied calls (403). Ignored by default; run it against a kind or k3d cluster with the
//! images loaded (see tests/cluster/README.md):
//!
//! ```sh
//! KUBECONFIG=~/.kube/config cargo test -p trustmesh-tests --test cluster -- --ignored --nocapture
//! ```

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs a kind or k3d cluster: set KUBECONFIG and run with --ignored (see tests/cluster/README.md)"]
fn a_real_cluster_allows_the_policy_and_denies_the_rest() {
    let Some(kubeconfig) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) else {
        panic!(
            "KUBECONFIG is not set: this test needs a kind or k3d cluster with the trustmesh images loaded \
             (see tests/cluster/README.md), e.g. `kind create cluster` then \
             KUBECONFIG=~/.kube/config cargo test -p trustmesh-tests --test cluster -- --ignored"
        );
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/run.sh");
    let status = Command::new("bash")
        .arg(&script)
        .env("KUBECONFIG", &kubeconfig)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "{} failed ({status}); its output above says which check", script.display());
}
