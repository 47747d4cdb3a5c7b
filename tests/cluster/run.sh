#!/usr/bin/env bash
# Tier 6: trustmesh on a real cluster (kind or k3d). Installs the chart, deploys two demo
# services (tests/cluster/demo.yaml) in a namespace labelled trustmesh.dev/inject=enabled, and
# checks that an allowed call gets 200 and denied calls get the mesh's 403.
#
#   KUBECONFIG=~/.kube/config tests/cluster/run.sh
#
# The images must be where the cluster's nodes find them; build and load them first, e.g.
#   docker build -f Dockerfile.operator -t trustmesh/trustmesh-operator:dev .
#   docker build -f Dockerfile.sidecar  -t trustmesh/trustmesh-sidecar:dev .
#   kind load docker-image trustmesh/trustmesh-operator:dev trustmesh/trustmesh-sidecar:dev
#   (k3d: k3d image import ... -c <cluster>)
# or set LOAD_IMAGES=kind:<cluster> / LOAD_IMAGES=k3d:<cluster> and this script loads them.
#
# Settings (environment):
#   OPERATOR_IMAGE   default trustmesh/trustmesh-operator:dev
#   SIDECAR_IMAGE    default trustmesh/trustmesh-sidecar:dev
#   SERVER_IMAGE     default python:3.12-alpine   (the demo HTTP server)
#   CLIENT_IMAGE     default curlimages/curl:8.11.1
#   RELEASE_NS       default trustmesh-system     (where the chart goes)
#   DEMO_NS          default trustmesh-e2e        (recreated on every run)
#   HELM_EXTRA_ARGS  more `helm upgrade --install` arguments (word-split)
#   KEEP=1           keep the demo namespace afterwards; UNINSTALL=1 also uninstalls the chart
#   TIMEOUT          seconds to wait for each step (default 180)
set -euo pipefail
cd "$(dirname "$0")/../.."

OPERATOR_IMAGE=${OPERATOR_IMAGE:-trustmesh/trustmesh-operator:dev}
SIDECAR_IMAGE=${SIDECAR_IMAGE:-trustmesh/trustmesh-sidecar:dev}
SERVER_IMAGE=${SERVER_IMAGE:-python:3.12-alpine}
CLIENT_IMAGE=${CLIENT_IMAGE:-curlimages/curl:8.11.1}
RELEASE=trustmesh
RELEASE_NS=${RELEASE_NS:-trustmesh-system}
NS=${DEMO_NS:-trustmesh-e2e}
TIMEOUT=${TIMEOUT:-180}

passed=0 failed=0
say() { printf '== %s\n' "$*"; }
ok() { passed=$((passed + 1)); printf 'ok    %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$*"; }
die() { printf 'cluster test: %s\n' "$*" >&2; exit 1; }

[ -n "${KUBECONFIG:-}" ] || die "KUBECONFIG is not set; point it at a kind or k3d cluster (kind create cluster; kind get kubeconfig)"
command -v kubectl >/dev/null || die "kubectl is needed"
if [ -z "${HELM:-}" ]; then
  HELM=$(command -v helm || true)
  [ -n "$HELM" ] || HELM=$(./scripts/install-helm.sh)
fi
kubectl version --request-timeout=10s >/dev/null || die "the cluster in KUBECONFIG=$KUBECONFIG does not answer"

repo_of() { echo "${1%:*}"; }
tag_of() { echo "${1##*:}"; }

case "${LOAD_IMAGES:-}" in
  kind:*) say "loading images into kind cluster ${LOAD_IMAGES#kind:}"
          kind load docker-image --name "${LOAD_IMAGES#kind:}" "$OPERATOR_IMAGE" "$SIDECAR_IMAGE" ;;
  k3d:*)  say "importing images into k3d cluster ${LOAD_IMAGES#k3d:}"
          k3d image import -c "${LOAD_IMAGES#k3d:}" "$OPERATOR_IMAGE" "$SIDECAR_IMAGE" ;;
  "") ;;
  *) die "LOAD_IMAGES=$LOAD_IMAGES: expected kind:<cluster> or k3d:<cluster>" ;;
esac

diagnose() {
  say "diagnostics"
  kubectl -n "$RELEASE_NS" get pods -o wide || true
  kubectl -n "$RELEASE_NS" logs -l app.kubernetes.io/instance="$RELEASE" --all-containers --tail=80 --prefix || true
  kubectl -n "$NS" get pods -o wide || true
  kubectl -n "$NS" get wid,acp -o wide || true
  kubectl -n "$NS" get events --sort-by=.lastTimestamp | tail -30 || true
  kubectl -n "$NS" logs deploy/server --all-containers --tail=40 --prefix || true
}

cleanup() {
  local rc=$?
  [ "$rc" = 0 ] && [ "$failed" = 0 ] || diagnose
  if [ "${KEEP:-0}" != 1 ]; then
    kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    if [ "${UNINSTALL:-0}" = 1 ]; then
      "$HELM" uninstall "$RELEASE" -n "$RELEASE_NS" >/dev/null 2>&1 || true
    fi
  fi
}
trap cleanup EXIT

