//! The machine's parallel ceiling: how much more work two threads get
//! done than one when they share nothing at all.
//!
//! Two independent copies of a compute-bound kernel (each on its own
//! one-thread rayon pool, each with its own matrix small enough to stay
//! in its core's L2) run at once, against one copy alone. On two real
//! cores the ratio is about 2. Where the two logical CPUs share one
//! core's execution units (SMT siblings, which a VM may present as two
//! cores) or the host time-slices them, it is lower, and no batch-1
//! network can scale past it: the benches print it beside their own
//! 2-thread / 1-thread ratios so that those can be judged against what the
//! machine allows rather than against 2.

use std::time::Instant;

use anyhow::{Context, Result};
use dgms_qsimd::kernels::{self, DenseMatrix, Isa, QMatrix, QMatrixI8};
use serde::Serialize;

use crate::bench_qsimd::layers::{quantized, values};

/// Rows and columns of each copy's matrix: 512 x 1024 4-bit indices are
/// 256 KiB (int8: 512 KiB, f32: 2 MiB), so the exact and int8 copies run
/// from L2 and measure the execution units, not memory.
const ROWS: usize = 512;
const COLS: usize = 1024;
/// Repetitions of the kernel per copy: long enough (~0.1-0.3 s) that
/// thread start-up does not count.
const REPS: usize = 2000;
/// Timed trials; the median is kept.
const TRIALS: usize = 3;

/// Which kernel the copies run.
#[derive(Clone, Copy, Debug)]
pub enum Kernel {
    /// The exact 4-bit GEMV (shift, permute, FMA), best ISA.
    Exact,
    /// The int8 GEMV (VNNI dot products where the CPU has them).
    Int8,
    /// The project's f32 GEMV (FMA), as training's matrix products.
    F32,
}

/// One kernel's ceiling.
#[derive(Clone, Debug, Serialize)]
pub struct Ceiling {
    pub kernel: String,
    pub isa: String,
    /// One copy alone, ms per repetition.
    pub one_copy_ms: f64,
    /// Two copies at once: wall time per repetition of each.
    pub two_copies_ms: f64,
    /// Work done per second by two copies over one: 2 x one / two.
    pub ratio: f64,
}

/// Measures `kernel`'s ceiling (one copy, then two at once; median of
/// [`TRIALS`]).
pub fn measure(kernel: Kernel) -> Result<Ceiling> {
    let isa = Isa::detect();
    let (q, dense) = quantized(ROWS, COLS, 16, 11)?;
    let one = median(|| run_copies(kernel, isa, &q, &dense, 1))?;
    let two = median(|| run_copies(kernel, isa, &q, &dense, 2))?;
    Ok(Ceiling {
        kernel: format!("{kernel:?}").to_lowercase(),
        isa: isa.to_string(),
        one_copy_ms: one / REPS as f64,
        two_copies_ms: two / REPS as f64,
        ratio: 2.0 * one / two,
    })
}

/// The line the benches print.
pub fn describe(c: &Ceiling) -> String {
    format!(
        "parallel ceiling ({} GEMV {}x{}, {}): 2 independent copies on 2 threads do {:.2}x \
         the work of 1 ({:.4} ms vs {:.4} ms a repetition){}",
        c.kernel,
        ROWS,
        COLS,
        c.isa,
        c.ratio,
        c.one_copy_ms,
        c.two_copies_ms,
        if c.ratio < 1.7 {
            ": the second logical CPU gave less than a core in this run (shared execution units or a busy host), and 2-thread speed-ups cannot exceed this"
        } else {
            ""
        }
    )
}

fn median(mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    // One untimed warm-up (page faults, frequency ramp).
    f()?;
    let mut t = (0..TRIALS).map(|_| f()).collect::<Result<Vec<_>>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[TRIALS / 2])
}

/// Wall-clock ms of `copies` threads, each running [`REPS`] repetitions
/// of the kernel on its own copy of the data in its own one-thread pool.
fn run_copies(kernel: Kernel, isa: Isa, q: &QMatrix, dense: &[f32], copies: usize) -> Result<f64> {
    // Each copy owns its matrix (no shared cache lines), built before the
    // clock starts.
    let work: Vec<Copy> = (0..copies)
        .map(|i| Copy::new(kernel, q, dense, i as u64))
        .collect::<Result<_>>()?;
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = work
            .into_iter()
            .map(|mut c| s.spawn(move || c.run(isa)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("ceiling copy panicked"))?
            })
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

enum Matrix {
    Exact(QMatrix),
    Int8(QMatrixI8),
    F32(Vec<f32>),
}

struct Copy {
    m: Matrix,
    x: Vec<f32>,
    y: Vec<f32>,
}

impl Copy {
    fn new(kernel: Kernel, q: &QMatrix, dense: &[f32], seed: u64) -> Result<Copy> {
        let m = match kernel {
            Kernel::Exact => Matrix::Exact(q.clone()),
            Kernel::Int8 => Matrix::Int8(QMatrixI8::from_qmatrix(q)?),
            Kernel::F32 => Matrix::F32(dense.to_vec()),
        };
        Ok(Copy {
            m,
            x: values(COLS, 50 + seed),
            y: vec![0.0; ROWS],
        })
    }

    fn run(&mut self, isa: Isa) -> Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .context("a one-thread rayon pool")?;
        pool.install(|| {
            for _ in 0..REPS {
                match &self.m {
                    Matrix::Exact(q) => kernels::gemv(isa, q, &self.x, &mut self.y)?,
                    Matrix::Int8(q) => kernels::gemv_i8(isa, q, &self.x, &mut self.y)?,
                    Matrix::F32(d) => {
                        let d = DenseMatrix::new(d, ROWS, COLS)?;
                        kernels::gemv_f32(isa, &d, &self.x, &mut self.y)?
                    }
                }
            }
            Ok(())
        })
    }
}
