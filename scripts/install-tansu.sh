#!/usr/bin/env bash
# Installs tansu, a second Kafka-compatible broker (independent of
# librdkafka's mock cluster), into ~/.cache/setlist for the end-to-end test
# that runs the pipeline against it. Idempotent: a finished install is never
# redone. Prints the path of the tansu binary.
#
# Built from crates.io with its own Cargo.lock (--locked), with the SQLite
# storage engine only: its memory engine loses and repeats messages. A debug
# build without debug info: the test needs a correct broker, not a fast one,
# and it builds in a fraction of the release build's half hour on 2 cores.
set -euo pipefail

TANSU_VERSION=0.6.0

cache=${SETLIST_CACHE:-$HOME/.cache/setlist}
dest="$cache/tansu-$TANSU_VERSION"
binary="$dest/bin/tansu"

if [[ -x "$binary" && -f "$dest/.installed" ]]; then
  echo "$binary"
  exit 0
fi

echo "setlist: building the tansu $TANSU_VERSION broker into $dest (once; several minutes)" >&2
mkdir -p "$cache"
work=$(mktemp -d "$cache/.tansu-work.XXXXXX")
trap 'rm -rf "$work"' EXIT
CARGO_PROFILE_DEV_DEBUG=0 cargo install tansu --version "$TANSU_VERSION" --locked \
  --features libsql --debug \
  --root "$work/root" --target-dir "$work/target" --quiet >&2
rm -rf "$dest"
mv "$work/root" "$dest"
touch "$dest/.installed"
echo "$binary"
