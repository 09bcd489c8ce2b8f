#!/usr/bin/env bash
# Runs `cargo xtask train` as an AVX2-only AMD EPYC (32 KiB 8-way L1d) would,
# on any x86-64 Linux machine with AVX2 + FMA (README: Results, "An AVX2
# CPU, emulated on this one"). The training path's only CPU-dependent code
# is the `gemm` crate: its micro-kernels (AVX-512 ones only with its x86-v4
# feature) and its block size kc, from the L1 geometry it reads in
# /sys/devices/system/cpu/cpu*/cache. So this builds the workspace without
# x86-v4 in a temporary worktree and runs the job in a user + mount
# namespace in which sysfs shows that L1. Needs unprivileged user
# namespaces (`unshare -rm`).
#
#   scripts/train-as-avx2.sh [xtask train arguments...]
#
# Writes into the temporary worktree's target/ and prints its path.
set -euo pipefail
root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=${DGMS_AVX2_DIR:-$(mktemp -d /tmp/dgms-avx2.XXXXXX)}
if [ ! -e "$work/Cargo.toml" ]; then
    git -C "$root" worktree add -q --detach "$work" HEAD
fi
sed -i 's/^gemm = .*/gemm = "0.19"/' "$work/Cargo.toml"
if (cd "$work" && cargo tree -e features -i gemm-f32 2>/dev/null | grep -q x86-v4); then
    echo "gemm still has its x86-v4 feature in $work" >&2
    exit 1
fi
(cd "$work" && cargo build --release -p xtask)

fake="$work/target/fake-sysfs"
cpus=()
for dir in /sys/devices/system/cpu/cpu[0-9]*; do
    [ -d "$dir/cache" ] || continue
    cpu=$(basename "$dir")
    rm -rf "$fake/$cpu"
    mkdir -p "$fake/$cpu"
    cp -r --no-preserve=all "$dir/cache/." "$fake/$cpu/" 2>/dev/null || true
    for index in "$fake/$cpu"/index*; do
        if [ "$(cat "$index/level")" = 1 ] && [ "$(cat "$index/type")" = Data ]; then
            echo 32K >"$index/size"
            echo 8 >"$index/ways_of_associativity"
            echo 64 >"$index/number_of_sets"
        fi
    done
    cpus+=("$cpu")
done

mounts=""
for cpu in "${cpus[@]}"; do
    mounts+="mount --bind '$fake/$cpu' /sys/devices/system/cpu/$cpu/cache && "
done
echo "L1d as the job sees it: 32K, 8-way; gemm without x86-v4 (FMA kernels)" >&2
cd "$work"
unshare -rm sh -c "${mounts} exec ./target/release/xtask train $*"
echo "results: $work/target/train-summary.json" >&2
