#!/usr/bin/env bash
# Installs the CPU build of libtorch that tch 0.26 links against (PyTorch 2.13.0),
# taken from PyPI wheels, into ~/.cache/setlist, and points <repo>/.libtorch at it.
#
# Idempotent: a finished install leaves a stamp file and is never redone.
# Why wheels and not the libtorch zip: PyPI is the registry these machines reach.
# The wheel's libtorch.so needs libtorch_cuda.so, so we build a stub libtorch.so
# that only pulls in the CPU libraries; libtorch_cpu.so itself needs the CUDA
# runtime and CUPTI to load (not to run), so those two come from NVIDIA's wheels.
set -euo pipefail

TORCH_VERSION=2.13.0
CUDART_VERSION="13.0.96.*"
CUPTI_VERSION="13.0.85.*"
# Wheels are pinned to one CPython ABI so every machine resolves the same files,
# whatever Python runs pip.
PY_VERSION=3.11

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SETLIST_CACHE:-$HOME/.cache/setlist}
dest="$cache/libtorch-$TORCH_VERSION-cpu"
stamp="$dest/.installed"

link_repo() {
  ln -sfn "$dest" "$repo/.libtorch"
}

if [[ -f "$stamp" ]]; then
  link_repo
  exit 0
fi

for tool in python3 gcc; do
  command -v "$tool" >/dev/null || { echo "install-libtorch: $tool is required; install it and run again" >&2; exit 1; }
done

echo "setlist: installing libtorch $TORCH_VERSION (CPU) into $dest (once)" >&2
work=$(mktemp -d "$cache/.libtorch-work.XXXXXX" 2>/dev/null || { mkdir -p "$cache"; mktemp -d "$cache/.libtorch-work.XXXXXX"; })
trap 'rm -rf "$work"' EXIT

python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "$PY_VERSION" --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_25_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --dest "$work/wheels" \
  "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION"

staging="$work/libtorch"
mkdir -p "$staging/lib"
python3 - "$work/wheels" "$staging" <<'PY'
import pathlib, shutil, sys, zipfile

wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wanted_libs = {
    "torch/lib/libtorch_cpu.so", "torch/lib/libc10.so", "torch/lib/libgomp.so.1",
    "nvidia/cu13/lib/libcudart.so.13", "nvidia/cu13/lib/libcupti.so.13",
}
found = set()
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith("torch/include/") and not name.endswith("/"):
                target = out / "include" / name[len("torch/include/"):]
            elif name in wanted_libs:
                target = out / "lib" / pathlib.Path(name).name
                found.add(name)
            else:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
missing = wanted_libs - found
if missing:
    sys.exit(f"install-libtorch: the wheels lack {sorted(missing)}")
PY

echo "/* stub: links the CPU libraries only */" > "$work/empty.c"
gcc -shared -fPIC "$work/empty.c" -o "$staging/lib/libtorch.so" \
  -Wl,--no-as-needed -L"$staging/lib" -ltorch_cpu -lc10 -Wl,-rpath,'$ORIGIN'

rm -rf "$dest"
mv "$staging" "$dest"
echo "$TORCH_VERSION" > "$stamp"
link_repo
echo "setlist: libtorch ready at $dest" >&2
