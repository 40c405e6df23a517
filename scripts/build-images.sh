#!/usr/bin/env bash
# Builds the container images of Setlist's four deployables with podman, and
# gets them into a cluster. docs/images.md says what each image holds.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/build-images.sh [options]

Builds, with podman, from the binaries of
`cargo build --release --workspace --bins` (run first unless --no-cargo):

  ghcr.io/setlist-dev/setlist-node:VERSION        compute-node/Dockerfile
  ghcr.io/setlist-dev/setlist-dispatcher:VERSION  dispatcher/Dockerfile
  ghcr.io/setlist-dev/setlist-search:VERSION      search-api/Dockerfile
  ghcr.io/setlist-dev/setlist-operator:VERSION    operator/Dockerfile

(VERSION: the workspace's, from Cargo.toml), each on localhost/setlist-base:
bookworm, a minimal Debian bookworm that mmdebstrap makes from Debian's
packages (no registry needed) and that is cached under
~/.cache/setlist/images. Checks that each image runs its binary's --help,
and prints each image's size. Idempotent: a second run reuses the base, the
staged binaries and podman's layer cache.

Options:
  --no-cargo            use target/release as it is (the tests do)
  --from-source         compile in a Rust bookworm image instead
                        (images/binaries.Dockerfile's default stages; needs
                        docker.io, crates.io and PyPI)
  --refresh-base        make the base again (e.g. for Debian's security
                        updates), then rebuild the images on it
  --base-only           only make and import the base
  --print-run-flags     print the podman arguments, one a line, that run a
                        container on this machine, up to and including `run`
                        (e.g. `--runtime=runc run --ulimit=...`), and exit
  --save DIR            also write each image as an OCI archive,
                        DIR/<image>-VERSION.tar (`podman save`), for
                        `kind load image-archive`, `k3d image import`,
                        `ctr images import` or `skopeo copy`
  --load-kind CLUSTER   load the images into the kind cluster CLUSTER
                        (`kind load image-archive`; needs kind on PATH)
  --load-k3d CLUSTER    import the images into the k3d cluster CLUSTER
                        (`k3d image import`; needs k3d on PATH)
  --push REGISTRY       push the images as REGISTRY/<image>:VERSION (e.g.
                        ghcr.io/you, localhost:5001); log in first with
                        `podman login REGISTRY`
  --push-insecure       push over plain HTTP / without verifying TLS (a local
                        registry such as kind's)
  -h, --help            this text

Environment: SETLIST_DEBIAN_MIRROR, SETLIST_DEBIAN_SECURITY_MIRROR (the
base's Debian mirrors; default deb.debian.org), SETLIST_RUST_IMAGE (the
image --from-source compiles in; default docker.io/library/rust:1.95-bookworm),
SETLIST_CACHE.
EOF
}

self=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$self")/.." && pwd)
cache=${SETLIST_CACHE:-$HOME/.cache/setlist}/images

# image name : directory of its Dockerfile (the binary has the image's name)
DEPLOYABLES=(setlist-node:compute-node setlist-dispatcher:dispatcher
  setlist-search:search-api setlist-operator:operator)
REGISTRY=ghcr.io/setlist-dev
BINARIES_IMAGE=localhost/setlist-binaries

