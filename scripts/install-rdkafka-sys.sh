#!/usr/bin/env bash
# Puts the librdkafka that Setlist builds (the rdkafka-sys crate, which
# vendors it) at <repo>/.rdkafka-sys, with two patches to its mock cluster,
# and the workspace's Cargo.toml patches crates.io's rdkafka-sys with that copy.
#
# Why: `setlist up` runs librdkafka's mock cluster as its embedded broker.
#
# 1. rdkafka-mock-fetch-from-the-newest: the mock finds a fetch's offset by walking the partition's stored
# message sets from the oldest (its source says "FIXME: Maintain an
# index"). A partition keeps up to 5 MiB of them, so every fetch that
# returns data cost time in proportion to all the partition held: at 200
# requests/s the broker's CPU went from 37 % to 97 % of a core within four
# minutes and answers took 750 ms (docs/benchmarks.md). The patch searches
# from the newest set instead, where consumers fetch.
# 2. rdkafka-mock-wake-waiting-fetches: the mock answers a fetch that found
# no data only when the fetch's fetch.wait.max.ms expires, never when data
# arrives ("too much of a hassle", its source says), so every consumer had to
# poll with fetch.wait.max.ms=1: half of all the CPU Setlist used at 200
# requests/s. The patch sends a waiting fetch's empty answer as soon as one
# of the partitions it asked for is appended to, as a Kafka broker does, and
# the consumer fetches the new data at once.
#
# Only the mock cluster's code changes; the client librdkafka of every
# process is the same.
#
# Idempotent: a finished copy leaves a stamp file and is never redone. The
# crate comes from crates.io, checked against the checksum Cargo.lock had for it.
set -euo pipefail

VERSION="4.10.0+2.12.1"
SHA256=e234cf318915c1059d4921ef7f75616b5219b10b46e9f3a511a15eb4b56a3f77
PATCHES=(rdkafka-mock-fetch-from-the-newest rdkafka-mock-wake-waiting-fetches)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SETLIST_CACHE:-$HOME/.cache/setlist}
mkdir -p "$cache"
patch_files=()
for name in "${PATCHES[@]}"; do patch_files+=("$repo/scripts/patches/$name.patch"); done
# The patches' own checksum names the copy: a changed patch makes a new one.
patch_sum=$(cat "${patch_files[@]}" | sha256sum | cut -c1-12)
dest="$cache/rdkafka-sys-$VERSION-$patch_sum"
stamp="$dest/.installed"

if [[ ! -f "$stamp" ]]; then
  echo "setlist: preparing librdkafka $VERSION with the embedded broker's fetch patches…" >&2
  work=$(mktemp -d "$cache/.rdkafka-sys.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  url="https://static.crates.io/crates/rdkafka-sys/rdkafka-sys-${VERSION/+/%2B}.crate"
  curl --fail --silent --show-error --location --retry 3 -o "$work/crate.tar.gz" "$url"
  echo "$SHA256  $work/crate.tar.gz" | sha256sum --check --quiet ||
    { echo "setlist: $url does not have the checksum Cargo.lock expects; not using it" >&2; exit 1; }
  tar -xzf "$work/crate.tar.gz" -C "$work"
  for patch_file in "${patch_files[@]}"; do
    (cd "$work/rdkafka-sys-$VERSION" && patch --quiet -p1 < "$patch_file")
  done
  rm -rf "$dest"
  mv "$work/rdkafka-sys-$VERSION" "$dest"
  touch "$stamp"
fi
previous=$(readlink "$repo/.rdkafka-sys" || true)
ln -sfn "$dest" "$repo/.rdkafka-sys"
# rdkafka-sys's build script copies librdkafka's sources into its build folder
# only when that folder is empty, so a build made with other patches would
# keep compiling the old sources: start its build afresh.
if [[ -n "$previous" && "$previous" != "$dest" && -d "$repo/target" ]]; then
  (cd "$repo" && for profile in release debug; do
    [[ -d "target/$profile" ]] || continue
    if [[ $profile == release ]]; then cargo clean --quiet --release -p rdkafka-sys
    else cargo clean --quiet -p rdkafka-sys; fi
  done)
fi
