//! `per_isa!`: a safe loop body compiled once per ISA under
//! `#[target_feature]` and dispatched on the int8 kernel family.

/// Defines `$name(kern, args..)`: the `#[inline(always)]` body `$body`
/// compiled once per ISA under `#[target_feature]` (as the max-pool
/// loop), so LLVM vectorises the quantization loops at the ISA's width
/// instead of baseline SSE2's. Safe code: every ISA computes the same
/// values, the widths differ.
macro_rules! per_isa {
    ($(#[$doc:meta])* fn $name:ident = $body:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        fn $name(kern: Kern, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
            fn avx512($($arg: $ty),*) {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) {
                $body($($arg),*)
            }
            #[cfg(target_arch = "aarch64")]
            #[target_feature(enable = "neon")]
            fn neon($($arg: $ty),*) {
                $body($($arg),*)
            }
            match kern.family() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `kern` came from Kern::select on a CheckedIsa
                // for AVX-512: the CPU has these features.
                Family::Avx512Vnni | Family::Avx512Bw => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, for AVX2.
                Family::Avx2 => unsafe { avx2($($arg),*) },
                #[cfg(target_arch = "aarch64")]
                // SAFETY: as above, for NEON.
                Family::NeonDot | Family::Neon => unsafe { neon($($arg),*) },
                _ => $body($($arg),*),
            }
        }
    };
}
