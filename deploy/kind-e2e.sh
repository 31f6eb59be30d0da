#!/usr/bin/env bash
# Runs Switchboard's Kubernetes suites on kind, plus the path the local test bed cannot run (real pods:
# chat-node, registry and Redis actually running; clients chat through the registry).
#
# Needs: docker, kind, kubectl, cargo. Opt-in: the development machine has no container engine, so CI
# there uses the kwok test bed instead (cargo test -p e2e --test operator).
#
#   deploy/kind-e2e.sh            # create the cluster (if missing), build+load images, run the suites
#   KEEP=1 deploy/kind-e2e.sh     # keep the cluster afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-switchboard}
TAG=${TAG:-0.1.0}
for tool in docker kind kubectl cargo; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is not installed" >&2; exit 1; }
done

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config deploy/kind/cluster.yaml --wait 120s
fi
export KUBECONFIG="$(mktemp)"
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"
cleanup() {
  rm -f "$KUBECONFIG"
  [ -n "${KEEP:-}" ] || kind delete cluster --name "$CLUSTER"
}
trap cleanup EXIT

# The Dockerfiles take release binaries from a build context (deploy/docker/README.md); build them in
# Debian 12 so that they run on the images' glibc whatever the host is.
CONTEXT="$(mktemp -d)"
docker run --rm -v "$PWD":/src -w /src -e CARGO_TARGET_DIR=/src/target/bookworm rust:1.95-bookworm \
  cargo build --release --locked -p chat-node -p registry -p operator
mkdir -p "$CONTEXT/bin"
for image in chat-node registry operator; do
  cp "target/bookworm/release/$image" "$CONTEXT/bin/"
  docker build -f "deploy/docker/$image.Dockerfile" -t "switchboard/$image:$TAG" "$CONTEXT"
  kind load docker-image --name "$CLUSTER" "switchboard/$image:$TAG"
done
docker pull redis:7.4-alpine
kind load docker-image --name "$CLUSTER" redis:7.4-alpine

# 1. The same suites as on the test bed (they only read KUBECONFIG). Skipped here: the operator scenarios
#    that point chat-node pods at a redis-server on the test machine's loopback (External mode) and flip
#    readiness by hand; real pods cannot reach that Redis, and a kubelet owns their readiness. Step 2 covers
#    the load set with real pods and real Redis instead.
cargo test -p e2e --test testbed
cargo test -p e2e --test operator -- \
  --skip load_set_follows_pod_readiness \
  --skip two_chat_clusters_never_see \
  --skip scale_down_removes_the_least_loaded \
  --skip missing_password_secret_is_degraded \
  --skip current_master_comes_from_real_sentinels

# 2. Install exactly as a user does, then a real chat system with real pods.
kubectl apply --server-side -f crds/ -f manifests/
kubectl -n switchboard-system rollout status deployment/switchboard-operator --timeout=180s
kubectl create namespace chat-e2e --dry-run=client -o yaml | kubectl apply -f -
kubectl -n chat-e2e apply -f manifests/examples/minimal.yaml
kubectl -n chat-e2e wait --for=condition=Ready chatcluster/chat --timeout=300s
kubectl -n chat-e2e get chatcluster chat -o wide

# The current master is read from the real sentinels, and the load set holds every ready node.
test "$(kubectl -n chat-e2e get chatcluster chat -o jsonpath='{.status.loadSetMembers}')" = "2"
kubectl -n chat-e2e get chatcluster chat -o jsonpath='{.status.redis.currentMaster}' | grep -q chat-redis-

# Clients chat through the registry: it assigns ready nodes; then two clients on two different chat-node
# pods (reached over port-forwards) talk through the real Redis in the cluster.
kubectl -n chat-e2e port-forward service/chat-registry 18081:80 >/dev/null 2>&1 &
PF=$!
pods=($(kubectl -n chat-e2e get pods -l app.kubernetes.io/component=chat-node -o jsonpath='{.items[*].metadata.name}'))
test "${#pods[@]}" -ge 2
kubectl -n chat-e2e port-forward "pod/${pods[0]}" 18091:8080 >/dev/null 2>&1 &
PA=$!
kubectl -n chat-e2e port-forward "pod/${pods[1]}" 18092:8080 >/dev/null 2>&1 &
PB=$!
trap 'kill $PF $PA $PB 2>/dev/null || true; cleanup' EXIT
sleep 3
curl -fsS http://127.0.0.1:18081/v1/assign
echo
cargo run -q -p e2e --bin chat-probe -- --a ws://127.0.0.1:18091/ws --b ws://127.0.0.1:18092/ws
# Scale through the scale subresource; the load set follows the new ready pods.
kubectl -n chat-e2e scale chatcluster/chat --replicas 3
kubectl -n chat-e2e wait --for=jsonpath='{.status.loadSetMembers}'=3 chatcluster/chat --timeout=180s
echo "kind-e2e: all passed"
