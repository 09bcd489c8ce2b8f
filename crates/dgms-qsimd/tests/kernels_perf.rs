//! Single-thread throughput measured in thread CPU time, so that it means
//! something on a shared, loaded machine (criterion's wall-clock numbers do
//! not there). Ignored by default:
//! `cargo test -p dgms-qsimd --release --test kernels_perf -- --ignored --nocapture`

mod kernels_util;

use dgms_qsimd::kernels::{gemm, gemm_f32, gemv, gemv_f32, DenseMatrix, Epilogue, Isa};
use kernels_util::{qmatrix, Rng};

/// CPU seconds consumed by the calling thread (Linux; None elsewhere).
fn thread_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Runs `f` for about `secs` CPU seconds on a one-thread pool; returns
/// CPU seconds per call.
fn per_call(secs: f64, f: &mut (dyn FnMut() + Send)) -> Option<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .ok()?;
    pool.install(|| {
        f();
        let t0 = thread_cpu()?;
        let mut calls = 0u64;
        loop {
            f();
            calls += 1;
            let t = thread_cpu()? - t0;
            if t >= secs {
                return Some(t / calls as f64);
            }
        }
    })
}

#[test]
#[ignore = "performance report, run by hand"]
fn perf_report() {
    let mut rng = Rng::new(1);
    let (rows, cols) = (4096, 4096);
    let x = rng.vec(cols);
    let mut y = vec![0.0f32; rows];
    for k in [16usize, 4, 256] {
        let (w, _, _) = qmatrix(&mut rng, rows, cols, k);
        let dense = w.to_dense();
        let d = DenseMatrix::new(&dense, rows, cols).unwrap();
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
            let q = per_call(1.0, &mut || gemv(isa, &w, &x, &mut y).unwrap()).unwrap();
            let f = per_call(1.0, &mut || gemv_f32(isa, &d, &x, &mut y).unwrap()).unwrap();
            println!(
                "gemv {rows}x{cols} K={k} {isa}: q {:.2} ms, f32 {:.2} ms, speed-up {:.2}x",
                q * 1e3,
                f * 1e3,
                f / q
            );
        }
    }
    for (rows, cols, n) in [
        (64usize, 576usize, 3136usize),
        (512, 4608, 49),
        (128, 1152, 784),
    ] {
        let (w, _, _) = qmatrix(&mut rng, rows, cols, 16);
        let dense = w.to_dense();
        let d = DenseMatrix::new(&dense, rows, cols).unwrap();
        let x = rng.vec(cols * n);
        let mut y = vec![0.0f32; rows * n];
        let epi = Epilogue {
            relu: true,
            relu6: false,
            ..Epilogue::NONE
        };
        let flop = 2.0 * (rows * cols * n) as f64;
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
            let q = per_call(1.5, &mut || gemm(isa, &w, &x, n, &mut y, &epi).unwrap()).unwrap();
            let f = per_call(1.5, &mut || gemm_f32(isa, &d, &x, n, &mut y, &epi).unwrap()).unwrap();
            println!(
                "gemm {rows}x{cols}x{n} K=16 {isa}: q {:.1} GFLOP/s, f32 {:.1} GFLOP/s (1 thread, CPU time)",
                flop / q / 1e9,
                flop / f / 1e9
            );
        }
    }
}