# Retries a command until it prints the expected value (or TIMEOUT passes); prints the last value.
until_equals() {
  local want=$1; shift
  local deadline=$((SECONDS + TIMEOUT)) got=""
  while :; do
    got=$("$@" 2>/dev/null || true)
    [ "$got" = "$want" ] && break
    [ $SECONDS -lt $deadline ] || break
    sleep 2
  done
  echo "$got"
}

say "installing the chart ($("$HELM" version --short)) into $RELEASE_NS"
# shellcheck disable=SC2086
"$HELM" upgrade --install "$RELEASE" charts/trustmesh \
  --namespace "$RELEASE_NS" --create-namespace \
  --set image.operator.repository="$(repo_of "$OPERATOR_IMAGE")",image.operator.tag="$(tag_of "$OPERATOR_IMAGE")" \
  --set image.sidecar.repository="$(repo_of "$SIDECAR_IMAGE")",image.sidecar.tag="$(tag_of "$SIDECAR_IMAGE")" \
  --set image.operator.pullPolicy=IfNotPresent,image.sidecar.pullPolicy=IfNotPresent \
  --wait --timeout "${TIMEOUT}s" ${HELM_EXTRA_ARGS:-}
kubectl -n "$RELEASE_NS" rollout status deployment/"$RELEASE" --timeout="${TIMEOUT}s"
ok "operator deployment rolled out"

# The operator writes the mesh CA into every webhook's caBundle; until then injection fails.
ca_bundles_set() {
  kubectl get mutatingwebhookconfiguration "$RELEASE-injector" \
    -o jsonpath='{range .webhooks[*]}{.clientConfig.caBundle}{"\n"}{end}' \
    | awk 'length($0) == 0 { empty = 1 } END { print (NR > 0 && !empty) ? "yes" : "no" }'
}
if [ "$(until_equals yes ca_bundles_set)" = yes ]; then ok "the operator set the injector's caBundle"; else bad "caBundle of $RELEASE-injector never set"; exit 1; fi

say "deploying the demo services into $NS"
kubectl delete namespace "$NS" --ignore-not-found --wait=true --timeout="${TIMEOUT}s" >/dev/null
sed -e "s|__NS__|$NS|g" -e "s|__SERVER_IMAGE__|$SERVER_IMAGE|g" -e "s|__CLIENT_IMAGE__|$CLIENT_IMAGE|g" \
  tests/cluster/demo.yaml | kubectl apply -f -
for d in server client intruder; do
  kubectl -n "$NS" rollout status deployment/"$d" --timeout="${TIMEOUT}s"
done

for d in server client intruder; do
  containers=$(kubectl -n "$NS" get pods -l app="$d" -o jsonpath='{.items[0].spec.initContainers[*].name}')
  case " $containers " in
    *" trustmesh-sidecar "*) ok "$d: sidecar injected (init containers: $containers)" ;;
    *) bad "$d: no trustmesh-sidecar among init containers ($containers)" ;;
  esac
done

if kubectl -n "$NS" wait --for=condition=Ready wid --all --timeout="${TIMEOUT}s" >/dev/null; then
  ok "WorkloadIdentities Ready"
else
  bad "WorkloadIdentities not Ready"
fi
if kubectl -n "$NS" wait --for=condition=Accepted acp/server-callers --timeout="${TIMEOUT}s" >/dev/null; then
  ok "AccessPolicy server-callers Accepted"
else
  bad "AccessPolicy server-callers not Accepted"
fi

# HTTP status of GET <path> on the server, from deployment $1's app container.
call() {
  kubectl -n "$NS" exec deploy/"$1" -c client -- \
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://server.$NS.svc:8080$2"
}
headers() {
  kubectl -n "$NS" exec deploy/"$1" -c client -- curl -s -D - -o /dev/null --max-time 5 "http://server.$NS.svc:8080$2"
}

say "calls"
# The first call may come before the policy reaches the server's sidecar: retry until TIMEOUT.
got=$(until_equals 200 call client /api/hello)
if [ "$got" = 200 ]; then ok "client GET /api/hello -> 200 (allowed by server-callers)"; else bad "client GET /api/hello -> $got, want 200"; fi

got=$(until_equals 403 call client /admin)
if [ "$got" = 403 ]; then ok "client GET /admin -> 403 (path not in the policy)"; else bad "client GET /admin -> $got, want 403"; fi
if headers client /admin | grep -qi '^x-trustmesh-denied:'; then
  ok "the 403 says it was the mesh (x-trustmesh-denied)"
else
  bad "the 403 has no x-trustmesh-denied header"
fi

got=$(until_equals 403 call intruder /api/hello)
if [ "$got" = 403 ]; then ok "intruder GET /api/hello -> 403 (identity not allowed)"; else bad "intruder GET /api/hello -> $got, want 403"; fi

if kubectl -n "$NS" logs deploy/server --all-containers --tail=500 | grep -q '"decision":"deny"'; then
  ok "the server's access log records the denials"
else
  bad "no \"decision\":\"deny\" line in the server's access log"
fi

echo "cluster: $passed passed, $failed failed"
[ "$failed" = 0 ]
