#!/usr/bin/env bash
# Runs every check and test of the project; `./setlist test` and CI call this.
# Installs what the tests need first (idempotent, cached under ~/.cache/setlist).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
unset CARGO_TARGET_DIR

scripts/install-libtorch.sh
scripts/install-rdkafka-sys.sh
# A real browser for the listener page's test.
scripts/install-chromium.sh
# The second broker for the end-to-end test on tansu (built once, cached).
SETLIST_TANSU=$(scripts/install-tansu.sh)
export SETLIST_TANSU
# Prometheus, promtool, podman and the Helm engine for the packaging and
# observability tests.
SETLIST_HELM_PYTHON=$(scripts/install-sre-tools.sh)
export SETLIST_HELM_PYTHON

echo "== formatting and lints"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --quiet -- -D warnings

echo "== build"
# End-to-end tests run the real binaries, so build them first.
cargo build --release --workspace --bins

# Real-data tests read SETLIST_DATASETS. Where the folder is missing they
# are left out here, by name, and the run says so: never a silent pass.
filter=()
if [[ -n "${SETLIST_DATASETS:-}" && -d "$SETLIST_DATASETS" ]]; then
  SETLIST_DATASETS=$(cd "$SETLIST_DATASETS" && pwd)
  export SETLIST_DATASETS
  echo "== real-data tests use $SETLIST_DATASETS"
else
  filter=(-E 'not test(/real_data/)')
  echo "== NOTE: SETLIST_DATASETS is not set or not a folder; the real-data tests (names containing 'real_data') are NOT run"
fi

echo "== tests"
# The operator's tests start a Kubernetes control plane (tests/src/k8s.rs)
# and leave it for the next test; it is stopped when the run ends.
k8s_run=/tmp/setlist-k8s-tests
stop_control_plane() {
  if [[ -f "$k8s_run/pids" || -d "$k8s_run/pids" ]] && [[ -x ../shared/k8s/stop.sh ]]; then
    RUN=$k8s_run ../shared/k8s/stop.sh >/dev/null 2>&1 || true
  fi
}
trap stop_control_plane EXIT
cargo nextest run --release --workspace --no-fail-fast "${filter[@]}"