# The base: what the binaries load (ldd target/release/*: libc, libm,
# libgcc_s, libstdc++ for libtorch, libz), CA certificates (slices fetched
# over HTTPS, the Kubernetes API), /etc/services and the like, os-release.
BASE_IMAGE=localhost/setlist-base:bookworm
BASE_SUITE=bookworm
BASE_PACKAGES=(base-files ca-certificates libc6 libgcc-s1 libstdc++6 netbase zlib1g)
# Bump when customize_base changes what the base holds.
BASE_REVISION=1
MIRROR=${SETLIST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SETLIST_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

die() {
  echo "build-images: $*" >&2
  exit 1
}
say() { echo "build-images: $*" >&2; }

# --- the base ----------------------------------------------------------------

# Run by mmdebstrap (--extract-hook) on the extracted packages, $1 being
# the root filesystem: keeps the files of BASE_PACKAGES only, makes the CA
# bundle, adds the nonroot user (65532, as distroless's) and trims.
customize_base() {
  local root=$1 deb pkg path keep=" ${BASE_PACKAGES[*]} gcc-12-base "
  mkdir -p "$root/var/lib/dpkg/status.d"
  local dirs=()
  for deb in "$root"/var/cache/apt/archives/*.deb; do
    pkg=$(dpkg-deb --field "$deb" Package)
    if [[ $keep == *" $pkg "* ]]; then
      # For image scanners (Trivy, Grype read status.d, as on distroless).
      dpkg-deb --field "$deb" >"$root/var/lib/dpkg/status.d/$pkg"
      continue
    fi
    # A dependency only of maintainer scripts that never run here (debconf,
    # openssl and libssl3 for update-ca-certificates, mawk): its files go.
    while IFS= read -r path; do
      path=${path#./}
      [[ -n $path ]] || continue
      if [[ $path == */ ]]; then
        dirs+=("$root/${path%/}")
      elif [[ -f $root/$path || -L $root/$path ]]; then
        rm -f "$root/$path"
      fi
    done < <(dpkg-deb --fsys-tarfile "$deb" | tar -t)
  done
  # Directories left empty, deepest first.
  if ((${#dirs[@]})); then
    printf '%s\n' "${dirs[@]}" | sort -r -u | while IFS= read -r path; do
      rmdir "$path" 2>/dev/null || true
    done
  fi

  # What update-ca-certificates would make of the default configuration:
  # every Mozilla certificate in one bundle.
  mkdir -p "$root/etc/ssl/certs"
  local certs=("$root"/usr/share/ca-certificates/mozilla/*.crt)
  [[ -f ${certs[0]} ]] || die "the ca-certificates package brought no certificates"
  # shellcheck disable=SC1003 # sed's `$a\`: a final newline where one lacks
  sed -s -e '$a\' "${certs[@]}" >"$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root/usr/share/ca-certificates" "$root/usr/sbin/update-ca-certificates" \
    "$root/etc/ca-certificates" "$root/etc/ca-certificates.conf"

  # Users: root, and nonroot (65532) with a home of its own.
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$root/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' 'services: files' \
    'protocols: files' >"$root/etc/nsswitch.conf"
  mkdir -p "$root/root" "$root/home/nonroot" "$root/tmp"
  chmod 0700 "$root/root" "$root/home/nonroot"
  chown 65532:65532 "$root/home/nonroot"
  chmod 1777 "$root/tmp"

  # No package manager, documentation, translations or iconv modules (Rust
  # never uses iconv); the copyright files stay.
  find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/{man,info,locale,lintian,bug,gcc,gdb} \
    "$root/usr/lib/x86_64-linux-gnu/gconv" "$root/etc/update-motd.d" \
    "$root/etc/profile.d" "$root/etc/skel" "$root"/var/log/*
}

base_key() {
  printf '%s\n' "$BASE_REVISION" "$BASE_SUITE" "${BASE_PACKAGES[*]}" "$MIRROR" "$SECURITY_MIRROR" |
    sha256sum | cut -c1-12
}

# Makes the base's tarball (once; again with --refresh-base) and imports it
# as BASE_IMAGE unless the image there is already that tarball.
ensure_base() {
  local refresh=$1 tarball
  tarball="$cache/setlist-base-$BASE_SUITE-$(base_key).tar"
  if [[ $refresh == true || ! -f $tarball ]]; then
    command -v mmdebstrap >/dev/null ||
      die "mmdebstrap is missing: run scripts/install-sre-tools.sh (or apt-get install mmdebstrap)"
    say "making the base (Debian $BASE_SUITE: ${BASE_PACKAGES[*]}) with mmdebstrap"
    local include hook
    include=$(
      IFS=,
      echo "${BASE_PACKAGES[*]}"
    )
    # shellcheck disable=SC2016 # $1 is for the shell mmdebstrap runs hooks with
    printf -v hook 'bash %q __customize-base "$1"' "$self"
    # extract: the packages' files only, without maintainer scripts (none is
    # needed; customize_base does what update-ca-certificates would).
    # (The extract variant runs extract hooks, not customize hooks.) No
    # package manager state stays but the list of packages for scanners, so
    # mmdebstrap's own clean-up of it is skipped.
    # shellcheck disable=SC2016 # as above
    mmdebstrap --quiet --variant=extract --format=tar --include="$include" \
      --extract-hook="$hook" \
      --extract-hook='rm -rf "$1"/etc/apt "$1"/var/lib/apt "$1"/var/cache/apt "$1"/etc/dpkg \
        "$1"/var/lib/dpkg/{alternatives,arch,info,status,triggers,updates}' \
      --skip=cleanup/apt,cleanup/mmdebstrap \
      "$BASE_SUITE" "$tarball.tmp" \
      "deb $MIRROR $BASE_SUITE main" "deb $MIRROR $BASE_SUITE-updates main" \
      "deb $SECURITY_MIRROR $BASE_SUITE-security main" </dev/null ||
      die "mmdebstrap failed (is $MIRROR reachable?)"
    mv "$tarball.tmp" "$tarball"
  fi
  local sum current
  sum=$(sha256sum "$tarball" | cut -c1-12)
  current=$(podman image inspect --format '{{index .Config.Labels "dev.setlist.base"}}' "$BASE_IMAGE" 2>/dev/null || true)
  if [[ $current != "$sum" ]]; then
    say "importing the base as $BASE_IMAGE"
    make_image "$BASE_IMAGE" podman import --quiet \
      --change "LABEL dev.setlist.base=$sum" \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'USER 65532:65532' \
      --message "setlist base: Debian $BASE_SUITE, ${BASE_PACKAGES[*]}" \
      "$tarball" "$BASE_IMAGE" >/dev/null
  fi
  BASE_TARBALL=$tarball
}

# --- running containers here -------------------------------------------------

# The podman arguments (up to `run`) that start a container on this machine.
# Plain `podman run` works on an ordinary host. In a sandbox without
# CAP_SYS_RESOURCE podman's default rlimits (nofile 1048576, nproc 4194304)
# cannot be set, so they are lowered to what this process has (nproc to
# 32768 at most: podman caps its own there); and on a cgroup v1 host whose
# cgroup2 hierarchy has controllers ("hybrid"), crun refuses to start
# anything, where runc works.
RUN_FLAGS=()
probe_run_flags() {
  local nofile nproc candidate tried=""
  nofile=$(ulimit -Hn)
  [[ $nofile == unlimited || $nofile -gt 1048576 ]] && nofile=1048576
  nproc=$(ulimit -Hu)
  [[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
  local limits="run --ulimit=nofile=$nofile:$nofile --ulimit=nproc=$nproc:$nproc"
  local candidates=("run" "$limits")
  if command -v runc >/dev/null; then candidates+=("--runtime=runc $limits"); fi
  for candidate in "${candidates[@]}"; do
    local err
    # shellcheck disable=SC2086 # the candidate is a list of arguments
    if err=$(podman $candidate --rm --entrypoint /lib64/ld-linux-x86-64.so.2 "$BASE_IMAGE" \
      --version 2>&1 >/dev/null); then
      read -r -a RUN_FLAGS <<<"$candidate"
      return 0
    fi
    tried+="  podman $candidate ...: $(tail -n 1 <<<"$err")"$'\n'
  done
  say "podman cannot run a container here; it was tried as:"
  printf '%s' "$tried" >&2
  if [[ $tried == *"hybrid mode"* ]] && ! command -v runc >/dev/null; then
    say "crun refuses a cgroup v1 host whose cgroup2 has controllers: install runc (apt-get install runc)"
  fi
  return 1
}

# --- the images --------------------------------------------------------------

# Runs a command that (re)makes the image TAG (`podman build`/`import` ...)
# and notes the image TAG named before, if another, for remove_replaced.
REPLACED=()
make_image() {
  local tag=$1 before after
  shift
  before=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  "$@"
  after=$(podman image inspect --format '{{.Id}}' "$tag")
  if [[ -n $before && $before != "$after" ]]; then REPLACED+=("$before"); fi
}

# Removes the replaced images, the newest first (an image another is built
# on cannot go before it), so repeated runs do not pile up old images;
# podman refuses, and nothing happens, where one is still named or used.
remove_replaced() {
  local i
  for ((i = ${#REPLACED[@]} - 1; i >= 0; i--)); do
    podman rmi "${REPLACED[i]}" >/dev/null 2>&1 || true
  done
}

# Stages each deployable from target/release with images/stage.sh, unless
# what is staged came from the same files.
stage_prebuilt() {
  local release=$1 libtorch entry binary sources
  libtorch=$(readlink -f "$repo/.libtorch/lib" || true)
  [[ -d $libtorch ]] || die "$repo/.libtorch/lib is missing: run scripts/install-libtorch.sh"
  mkdir -p "$repo/target/images/stage"
  for entry in "${DEPLOYABLES[@]}"; do
    binary=${entry%%:*}
    [[ -f $release/$binary ]] ||
      die "$release/$binary is missing: build it (cargo build --release --workspace --bins)"
    sources=$(stat -c '%n %s %Y' "$release/$binary" "$libtorch"/* "$repo/images/stage.sh")
    if [[ -d $repo/target/images/stage/$binary &&
      $(cat "$repo/target/images/$binary.sources" 2>/dev/null) == "$sources" ]]; then
      continue
    fi
    say "staging $binary"
    "$repo/images/stage.sh" "$release/$binary" "$libtorch" "$repo/target/images/stage/$binary"
    echo "$sources" >"$repo/target/images/$binary.sources"
  done
}

# Every library a staged file needs must be in the base or staged beside it.
check_libraries() {
  local provided binary file name missing=()
  provided=$(tar -tf "$BASE_TARBALL" | grep -E '^\./(usr/)?lib(64)?/' | sed 's|.*/||' |
    grep -F .so | sort -u)
  for entry in "${DEPLOYABLES[@]}"; do
    binary=${entry%%:*}
    while IFS= read -r file; do
      while IFS= read -r name; do
        [[ -n $name ]] || continue
        grep -qxF "$name" <<<"$provided" && continue
        [[ -e $repo/target/images/stage/$binary/opt/libtorch/lib/$name ]] && continue
        missing+=("$binary: $(basename "$file") needs $name")
      done < <(readelf --dynamic --wide "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    done < <(find "$repo/target/images/stage/$binary" -type f)
  done
  if ((${#missing[@]})); then
    printf '  %s\n' "${missing[@]}" >&2
    die "the base lacks libraries the binaries load: add their Debian packages to BASE_PACKAGES"
  fi
}

main() {
  local cargo=true from_source=false refresh=false base_only=false print_flags=false
  local save_dir="" kind_cluster="" k3d_cluster="" push_registry="" push_tls=true
  while (($#)); do
    case $1 in
    --no-cargo) cargo=false ;;
    --from-source) from_source=true ;;
    --refresh-base) refresh=true ;;
    --base-only) base_only=true ;;
    --print-run-flags) print_flags=true ;;
    --save) save_dir=${2:?--save needs a directory} && shift ;;
    --load-kind) kind_cluster=${2:?--load-kind needs a cluster name} && shift ;;
    --load-k3d) k3d_cluster=${2:?--load-k3d needs a cluster name} && shift ;;
    --push) push_registry=${2:?--push needs a registry} && shift ;;
    --push-insecure) push_tls=false ;;
    -h | --help) usage && exit 0 ;;
    __customize-base) customize_base "${2:?}" && exit 0 ;;
    *) usage >&2 && exit 2 ;;
    esac
    shift
  done

  command -v podman >/dev/null || die "podman is missing: run scripts/install-sre-tools.sh"
  mkdir -p "$cache"
  # One run at a time: runs share the staging folder and the tags.
  exec 9>"$cache/.lock"
  flock 9
  local started=$SECONDS

  ensure_base "$refresh"
  if $print_flags; then
    probe_run_flags || exit 1
    printf '%s\n' "${RUN_FLAGS[@]}"
    exit 0
  fi
  if $base_only; then
    remove_replaced
    say "base ready: $BASE_IMAGE ($BASE_TARBALL)"
    exit 0
  fi

  local version
  version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml")
  [[ -n $version ]] || die "no version in $repo/Cargo.toml's [workspace.package]"

  local build_flags=(--pull=never --build-arg "BASE=$BASE_IMAGE" --build-arg "VERSION=$version")
  if $from_source; then
    # The Rust image comes from docker.io. RUN steps in chroot isolation
    # work where crun cannot start a container (see probe_run_flags).
    say "building the binaries from source (images/binaries.Dockerfile)"
    rm -rf "$repo/target/images/stage"
    local rust=()
    if [[ -n ${SETLIST_RUST_IMAGE:-} ]]; then rust=(--build-arg "RUST_IMAGE=$SETLIST_RUST_IMAGE"); fi
    make_image "$BINARIES_IMAGE:$version" \
      podman build --pull=missing --isolation=chroot "${rust[@]}" \
      -t "$BINARIES_IMAGE:$version" -f "$repo/images/binaries.Dockerfile" "$repo"
  else
    if $cargo; then
      say "cargo build --release --workspace --bins"
      (cd "$repo" && cargo build --release --workspace --bins)
    fi
    stage_prebuilt "${CARGO_TARGET_DIR:-$repo/target}/release"
    check_libraries
    say "building $BINARIES_IMAGE:$version from target/images/stage"
    make_image "$BINARIES_IMAGE:$version" \
      podman build --quiet "${build_flags[@]}" --target prebuilt \
      -t "$BINARIES_IMAGE:$version" -f "$repo/images/binaries.Dockerfile" "$repo" >/dev/null
  fi

  local entry name dir image images=()
  for entry in "${DEPLOYABLES[@]}"; do
    name=${entry%%:*} dir=${entry#*:}
    image=$REGISTRY/$name:$version
    say "building $image ($dir/Dockerfile)"
    make_image "$image" \
      podman build --quiet "${build_flags[@]}" --build-arg "BINARIES=$BINARIES_IMAGE:$version" \
      -t "$image" -f "$repo/$dir/Dockerfile" "$repo" >/dev/null
    images+=("$image")
  done

  # Each image starts its binary (and so finds every library it loads).
  if probe_run_flags; then
    for image in "${images[@]}"; do
      podman "${RUN_FLAGS[@]}" --rm "$image" --help >/dev/null ||
        die "$image does not run its binary's --help"
    done
  else
    say "WARNING: the images are built but were not started here"
  fi

  printf '%-48s %10s\n' image size
  for image in "$BASE_IMAGE" "${images[@]}"; do
    printf '%-48s %7.1f MB\n' "$image" \
      "$(podman image inspect --format '{{.Size}}' "$image" | awk '{print $1 / 1e6}')"
  done

  local archives=()
  if [[ -n $save_dir || -n $kind_cluster || -n $k3d_cluster ]]; then
    local dir=${save_dir:-$cache/archives}
    mkdir -p "$dir"
    for image in "${images[@]}"; do
      name=${image##*/}
      local archive="$dir/${name%%:*}-$version.tar"
      say "saving $image to $archive"
      rm -f "$archive"
      podman save --quiet --format oci-archive -o "$archive" "$image"
      archives+=("$archive")
    done
  fi
  if [[ -n $kind_cluster ]]; then
    command -v kind >/dev/null || die "kind is not on PATH (https://kind.sigs.k8s.io)"
    for archive in "${archives[@]}"; do
      say "loading $archive into kind cluster $kind_cluster"
      kind load image-archive "$archive" --name "$kind_cluster"
    done
  fi
  if [[ -n $k3d_cluster ]]; then
    command -v k3d >/dev/null || die "k3d is not on PATH (https://k3d.io)"
    say "importing the images into k3d cluster $k3d_cluster"
    k3d image import --cluster "$k3d_cluster" "${archives[@]}"
  fi
  if [[ -z $save_dir && ${#archives[@]} -gt 0 ]]; then rm -f "${archives[@]}"; fi
  if [[ -n $push_registry ]]; then
    for image in "${images[@]}"; do
      local target=${push_registry%/}/${image##*/}
      say "pushing $target"
      podman push --quiet --tls-verify="$push_tls" "$image" "docker://$target"
    done
  fi
  remove_replaced
  say "done in $((SECONDS - started)) s"
}

main "$@"
