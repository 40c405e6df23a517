#!/usr/bin/env bash
# Lays out one deployable's files under OUT exactly as its image holds them:
#
#   OUT/usr/local/bin/<binary>   the binary, without its debug info (symbols
#                                stay, so a panic's backtrace names functions)
#   OUT/opt/libtorch/lib/*.so*   the libtorch libraries the binary links, and
#                                the ones those link, nothing else; stripped
#                                (setlist-node only: the others link none)
#
# Usage: images/stage.sh BINARY LIBTORCH_LIB_DIR OUT
#
# The libraries are found by following the ELF NEEDED entries from the
# binary through LIBTORCH_LIB_DIR (the cached CPU libtorch, see
# scripts/install-libtorch.sh), so a library the binary stops linking leaves
# the image by itself. Used by scripts/build-images.sh (on target/release)
# and by every Dockerfile's build stage (images/build-from-source.sh). OUT is
# replaced as a whole.
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: images/stage.sh BINARY LIBTORCH_LIB_DIR OUT" >&2
  exit 2
fi
binary=$1 libdir=$2 out=$3
for tool in readelf objcopy strip; do
  command -v "$tool" >/dev/null || { echo "stage: $tool (binutils) is required" >&2; exit 1; }
done
[[ -f $binary ]] || { echo "stage: $binary is missing: build it first" >&2; exit 1; }

needed() { readelf --dynamic --wide "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

# The libtorch libraries reachable from the binary, breadth first.
libs=()
queue=("$binary")
while ((${#queue[@]})); do
  file=${queue[0]}
  queue=("${queue[@]:1}")
  while read -r name; do
    [[ -n $name && -f $libdir/$name ]] || continue
    case " ${libs[*]} " in *" $name "*) continue ;; esac
    libs+=("$name")
    queue+=("$libdir/$name")
  done < <(needed "$file")
done

staging="$out.tmp.$$"
rm -rf "$staging"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/usr/local/bin"
objcopy --strip-debug "$binary" "$staging/usr/local/bin/$(basename "$binary")"
chmod 0755 "$staging/usr/local/bin/$(basename "$binary")"
if ((${#libs[@]})); then
  mkdir -p "$staging/opt/libtorch/lib"
  for name in "${libs[@]}"; do
    # --strip-unneeded keeps the dynamic symbol table, which is all the
    # loader (and libtorch's own stack traces, through dladdr) use.
    strip --strip-unneeded -o "$staging/opt/libtorch/lib/$name" "$libdir/$name"
    chmod 0644 "$staging/opt/libtorch/lib/$name"
  done
fi
# Directories as a root filesystem has them, whatever the umask.
find "$staging" -type d -exec chmod 0755 {} +
rm -rf "$out"
mv "$staging" "$out"
trap - EXIT
