//! Kernel benchmarks: the bit-packed GEMV / GEMM per ISA against the f32
//! kernels with the same threading and micro-kernel.
//!
//! `cargo bench -p dgms-qsimd --bench kernels -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dgms_qsimd::kernels::{gemm, gemm_f32, gemv, gemv_f32, DenseMatrix, Epilogue, Isa, QMatrix};

/// Deterministic pseudo-random values (no rand dependency).
fn lcg(seed: u64, n: usize) -> impl Iterator<Item = u64> {
    let mut s = seed;
    (0..n).map(move |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    })
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
            relu: true,
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

criterion_group!(benches, bench_gemv, bench_gemm);
criterion_main!(benches);
