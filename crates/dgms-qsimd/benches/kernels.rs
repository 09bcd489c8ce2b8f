//! Kernel benchmarks: the bit-packed GEMV / GEMM per ISA against the f32
//! kernels with the same threading and micro-kernel.
//!
//! `cargo bench -p dgms-qsimd --bench kernels -- --warm-up-time 1 --measurement-time 3`
//!
//! The `cpu_1thread` groups time one thread in thread CPU time instead of
//! wall-clock time, which still means something on a shared, loaded
//! machine: `cargo bench -p dgms-qsimd --bench kernels -- cpu_1thread`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use dgms_qsimd::kernels::{conv2d, conv2d_i8, gemm_i8, gemv_i8, ConvGeometry, QMatrixI8};
use dgms_qsimd::kernels::{gemm, gemm_f32, gemv, gemv_f32, Activation, DenseMatrix, Epilogue};
use dgms_qsimd::kernels::{gemv_2bit, Isa, QMatrix, QMatrix2};
use dgms_test_support::rng::Lcg64;

/// Deterministic pseudo-random values: the top 31 bits of an MMIX LCG
/// started from the raw state `seed` (no rand dependency).
fn lcg(seed: u64, n: usize) -> impl Iterator<Item = u64> {
    let mut g = Lcg64::from_state(seed);
    (0..n).map(move |_| g.next_u31())
}

fn matrix(rows: usize, cols: usize, k: usize) -> QMatrix {
    let idx: Vec<u8> = lcg(1, rows * cols).map(|v| (v % k as u64) as u8).collect();
    let cb: Vec<f32> = (0..k).map(|i| i as f32 / k as f32 - 0.5).collect();
    QMatrix::new(rows, cols, &idx, &cb).unwrap()
}

fn values(n: usize) -> Vec<f32> {
    lcg(2, n).map(|v| (v % 1000) as f32 / 500.0 - 1.0).collect()
}

fn bench_gemv(c: &mut Criterion) {
    let (rows, cols) = (4096, 4096);
    let x = values(cols);
    let mut y = vec![0.0f32; rows];
    let mut g = c.benchmark_group("gemv_4096x4096");
    g.sample_size(20);
    g.throughput(Throughput::Elements((rows * cols) as u64));
    for k in [16usize, 4, 256] {
        let w = matrix(rows, cols, k);
        // The scalar reference is slow: time it once, at K = 16.
        for isa in Isa::available()
            .into_iter()
            .filter(|&i| k == 16 || i != Isa::Scalar)
        {
            g.bench_function(BenchmarkId::new(format!("q_k{k}"), isa), |b| {
                b.iter(|| gemv(isa, &w, black_box(&x), &mut y).unwrap())
            });
        }
    }
    let dense = matrix(rows, cols, 16).to_dense();
    let d = DenseMatrix::new(&dense, rows, cols).unwrap();
    for isa in Isa::available() {
        g.bench_function(BenchmarkId::new("f32", isa), |b| {
            b.iter(|| gemv_f32(isa, &d, black_box(&x), &mut y).unwrap())
        });
    }
    g.finish();
}

fn bench_gemm(c: &mut Criterion) {
    // ResNet-18 at 224x224: layer1 3x3 conv (im2col'd) and layer4 3x3 conv.
    for (rows, cols, n) in [(64usize, 576usize, 3136usize), (512, 4608, 49)] {
        let x = values(cols * n);
        let shift = values(rows);
        let mut y = vec![0.0f32; rows * n];
        let epi = Epilogue {
            shift: Some(&shift),
            activation: Activation::Relu,
            ..Epilogue::NONE
        };
        let mut g = c.benchmark_group(format!("gemm_{rows}x{cols}x{n}"));
        g.sample_size(20);
        g.throughput(Throughput::Elements((rows * cols * n) as u64));
        let w = matrix(rows, cols, 16);
        let dense = w.to_dense();
        let d = DenseMatrix::new(&dense, rows, cols).unwrap();
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
            g.bench_function(BenchmarkId::new("q_k16", isa), |b| {
                b.iter(|| gemm(isa, &w, black_box(&x), n, &mut y, &epi).unwrap())
            });
            g.bench_function(BenchmarkId::new("f32", isa), |b| {
                b.iter(|| gemm_f32(isa, &d, black_box(&x), n, &mut y, &epi).unwrap())
            });
        }
        g.finish();
    }
}

