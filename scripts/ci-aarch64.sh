#!/usr/bin/env bash
# Cross-builds dgms-qsimd for aarch64-unknown-linux-gnu with Debian's rustc
# and runs its tests (NEON kernels included) under qemu-aarch64 user-mode
# emulation. Installs what it needs (Debian packages) when missing. The
# recipe and why each part is there: ../shared/AARCH64.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! [ -x /usr/bin/rustc ] || ! command -v qemu-aarch64-static >/dev/null \
    || ! command -v aarch64-linux-gnu-gcc >/dev/null \
    || ! [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ]; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
    $sudo dpkg --add-architecture arm64
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        rustc-web libstd-rust-web-dev:arm64 \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
fi

export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# Static glibc: dynamically linked aarch64 programs that start a second
# thread hang under QEMU user mode here.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
"$RUSTC" --version
# --lib --tests: rustdoc cannot run doctests through the runner.
cargo test -p dgms-qsimd --target aarch64-unknown-linux-gnu \
    --target-dir target/aarch64 --lib --tests
