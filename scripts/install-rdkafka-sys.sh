#!/usr/bin/env bash
# Puts the librdkafka that Setlist builds (the rdkafka-sys crate, which
# vendors it) at <repo>/.rdkafka-sys, with one patch to its mock cluster, and
# the workspace's Cargo.toml patches crates.io's rdkafka-sys with that copy.
#
# Why: `setlist up` runs librdkafka's mock cluster as its embedded broker,
# and the mock finds a fetch's offset by walking the partition's stored
# message sets from the oldest (its source says "FIXME: Maintain an
# index"). A partition keeps up to 5 MiB of them, so every fetch that
# returns data cost time in proportion to all the partition held: at 200
# requests/s the broker's CPU went from 37 % to 97 % of a core within four
# minutes and answers took 750 ms (docs/benchmarks.md). The patch searches
# from the newest set instead, where consumers fetch. Only the mock cluster's
# code changes; the client librdkafka of every process is the same.
#
# Idempotent: a finished copy leaves a stamp file and is never redone. The
# crate comes from crates.io, checked against the checksum Cargo.lock had for it.
set -euo pipefail

VERSION="4.10.0+2.12.1"
SHA256=e234cf318915c1059d4921ef7f75616b5219b10b46e9f3a511a15eb4b56a3f77
PATCH_NAME=rdkafka-mock-fetch-from-the-newest

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SETLIST_CACHE:-$HOME/.cache/setlist}
mkdir -p "$cache"
patch_file="$repo/scripts/patches/$PATCH_NAME.patch"
# The patch's own checksum names the copy: a changed patch makes a new one.
patch_sum=$(sha256sum "$patch_file" | cut -c1-12)
dest="$cache/rdkafka-sys-$VERSION-$patch_sum"
stamp="$dest/.installed"

if [[ ! -f "$stamp" ]]; then
  echo "setlist: preparing librdkafka $VERSION with the embedded broker's fetch patch…" >&2
  work=$(mktemp -d "$cache/.rdkafka-sys.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  url="https://static.crates.io/crates/rdkafka-sys/rdkafka-sys-${VERSION/+/%2B}.crate"
  curl --fail --silent --show-error --location --retry 3 -o "$work/crate.tar.gz" "$url"
  echo "$SHA256  $work/crate.tar.gz" | sha256sum --check --quiet ||
    { echo "setlist: $url does not have the checksum Cargo.lock expects; not using it" >&2; exit 1; }
  tar -xzf "$work/crate.tar.gz" -C "$work"
  (cd "$work/rdkafka-sys-$VERSION" && patch --quiet -p1 < "$patch_file")
  rm -rf "$dest"
  mv "$work/rdkafka-sys-$VERSION" "$dest"
  touch "$stamp"
fi
ln -sfn "$dest" "$repo/.rdkafka-sys"
