# The binaries image: every deployable's files, laid out by images/stage.sh
# under /<binary>/ (usr/local/bin/<binary>, and opt/libtorch/lib/ for
# setlist-node). It is never run or pushed: each deployable's Dockerfile
# (compute-node/, dispatcher/, search-api/, operator/) copies its own part
# onto the runtime base. docs/images.md says more.
#
#   (default)          compile the four binaries from source in a Rust
#                      bookworm image, once for all four (needs docker.io,
#                      crates.io, static.crates.io and PyPI)
#   --target prebuilt  take what scripts/build-images.sh staged from
#                      target/release into target/images/stage/
#
# The build context is the repository root (.dockerignore keeps it small).
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm

FROM ${RUST_IMAGE} AS compile
COPY images/build-from-source.sh /usr/local/bin/
RUN build-from-source.sh --deps
WORKDIR /src
COPY . .
# Caches: crates, the target directory, and ~/.cache/setlist (the patched
# librdkafka and the CPU libtorch), kept between builds.
RUN --mount=type=cache,id=setlist-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=setlist-target,target=/src/target,sharing=locked \
    --mount=type=cache,id=setlist-cache,target=/root/.cache/setlist,sharing=locked \
    images/build-from-source.sh /out setlist-node setlist-dispatcher setlist-search setlist-operator

FROM scratch AS prebuilt
COPY target/images/stage/ /

FROM scratch AS build
COPY --from=compile /out/ /