/// The int8 path against the exact bit-packed kernels and f32, same
/// threading: `cargo bench -p dgms-qsimd --bench kernels -- int8`.
fn bench_int8(c: &mut Criterion) {
    let (rows, cols) = (4096, 4096);
    let x = values(cols);
    let mut y = vec![0.0f32; rows];
    let w = matrix(rows, cols, 16);
    let w8 = QMatrixI8::from_qmatrix(&w).unwrap();
    let dense = w.to_dense();
    let d = DenseMatrix::new(&dense, rows, cols).unwrap();
    let mut g = c.benchmark_group("int8_gemv_4096x4096_k16");
    g.sample_size(20);
    g.throughput(Throughput::Elements((rows * cols) as u64));
    for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
        g.bench_function(BenchmarkId::new("i8", isa), |b| {
            b.iter(|| gemv_i8(isa, &w8, black_box(&x), &mut y).unwrap())
        });
        g.bench_function(BenchmarkId::new("q", isa), |b| {
            b.iter(|| gemv(isa, &w, black_box(&x), &mut y).unwrap())
        });
        g.bench_function(BenchmarkId::new("f32", isa), |b| {
            b.iter(|| gemv_f32(isa, &d, black_box(&x), &mut y).unwrap())
        });
    }
    g.finish();

    // ResNet-18 layer1 3x3 conv, im2col'd.
    let (rows, cols, n) = (64usize, 576usize, 3136usize);
    let x = values(cols * n);
    let shift = values(rows);
    let mut y = vec![0.0f32; rows * n];
    let epi = Epilogue {
        shift: Some(&shift),
        activation: Activation::Relu,
        ..Epilogue::NONE
    };
    let w = matrix(rows, cols, 16);
    let w8 = QMatrixI8::from_qmatrix(&w).unwrap();
    let dense = w.to_dense();
    let d = DenseMatrix::new(&dense, rows, cols).unwrap();
    let mut g = c.benchmark_group(format!("int8_gemm_{rows}x{cols}x{n}_k16"));
    g.sample_size(20);
    g.throughput(Throughput::Elements((rows * cols * n) as u64));
    for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
        g.bench_function(BenchmarkId::new("i8", isa), |b| {
            b.iter(|| gemm_i8(isa, &w8, black_box(&x), n, &mut y, &epi).unwrap())
        });
        g.bench_function(BenchmarkId::new("q", isa), |b| {
            b.iter(|| gemm(isa, &w, black_box(&x), n, &mut y, &epi).unwrap())
        });
        g.bench_function(BenchmarkId::new("f32", isa), |b| {
            b.iter(|| gemm_f32(isa, &d, black_box(&x), n, &mut y, &epi).unwrap())
        });
    }
    // The same GEMM as a convolution of a ReLU output (no negative input):
    // int8 quantizes its im2col straight from the image.
    let geom = ConvGeometry {
        c: 64,
        h: 56,
        w: 56,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: 1,
    };
    let input: Vec<f32> = values(geom.input_len())
        .iter()
        .map(|v| v.max(0.0))
        .collect();
    for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
        g.bench_function(BenchmarkId::new("conv_relu_i8", isa), |b| {
            b.iter(|| conv2d_i8(isa, &w8, black_box(&input), &geom, &mut y, &epi).unwrap())
        });
        g.bench_function(BenchmarkId::new("conv_relu_q", isa), |b| {
            b.iter(|| conv2d(isa, &w, black_box(&input), &geom, &mut y, &epi).unwrap())
        });
    }
    g.finish();
}

/// CPU time consumed by the calling thread (Linux, 10 ms ticks), or
/// `None` where `/proc/thread-self/stat` does not exist.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(Duration::from_secs_f64(ticks / 100.0))
}

