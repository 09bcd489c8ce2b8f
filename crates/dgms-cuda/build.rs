//! With `cuda`: compiles `kernels/mixture.cu` to PTX with nvcc (through
//! cudaforge, as candle-kernels does). With `emulation`: compiles
//! `kernels/host_emulation.cpp`, which runs the same kernels on CPU
//! threads for tests, with the system's C++ compiler. Nothing otherwise.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels");
    #[cfg(feature = "cuda")]
    compile_ptx();
    #[cfg(feature = "emulation")]
    compile_emulation();
}

#[cfg(feature = "cuda")]
fn compile_ptx() {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ptx = cudaforge::KernelBuilder::new()
        .source_files(["kernels/mixture.cu"])
        .arg("-O3")
        .arg("-std=c++17")
        // No fused multiply-adds: the CPU kernel has none, and the results
        // are compared with it.
        .arg("--fmad=false")
        .build_ptx()
        .unwrap_or_else(|e| panic!("dgms-cuda: nvcc failed on kernels/mixture.cu: {e}"));
    ptx.write(out_dir.join("ptx.rs"))
        .unwrap_or_else(|e| panic!("dgms-cuda: cannot write ptx.rs: {e}"));
}

#[cfg(feature = "emulation")]
fn compile_emulation() {
    cc::Build::new()
        .cpp(true)
        .file("kernels/host_emulation.cpp")
        .flag("-std=c++20")
        // As the CPU kernel: no contraction into fused multiply-adds.
        .flag_if_supported("-ffp-contract=off")
        .opt_level(2)
        .warnings(true)
        .try_compile("dgms_mixture_emulation")
        .unwrap_or_else(|e| {
            panic!(
                "dgms-cuda: the kernel emulation (kernels/host_emulation.cpp, built for `cargo test`) \
                 needs a C++20 compiler such as g++ >= 11 (`apt install g++`): {e}"
            )
        });
}
