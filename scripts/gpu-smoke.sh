#!/usr/bin/env bash
# The GPU check of issue 15, ready for a machine with NVIDIA GPUs (none is
# available where the project is developed). No arguments:
#
#   scripts/gpu-smoke.sh
#
#   1. finds the GPUs (nvidia-smi) and prints the driver, its CUDA version
#      and each GPU's compute capability; exits 2 if there is none;
#   2. installs what it needs: Rust (rustup) if cargo is missing, and, if
#      nvcc is not on PATH, the CUDA 13.4 toolchain + NCCL from NVIDIA's PyPI
#      wheels (scripts/cuda-toolchain.sh, without its stub driver: the real
#      one is used);
#   3. builds dgms with --features cuda,nccl for the first GPU's compute
#      capability;
#   4. the mixture on the GPU against the CPU: soft weights and every
#      gradient within 1e-5 (tests/gpu_parity.rs, with DGMS_REQUIRE_GPU=1 so
#      that a GPU that does not open fails instead of skipping);
#   5. one epoch of the embedded job's full-precision training (ResNet-20,
#      10,000 images, batch 128) on cuda:0, with images/s;
#   6. two ranks: one per GPU (--devices 0,1) with two GPUs, else two rank
#      processes sharing cuda:0; a second epoch resumed from step 5;
#   7. a summary: versions, images/s, the two runs' top-1.
#
# Meant to finish well under 15 minutes on 16 cores and one H200 (most of
# it the first build). Environment: DGMS_CUDA_DIR (toolchain install
# folder, default ~/.cache/dgms-cuda), DGMS_GPU_TARGET_DIR (default
# target/gpu), CUDA_COMPUTE_CAP (default: from nvidia-smi).
set -euo pipefail
start=$(date +%s)
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
step="setup"
trap 'echo "gpu-smoke: FAILED at step: $step ($(( $(date +%s) - start )) s)" >&2' ERR
say() {
    step=$1
    echo "== gpu-smoke: $1" >&2
}

say "GPUs"
if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
    echo "gpu-smoke: no NVIDIA GPU found (nvidia-smi missing or failing); nothing to check" >&2
    exit 2
fi
nvidia-smi -L
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1)
cuda_version=$(nvidia-smi | grep -oE 'CUDA Version: *[0-9.]+' | grep -oE '[0-9.]+$' || echo unknown)
gpus=$(nvidia-smi -L | wc -l)
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d '.')
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-$cap}
echo "driver $driver, CUDA $cuda_version (driver API), $gpus GPU(s), compute capability $CUDA_COMPUTE_CAP"

say "toolchain"
if ! command -v cargo > /dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v nvcc > /dev/null; then
    cuda_dir=${DGMS_CUDA_DIR:-$HOME/.cache/dgms-cuda}
    bash scripts/cuda-toolchain.sh "$cuda_dir"
    # shellcheck disable=SC1091
    . "$cuda_dir/env.sh"
    # The stub driver is for machines without a GPU: use the real one.
    LD_LIBRARY_PATH=$(echo "$LD_LIBRARY_PATH" | tr ':' '\n' | grep -v "^$cuda_dir/stub$" | paste -sd: -)
    export LD_LIBRARY_PATH
fi
nvcc --version | tail -n1
export CARGO_TARGET_DIR=${DGMS_GPU_TARGET_DIR:-$root/target/gpu}
features=cuda,nccl

say "build (--features $features)"
build_start=$(date +%s)
cargo build --release --features "$features" -p dgms-cli
build_s=$(( $(date +%s) - build_start ))
bin=$CARGO_TARGET_DIR/release/dgms

say "the mixture on the GPU against the CPU"
DGMS_REQUIRE_GPU=1 cargo test --release --features "$features" -p dgms-train --test gpu_parity -- --nocapture

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
field() { # field NAME FILE: a number from the outcome JSON
    grep -oE "\"$1\": *[0-9.eE+-]+" "$2" | head -n1 | grep -oE '[0-9.eE+-]+$'
}

say "one epoch of the embedded job on cuda:0"
"$bin" pretrain --device cuda:0 --epochs 2 --stop-after 1 --out "$tmp/one" > "$tmp/one.json"
one_s=$(field seconds "$tmp/one.json")
one_top1=$(field top1 "$tmp/one.json")
one_rate=$(awk -v s="$one_s" 'BEGIN { printf "%.0f", 10000 / s }')

say "two ranks"
if [ "$gpus" -ge 2 ]; then
    ranks_how="--devices 0,1 (one rank per GPU, NCCL)"
    "$bin" pretrain --resume "$tmp/one/last.safetensors" --out "$tmp/one" --devices 0,1 > "$tmp/two.json"
else
    ranks_how="--ranks 2 --rank-processes --device cuda:0 (two processes sharing one GPU)"
    "$bin" pretrain --resume "$tmp/one/last.safetensors" --out "$tmp/one" \
        --ranks 2 --rank-processes --device cuda:0 > "$tmp/two.json"
fi
two_top1=$(field top1 "$tmp/two.json")

step="done"
cat <<SUMMARY
gpu-smoke: PASS in $(( $(date +%s) - start )) s (build ${build_s} s)
  driver $driver, CUDA $cuda_version, $(nvcc --version | tail -n1), $gpus GPU(s), compute capability $CUDA_COMPUTE_CAP
  mixture op on cuda:0 vs CPU: within 1e-5 (tests/gpu_parity.rs)
  ResNet-20 epoch 1 on cuda:0: ${one_s} s with the evaluation of 10,000 test images (${one_rate} training images/s at least), top-1 ${one_top1}
  epoch 2 with $ranks_how: top-1 ${two_top1}
SUMMARY
