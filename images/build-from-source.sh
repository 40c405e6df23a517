#!/usr/bin/env bash
# The compile stage of images/binaries.Dockerfile (FROM a Rust bookworm
# image, the repository at /src): compiles the deployables' binaries with
# cargo, in one build, and lays out each one's files with images/stage.sh.
#
#   images/build-from-source.sh --deps             the Debian packages it needs
#   images/build-from-source.sh OUT BINARY...      build, stage under OUT/BINARY/
#
# Each BINARY is a workspace package whose binary has the same name
# (setlist-node, setlist-dispatcher, setlist-search, setlist-operator).
# librdkafka (patched: scripts/install-rdkafka-sys.sh) is needed by all; the
# CPU libtorch (scripts/install-libtorch.sh, from PyPI) only when one of
# them depends on torch-sys. Both scripts cache under ~/.cache/setlist,
# which the Dockerfile keeps in a cache mount, as it does cargo's registry
# and the target directory.
set -euo pipefail

if [[ ${1:-} == --deps ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # python3-pip: install-libtorch.sh downloads wheels; patch: the librdkafka
  # fixes; binutils: images/stage.sh. The Rust image has gcc, make and curl.
  apt-get install -y -qq --no-install-recommends \
    python3 python3-pip patch binutils ca-certificates curl
  rm -rf /var/lib/apt/lists/*
  exit 0
fi
if [[ $# -lt 2 ]]; then
  echo "usage: images/build-from-source.sh --deps | OUT BINARY..." >&2
  exit 2
fi
out=$1
shift
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

scripts/install-rdkafka-sys.sh
packages=()
libtorch=false
for binary in "$@"; do
  packages+=(--package "$binary" --bin "$binary")
  if cargo tree --locked --package "$binary" --invert torch-sys --edges normal >/dev/null 2>&1; then
    libtorch=true
  fi
done
if $libtorch; then
  scripts/install-libtorch.sh
fi
cargo build --release --locked "${packages[@]}"
for binary in "$@"; do
  images/stage.sh "target/release/$binary" .libtorch/lib "$out/$binary"
done
