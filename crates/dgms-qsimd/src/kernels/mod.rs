//! Bit-packed inference kernels and their run-time dispatch.
