// The fused DGMS mixture op on CUDA: soft weights and their backward, one
// thread per weight, nothing of size K x N stored. The same math, in the
// same order, as dgms-core's CPU kernel (crates/dgms-core/src/kernel.rs):
// f64 inside whatever the tensors' type, exp() of arguments below -60
// flushed to 0, the first largest log density is the hard assignment.
//
// Per-component constants are computed by every block into shared memory
// from the packed parameters (pi[K], sigma[K], mu[1..K], tau), so no
// host round trip is needed for the forward pass. Instead of keeping the
// K responsibilities of a weight in an array (local memory), every pass
// recomputes them: the GPU has arithmetic to spare, not registers.
//
// The backward's parameter sums are deterministic: each warp reduces its
// 32 contributions with shuffles in a fixed order, each warp adds into
// its own row of shared memory, rows are summed in warp order, and the
// per-block sums in block order by a second kernel; the grid depends on
// N only. So the same inputs give the same bits on every run.

#include <stdint.h>

// The block's dynamic shared memory. kernels/host_emulation.cpp, which
// runs these kernels on CPU threads to test them without a GPU, defines
// its own.
#ifndef DGMS_DYNAMIC_SHARED
#define DGMS_DYNAMIC_SHARED(name) extern __shared__ double name[]
#endif

namespace {

constexpr int THREADS = 128;
constexpr int WARPS = THREADS / 32;
constexpr double EXP_CUTOFF = -60.0;

__device__ __forceinline__ double exp_nonpositive(double x) {
    return x < EXP_CUTOFF ? 0.0 : exp(x);
}

// Shared constants: mu[k] (mu_0 = 0), inv_sigma[k], log_coef[k], inv_tau.
struct Consts {
    const double* mu;
    const double* inv_sigma;
    const double* log_coef;
    double inv_tau;
    int k;
};

template <typename T>
__device__ Consts load_consts(const T* packed, int k, double* sh) {
    __shared__ double pi_sum;
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (int j = 0; j < k; ++j) s += fabs(static_cast<double>(packed[j]));
        pi_sum = s;
        sh[3 * k] = 1.0 / static_cast<double>(packed[3 * k - 1]);
    }
    __syncthreads();
    const double half_log_2pi = 0.5 * log(2.0 * 3.141592653589793);
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        const double pi = fabs(static_cast<double>(packed[j]));
        const double sigma = static_cast<double>(packed[k + j]);
        sh[j] = j == 0 ? 0.0 : static_cast<double>(packed[2 * k + j - 1]);
        sh[k + j] = 1.0 / sigma;
        // Only sigma^2 enters the density: a width's sign is free.
        sh[2 * k + j] = log(pi / pi_sum) - log(fabs(sigma)) - half_log_2pi;
    }
    __syncthreads();
    return Consts{sh, sh + k, sh + 2 * k, sh[3 * k], k};
}

// What a weight's responsibilities and assignment are made of.
struct Weight {
    double w;
    double best;      // largest log density
    int argmax;       // its component (the hard assignment)
    bool onehot;      // every density underflowed: gamma = e_argmax
    double inv_gsum;  // 1 / sum_j exp(l_j - best)
    double gmax;      // gamma_argmax
    double inv_asum;  // 1 / sum_j exp((gamma_j - gmax) / tau)
    double s;         // soft weight
};

__device__ __forceinline__ double log_joint(const Consts& c, double w, int j) {
    const double r = (w - c.mu[j]) * c.inv_sigma[j];
    return c.log_coef[j] - 0.5 * r * r;
}

__device__ __forceinline__ double gamma_of(const Consts& c, const Weight& x, int j) {
    if (x.onehot) return j == x.argmax ? 1.0 : 0.0;
    return exp_nonpositive(log_joint(c, x.w, j) - x.best) * x.inv_gsum;
}

__device__ __forceinline__ double assignment_of(const Consts& c, const Weight& x, double gamma) {
    return exp_nonpositive((gamma - x.gmax) * c.inv_tau) * x.inv_asum;
}

__device__ Weight analyse(const Consts& c, double w) {
    Weight x;
    x.w = w;
    x.best = -INFINITY;
    x.argmax = 0;
    for (int j = 0; j < c.k; ++j) {
        const double l = log_joint(c, w, j);
        if (l > x.best) {
            x.best = l;
            x.argmax = j;
        }
    }
    x.onehot = x.best == -INFINITY;
    if (x.onehot) {
        // The component nearest in units of its own sigma.
        double best_r = INFINITY;
        for (int j = 0; j < c.k; ++j) {
            const double r = fabs((w - c.mu[j]) * c.inv_sigma[j]);
            if (r < best_r) {
                best_r = r;
                x.argmax = j;
            }
        }
        x.inv_gsum = 1.0;
        x.gmax = 1.0;
    } else {
        double gsum = 0.0;
        for (int j = 0; j < c.k; ++j) gsum += exp_nonpositive(log_joint(c, w, j) - x.best);
        x.inv_gsum = 1.0 / gsum;
        // exp(0) * inv, as the CPU kernel has it.
        x.gmax = x.inv_gsum;
    }
    double asum = 0.0;
    for (int j = 0; j < c.k; ++j) {
        asum += exp_nonpositive((gamma_of(c, x, j) - x.gmax) * c.inv_tau);
    }
    x.inv_asum = 1.0 / asum;
    double s = 0.0;
    for (int j = 0; j < c.k; ++j) s += assignment_of(c, x, gamma_of(c, x, j)) * c.mu[j];
    x.s = s;
    return x;
}

