//! `per_isa!`: a safe loop body compiled once per ISA under
//! `#[target_feature]` and dispatched on a [`CheckedIsa`].
//!
//! [`CheckedIsa`]: crate::kernels::CheckedIsa

/// Defines `$name(isa: CheckedIsa, args..)`: the `#[inline(always)]`
/// body `$body` compiled once per ISA under `#[target_feature]`, so LLVM
/// vectorises its loops at the ISA's width instead of baseline SSE2's
/// (or NEON's defaults); the scalar ISA runs the body as it is. Safe
/// code: every ISA computes the same values, the widths differ. Used by
/// the max-pool plane, the depthwise fallback and the int8 quantizer's
/// and store loops.
macro_rules! per_isa {
    ($(#[$doc:meta])* $vis:vis fn $name:ident = $body:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        $vis fn $name(isa: $crate::kernels::CheckedIsa, $($arg: $ty),*) {
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
            match isa.isa() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `isa` is a CheckedIsa: Isa::check found the ISA
                // on this CPU.
                $crate::kernels::Isa::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                $crate::kernels::Isa::Avx2 => unsafe { avx2($($arg),*) },
                #[cfg(target_arch = "aarch64")]
                // SAFETY: as above.
                $crate::kernels::Isa::Neon => unsafe { neon($($arg),*) },
                _ => $body($($arg),*),
            }
        }
    };
}
