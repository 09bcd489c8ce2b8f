#!/usr/bin/env bash
# Checks the CUDA build of dgms on a machine without a GPU (issue 15, item
# 5; recipe and facts in ../shared/CUDA.md):
#   1. installs (or reuses) the CUDA 13.4 toolchain from NVIDIA's PyPI wheels
#      with a stub driver library (scripts/cuda-toolchain.sh, the recipe of ../shared/CUDA.md);
#   2. builds the dgms binary with `--features cuda,nccl` in its own target
#      folder (target/cuda: the CUDA build shares nothing with the CPU one);
#   3. checks that the binary starts with the stub driver (`dgms --help`)
#      and that `dgms eval --device cuda` fails with a clean error naming the
#      driver (exit 1, no panic, no output written), and so does a
#      `dgms pretrain --devices 0,1` (two rank processes joining NCCL);
#   4. assembles the mixture kernels' PTX with ptxas for the target GPU
#      and refuses register spills;
#   5. runs the CPU tests of dgms-core (with the kernels' CPU emulation),
#      dgms-train and dgms-cli in that build.
# Cold it takes about 15 minutes of 2 cores (most of it nvcc compiling
# candle's kernels); too slow for every CI run.
#
#   scripts/check-cuda.sh
#
# Environment: DGMS_CUDA_TOOLCHAIN (the toolchain script, default
# scripts/cuda-toolchain.sh), DGMS_CUDA_DIR
# (where it installs, default ~/.cache/dgms-cuda), DGMS_CUDA_TARGET_DIR
# (default target/cuda), CUDA_COMPUTE_CAP (default 90, see CUDA.md).
set -euo pipefail
start=$(date +%s)
root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
toolchain=${DGMS_CUDA_TOOLCHAIN:-$root/scripts/cuda-toolchain.sh}
cuda_dir=${DGMS_CUDA_DIR:-$HOME/.cache/dgms-cuda}
target=${DGMS_CUDA_TARGET_DIR:-$root/target/cuda}
step="setup"
trap 'echo "check-cuda: FAILED at step: $step ($(( $(date +%s) - start )) s)" >&2' ERR

say() {
    step=$1
    echo "== check-cuda: $1" >&2
}

say "toolchain ($toolchain into $cuda_dir)"
if [ ! -f "$toolchain" ]; then
    echo "no toolchain script at $toolchain (set DGMS_CUDA_TOOLCHAIN)" >&2
    false
fi
bash "$toolchain" "$cuda_dir"
# shellcheck disable=SC1091
. "$cuda_dir/env.sh"
export CARGO_TARGET_DIR=$target
cd "$root"

say "cargo build --release --features cuda,nccl -p dgms-cli (target $target)"
build_start=$(date +%s)
cargo build --release --features cuda,nccl -p dgms-cli
build_s=$(( $(date +%s) - build_start ))
bin=$target/release/dgms
tmp_ptx=$(mktemp -d)
trap 'rm -rf "$tmp_ptx"' EXIT

ptx=$(ls -t "$target"/release/build/dgms-cuda-*/out/mixture.ptx | head -n 1)
arch="sm_${CUDA_COMPUTE_CAP}"
if [ "${CUDA_COMPUTE_CAP%%[!0-9]*}" -ge 90 ]; then
    arch="${arch%a}a" # Hopper and later: the 'a' target, as cudaforge builds
fi
say "ptxas assembles the mixture kernels for $arch without spills"
ptxas -arch="$arch" -v "$ptx" -o "$tmp_ptx/mixture.cubin" 2> "$tmp_ptx/ptxas.log"
grep -E "Compiling entry|registers" "$tmp_ptx/ptxas.log" >&2
if grep -E "[1-9][0-9]* bytes spill" "$tmp_ptx/ptxas.log" >&2; then
    echo "a mixture kernel spills registers" >&2
    false
fi

say "the binary starts with the stub driver"
"$bin" --help > /dev/null

say "dgms eval --device cuda fails cleanly, naming the driver"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$tmp_ptx"' EXIT
rc=0
"$bin" eval --device cuda --checkpoint "$tmp/none.safetensors" --json "$tmp/eval.json" \
    > "$tmp/stdout" 2> "$tmp/stderr" || rc=$?
cat "$tmp/stderr" >&2
if [ "$rc" -ne 1 ]; then
    echo "expected exit code 1, got $rc" >&2
    false
fi
if grep -q "panicked" "$tmp/stderr"; then
    echo "the error is a panic" >&2
    false
fi
if [ "$(wc -l < "$tmp/stderr")" -ne 1 ]; then
    echo "the error is not one line (a backtrace?)" >&2
    false
fi
if ! grep -qi "driver" "$tmp/stderr"; then
    echo "the error does not mention the driver" >&2
    false
fi
if [ -e "$tmp/eval.json" ]; then
    echo "eval wrote its output despite the error" >&2
    false
fi

say "dgms pretrain --devices 0,1 fails cleanly, naming the driver"
rc=0
"$bin" pretrain --devices 0,1 --epochs 1 --max-batches 1 --out "$tmp/run" \
    > "$tmp/stdout" 2> "$tmp/stderr" || rc=$?
cat "$tmp/stderr" >&2
if [ "$rc" -ne 1 ]; then
    echo "expected exit code 1, got $rc" >&2
    false
fi
if grep -q "panicked" "$tmp/stderr"; then
    echo "the error is a panic" >&2
    false
fi
if ! grep -qi "driver" "$tmp/stderr"; then
    echo "the error does not mention the driver" >&2
    false
fi

say "CPU tests of dgms-core, dgms-train and dgms-cli in the cuda,nccl build"
test_start=$(date +%s)
# dgms-core with its cuda feature (the kernels' CPU emulation included); in
# one invocation so that candle builds once with one feature set.
cargo test --release --features cuda,nccl -p dgms-core -p dgms-train -p dgms-cli
test_s=$(( $(date +%s) - test_start ))

step="done"
echo "check-cuda: PASS (build ${build_s} s, tests ${test_s} s, total $(( $(date +%s) - start )) s; CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
