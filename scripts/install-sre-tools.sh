#!/usr/bin/env bash
# Installs the real tools the packaging and observability tests run:
# Prometheus and promtool, podman/buildah/mmdebstrap (images without a
# Docker engine; runc, because Debian's crun refuses this machine's hybrid
# cgroups) from Debian, and the Helm engine (PyPI's helm-python-sdk)
# in a virtual environment under ~/.cache/setlist. Idempotent: nothing is
# fetched where everything is present. Prints the virtual environment's
# python on stdout.
set -euo pipefail

cache=${XDG_CACHE_HOME:-$HOME/.cache}/setlist
venv=$cache/helm-python-sdk-0.2.2

missing=()
for tool in prometheus:prometheus promtool:prometheus podman:podman buildah:buildah \
  mmdebstrap:mmdebstrap newuidmap:uidmap fuse-overlayfs:fuse-overlayfs runc:runc; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
  echo "setlist: installing ${missing[*]} from Debian (once)" >&2
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq >&2
  # The package starts a Prometheus service where systemd runs; the tests
  # start their own on other ports.
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! "$venv/bin/python" -c 'import helm_python' 2>/dev/null; then
  echo "setlist: installing the Helm engine (PyPI helm-python-sdk) into $venv (once)" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check 'helm-python-sdk==0.2.2' >&2
fi
echo "$venv/bin/python"
