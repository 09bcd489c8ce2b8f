//! Forward + backward of one ResNet-20 CIFAR stage-1 conv (batch 128, 16 -> 16 channels,
//! 32x32, 3x3, padding 1): `dgms_models::conv_op::conv2d` vs candle's `Tensor::conv2d`.
//!
//! Why: the conv backward dominated a candle training step on CPU; this tracks how much the
//! im2col + GEMM op saves. Throughput is in images per second.
//!
//! Tip: set `RAYON_NUM_THREADS` (e.g. to the core count). candle 0.11.1 otherwise re-reads
//! /proc/cpuinfo on every matmul call, which costs both sides here.

use candle_core::{DType, Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dgms_models::conv_op::conv2d;
use std::hint::black_box;

const BATCH: usize = 128;
const CHANNELS: usize = 16;
const SIZE: usize = 32;

/// One forward + backward pass: L = sum(conv(x, w)), gradients for both x and w.
fn step(x: &Var, w: &Var, ours: bool) -> Result<()> {
    let y = match ours {
        true => conv2d(x, w, 1, 1, 1)?,
        false => x.conv2d(w, 1, 1, 1, 1)?,
    };
    let grads = y.backward()?;
    black_box(grads.get(x));
    Ok(())
}

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (BATCH, CHANNELS, SIZE, SIZE), &dev).unwrap();
    let w = Tensor::randn(0f32, 0.1, (CHANNELS, CHANNELS, 3, 3), &dev).unwrap();
    let (x, w) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
    assert_eq!(x.dtype(), DType::F32);

    let mut group = c.benchmark_group("resnet20_stage1_conv_fwd_bwd");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    for (name, ours) in [("conv_op_im2col", true), ("candle_conv2d", false)] {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| step(&x, &w, ours).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
