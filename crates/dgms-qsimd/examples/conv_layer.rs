//! Runs one convolution layer in a loop on the exact or the int8 path, to
//! profile a kernel in isolation (`perf record` this example) or time it:
//!
//! ```text
//! cargo run -p dgms-qsimd --release --example conv_layer -- int8 256 14 14 3 1 256 2000
//! ```
//!
//! Arguments: path (`exact` or `int8`), input channels, height, width,
//! kernel size, stride, output channels, repetitions (padding k / 2,
//! K = 16, ReLU epilogue, the ISA from `DGMS_QSIMD` or the best one).
//! Prints the median time per call and the rate in multiply-adds.

use std::time::Instant;

use dgms_qsimd::kernels::{conv2d, conv2d_i8, ConvGeometry, Epilogue, Isa, QMatrix, QMatrixI8};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 8 {
        return Err("usage: conv_layer exact|int8 C H W K STRIDE OUT REPS".into());
    }
    let num = |i: usize| -> Result<usize, Box<dyn std::error::Error>> {
        args[i]
            .parse::<usize>()
            .map_err(|e| format!("argument {i} ({}): {e}", args[i]).into())
    };
    let (c, h, w, k, stride, out_c, reps) = (
        num(1)?,
        num(2)?,
        num(3)?,
        num(4)?,
        num(5)?,
        num(6)?,
        num(7)?,
    );
    let geom = ConvGeometry {
        c,
        h,
        w,
        kh: k,
        kw: k,
        stride,
        pad: k / 2,
    };
    let cols = c * k * k;
    let codebook: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) * 0.01).collect();
    let indices: Vec<u8> = (0..out_c * cols).map(|i| (i * 7 % 16) as u8).collect();
    // Nonnegative inputs, as after a ReLU.
    let input: Vec<f32> = (0..c * h * w)
        .map(|i| ((i * 37 % 101) as f32) / 101.0)
        .collect();
    let mut out = vec![0.0f32; out_c * geom.out_pixels()];
    let epi = Epilogue {
        activation: dgms_qsimd::kernels::Activation::Relu,
        ..Epilogue::NONE
    };
    let isa = Isa::from_env()?;
    let mut run: Box<dyn FnMut() -> dgms_qsimd::Result<()>> = match args[0].as_str() {
        "exact" => {
            let m = QMatrix::new(out_c, cols, &indices, &codebook)?;
            Box::new(move || conv2d(isa, &m, &input, &geom, &mut out, &epi))
        }
        "int8" => {
            let m = QMatrixI8::new(out_c, cols, &indices, &codebook)?;
            Box::new(move || conv2d_i8(isa, &m, &input, &geom, &mut out, &epi))
        }
        other => return Err(format!("unknown path {other} (exact or int8)").into()),
    };
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let macs = (out_c * cols * geom.out_pixels()) as f64;
    println!(
        "{} {isa} {c}x{h}x{w} k{k} s{stride} -> {out_c}: {:.3} ms, {:.1} GMAC/s",
        args[0],
        median * 1e3,
        macs / median / 1e9
    );
    Ok(())
}