template <typename T>
__device__ void forward(const T* w, const T* packed, T* out, uint32_t n, int k) {
    DGMS_DYNAMIC_SHARED(sh);
    const Consts c = load_consts(packed, k, sh);
    const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
    for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = static_cast<T>(analyse(c, static_cast<double>(w[i])).s);
    }
}

__device__ __forceinline__ double warp_sum(double v) {
    // Fixed order: lane i ends with lanes i..31 folded in halves.
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

// Columns of a block's partial sums: e[k], mu terms[k], sigma terms[k], tau.
template <typename T>
__device__ void backward(const T* w, const T* packed, const T* grad_out, T* grad_w,
                         double* partials, uint32_t n, int k) {
    DGMS_DYNAMIC_SHARED(sh);
    const Consts c = load_consts(packed, k, sh);
    const int width = 3 * k + 1;
    double* acc = sh + 3 * k + 1;  // WARPS rows of `width`
    for (int i = threadIdx.x; i < WARPS * width; i += blockDim.x) acc[i] = 0.0;
    __syncthreads();
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    double* row = acc + warp * width;
    const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
    // Every thread of the block runs the same iterations (shuffles need
    // the whole warp); threads past the end contribute zeros.
    for (size_t base = static_cast<size_t>(blockIdx.x) * blockDim.x; base < n; base += stride) {
        const size_t i = base + threadIdx.x;
        const bool valid = i < n;
        const double wv = valid ? static_cast<double>(w[i]) : 0.0;
        const double g = valid ? static_cast<double>(grad_out[i]) : 0.0;
        const Weight x = analyse(c, wv);
        double t = 0.0;
        for (int j = 0; j < k; ++j) {
            const double gamma = gamma_of(c, x, j);
            const double a = assignment_of(c, x, gamma);
            t += gamma * (g * a * (c.mu[j] - x.s) * c.inv_tau);
        }
        double dw = 0.0;
        for (int j = 0; j < k; ++j) {
            const double gamma = gamma_of(c, x, j);
            const double a = assignment_of(c, x, gamma);
            const double dg = g * a * (c.mu[j] - x.s) * c.inv_tau;
            const double e = gamma * (dg - t);
            const double r = (wv - c.mu[j]) * c.inv_sigma[j];
            const double e_over_sigma = e * c.inv_sigma[j];
            dw -= e_over_sigma * r;
            const double se = warp_sum(valid ? e : 0.0);
            const double smu = warp_sum(valid ? e_over_sigma * r + g * a : 0.0);
            const double ssigma = warp_sum(valid ? e_over_sigma * (r * r - 1.0) : 0.0);
            if (lane == 0) {
                row[j] += se;
                row[k + j] += smu;
                row[2 * k + j] += ssigma;
            }
        }
        const double stau = warp_sum(valid ? -t * c.inv_tau : 0.0);
        if (lane == 0) row[3 * k] += stau;
        if (valid) grad_w[i] = static_cast<T>(dw);
    }
    __syncthreads();
    for (int col = threadIdx.x; col < width; col += blockDim.x) {
        double s = 0.0;
        for (int r = 0; r < WARPS; ++r) s += acc[r * width + col];
        partials[static_cast<size_t>(blockIdx.x) * width + col] = s;
    }
}

}  // namespace

extern "C" __global__ void dgms_mixture_forward_f32(const float* w, const float* packed, float* out,
                                                    uint32_t n, int k) {
    forward<float>(w, packed, out, n, k);
}

extern "C" __global__ void dgms_mixture_forward_f64(const double* w, const double* packed,
                                                    double* out, uint32_t n, int k) {
    forward<double>(w, packed, out, n, k);
}

extern "C" __global__ void dgms_mixture_backward_f32(const float* w, const float* packed,
                                                     const float* grad_out, float* grad_w,
                                                     double* partials, uint32_t n, int k) {
    backward<float>(w, packed, grad_out, grad_w, partials, n, k);
}

extern "C" __global__ void dgms_mixture_backward_f64(const double* w, const double* packed,
                                                     const double* grad_out, double* grad_w,
                                                     double* partials, uint32_t n, int k) {
    backward<double>(w, packed, grad_out, grad_w, partials, n, k);
}

// Column sums of `blocks` rows of `width` partial sums, in row order.
extern "C" __global__ void dgms_mixture_sum_partials(const double* partials, uint32_t blocks,
                                                     int width, double* out) {
    for (int col = blockIdx.x * blockDim.x + threadIdx.x; col < width;
         col += gridDim.x * blockDim.x) {
        double s = 0.0;
        for (uint32_t b = 0; b < blocks; ++b) s += partials[static_cast<size_t>(b) * width + col];
        out[col] = s;
    }
}
