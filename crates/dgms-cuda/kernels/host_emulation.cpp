// Runs kernels/mixture.cu's kernels on CPU threads, so that their
// arithmetic, indexing, barriers and reductions are tested on a machine
// without a GPU (dgms_cuda::emulated; the GPU itself is checked by
// scripts/gpu-smoke.sh). One std::thread per CUDA thread of a block,
// blocks one after another; __syncthreads is a barrier of the block's
// threads, a warp shuffle goes through a per-warp exchange buffer between
// two barriers of the warp's 32 threads, and the dynamic shared memory
// starts as NaN so that a read before a write shows. Slow: tests only.

#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <math.h>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace dgms_emu {

struct Dim3 {
    unsigned x = 0;
};

thread_local Dim3 thread_idx;
thread_local Dim3 block_idx;
// Set before a launch's threads start (thread creation orders them).
Dim3 block_dim;
Dim3 grid_dim;

struct Block {
    std::unique_ptr<std::barrier<>> all;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<double> shared;
    std::vector<double> exchange;  // 32 values per warp
};

// The block running now (one at a time).
Block* current = nullptr;

inline void syncthreads() { current->all->arrive_and_wait(); }

inline double shfl_down(double v, int offset) {
    const unsigned warp = thread_idx.x / 32;
    const unsigned lane = thread_idx.x % 32;
    double* ex = &current->exchange[warp * 32];
    ex[lane] = v;
    current->warps[warp]->arrive_and_wait();
    const double out = lane + offset < 32 ? ex[lane + offset] : v;
    current->warps[warp]->arrive_and_wait();
    return out;
}

// One launch at a time: the launch dimensions, the current block and the
// kernels' static __shared__ variables are process-wide here.
std::mutex launch_lock;

// Runs `kernel` on `grid` blocks of `block` threads (a multiple of 32)
// with `shared_bytes` of dynamic shared memory.
template <class F>
void launch(unsigned grid, unsigned block, size_t shared_bytes, F kernel) {
    std::lock_guard<std::mutex> guard(launch_lock);
    grid_dim.x = grid;
    block_dim.x = block;
    for (unsigned b = 0; b < grid; ++b) {
        Block blk;
        blk.all = std::make_unique<std::barrier<>>(block);
        for (unsigned w = 0; w < block / 32; ++w) {
            blk.warps.push_back(std::make_unique<std::barrier<>>(32));
        }
        blk.shared.assign(shared_bytes / sizeof(double), std::numeric_limits<double>::quiet_NaN());
        blk.exchange.assign(block, 0.0);
        current = &blk;
        std::vector<std::thread> threads;
        threads.reserve(block);
        for (unsigned t = 0; t < block; ++t) {
            threads.emplace_back([=] {
                thread_idx.x = t;
                block_idx.x = b;
                kernel();
            });
        }
        for (auto& t : threads) t.join();
        current = nullptr;
    }
}

}  // namespace dgms_emu

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define threadIdx dgms_emu::thread_idx
#define blockIdx dgms_emu::block_idx
#define blockDim dgms_emu::block_dim
#define gridDim dgms_emu::grid_dim
#define __syncthreads() dgms_emu::syncthreads()
#define __shfl_down_sync(mask, v, offset) dgms_emu::shfl_down((v), (offset))
#define DGMS_DYNAMIC_SHARED(name) double* name = dgms_emu::current->shared.data()

#include "mixture.cu"

extern "C" {

void dgms_emu_mixture_forward_f32(const float* w, const float* packed, float* out, uint32_t n,
                                  int k, unsigned grid, unsigned block, size_t shared) {
    dgms_emu::launch(grid, block, shared,
                     [=] { dgms_mixture_forward_f32(w, packed, out, n, k); });
}

void dgms_emu_mixture_forward_f64(const double* w, const double* packed, double* out, uint32_t n,
                                  int k, unsigned grid, unsigned block, size_t shared) {
    dgms_emu::launch(grid, block, shared,
                     [=] { dgms_mixture_forward_f64(w, packed, out, n, k); });
}

void dgms_emu_mixture_backward_f32(const float* w, const float* packed, const float* grad_out,
                                   float* grad_w, double* partials, uint32_t n, int k,
                                   unsigned grid, unsigned block, size_t shared) {
    dgms_emu::launch(grid, block, shared, [=] {
        dgms_mixture_backward_f32(w, packed, grad_out, grad_w, partials, n, k);
    });
}

void dgms_emu_mixture_backward_f64(const double* w, const double* packed, const double* grad_out,
                                   double* grad_w, double* partials, uint32_t n, int k,
                                   unsigned grid, unsigned block, size_t shared) {
    dgms_emu::launch(grid, block, shared, [=] {
        dgms_mixture_backward_f64(w, packed, grad_out, grad_w, partials, n, k);
    });
}

void dgms_emu_mixture_sum_partials(const double* partials, uint32_t blocks, int width,
                                   double* out, unsigned grid, unsigned block) {
    dgms_emu::launch(grid, block, 0,
                     [=] { dgms_mixture_sum_partials(partials, blocks, width, out); });
}

}  // extern "C"
