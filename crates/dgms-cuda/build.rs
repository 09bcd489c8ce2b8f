//! Compiles `kernels/*.cu` to PTX with nvcc (through cudaforge, as
//! candle-kernels does) when the `cuda` feature is on; nothing otherwise.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels");
    #[cfg(feature = "cuda")]
    compile_kernels();
}

#[cfg(feature = "cuda")]
fn compile_kernels() {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ptx = cudaforge::KernelBuilder::new()
        .source_files(["kernels/mixture.cu"])
        .arg("-O3")
        .arg("-std=c++17")
        // Exact f64 math: the results are compared with the CPU's to 1e-5.
        .arg("--fmad=false")
        .build_ptx()
        .unwrap_or_else(|e| panic!("dgms-cuda: nvcc failed on kernels/mixture.cu: {e}"));
    ptx.write(out_dir.join("ptx.rs"))
        .unwrap_or_else(|e| panic!("dgms-cuda: cannot write ptx.rs: {e}"));
}