/// Runs `f` `iters` times on `pool` (one thread) and returns the thread
/// CPU time it took (wall-clock time where that cannot be read).
fn cpu_time(pool: &rayon::ThreadPool, iters: u64, f: &mut (dyn FnMut() + Send)) -> Duration {
    pool.install(|| {
        let (t0, w0) = (thread_cpu(), Instant::now());
        for _ in 0..iters {
            f();
        }
        match (t0, thread_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => w0.elapsed(),
        }
    })
}

/// Single-thread throughput of the exact kernels in thread CPU time: GEMV
/// 4096 x 4096 at K = 16, 4 (also the 2-bit table-lookup layout) and 256, and the ResNet GEMM shapes with a
/// ReLU epilogue, bit-packed against f32. Flat sampling with long samples keeps the 10 ms clock
/// ticks small against each sample.
fn bench_cpu_1thread(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread pool");
    let simd: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .collect();
    let (rows, cols) = (4096, 4096);
    let x = values(cols);
    let mut y = vec![0.0f32; rows];
    let mut g = c.benchmark_group("cpu_1thread_gemv_4096x4096");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements((rows * cols) as u64));
    for k in [16usize, 4, 256] {
        let w = matrix(rows, cols, k);
        let dense = w.to_dense();
        let d = DenseMatrix::new(&dense, rows, cols).unwrap();
        for &isa in &simd {
            g.bench_function(BenchmarkId::new(format!("q_k{k}"), isa), |b| {
                b.iter_custom(|iters| {
                    cpu_time(&pool, iters, &mut || {
                        gemv(isa, &w, black_box(&x), &mut y).unwrap()
                    })
                })
            });
            if k <= 4 {
                let w2 = QMatrix2::new(rows, cols, &w.to_indices(), w.codebook()).unwrap();
                g.bench_function(BenchmarkId::new(format!("q2bit_k{k}"), isa), |b| {
                    b.iter_custom(|iters| {
                        cpu_time(&pool, iters, &mut || {
                            gemv_2bit(isa, &w2, black_box(&x), &mut y).unwrap()
                        })
                    })
                });
            }
            g.bench_function(BenchmarkId::new(format!("f32_k{k}"), isa), |b| {
                b.iter_custom(|iters| {
                    cpu_time(&pool, iters, &mut || {
                        gemv_f32(isa, &d, black_box(&x), &mut y).unwrap()
                    })
                })
            });
        }
    }
    g.finish();
    for (rows, cols, n) in [
        (64usize, 576usize, 3136usize),
        (512, 4608, 49),
        (128, 1152, 784),
    ] {
        let w = matrix(rows, cols, 16);
        let dense = w.to_dense();
        let d = DenseMatrix::new(&dense, rows, cols).unwrap();
        let x = values(cols * n);
        let mut y = vec![0.0f32; rows * n];
        let epi = Epilogue {
            activation: Activation::Relu,
            ..Epilogue::NONE
        };
        let mut g = c.benchmark_group(format!("cpu_1thread_gemm_{rows}x{cols}x{n}"));
        g.sampling_mode(SamplingMode::Flat);
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(15));
        // Elements are multiply-adds: criterion's rate is half the GFLOP/s.
        g.throughput(Throughput::Elements((rows * cols * n) as u64));
        for &isa in &simd {
            g.bench_function(BenchmarkId::new("q_k16", isa), |b| {
                b.iter_custom(|iters| {
                    cpu_time(&pool, iters, &mut || {
                        gemm(isa, &w, black_box(&x), n, &mut y, &epi).unwrap()
                    })
                })
            });
            g.bench_function(BenchmarkId::new("f32", isa), |b| {
                b.iter_custom(|iters| {
                    cpu_time(&pool, iters, &mut || {
                        gemm_f32(isa, &d, black_box(&x), n, &mut y, &epi).unwrap()
                    })
                })
            });
        }
        g.finish();
    }
}

criterion_group!(
    benches,
    bench_gemv,
    bench_gemm,
    bench_int8,
    bench_cpu_1thread
);
criterion_main!(benches);
