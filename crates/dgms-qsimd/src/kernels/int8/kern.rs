//! Which int8 kernels run: the ISA's family, refined by the dot-product
//! features detected at run time.

use crate::kernels::isa::{CheckedIsa, Isa};

/// Environment variable that disables the dot-product instructions.
const NO_DOT_ENV_VAR: &str = "DGMS_QSIMD_NO_DOT";

/// The kernel family an ISA runs for int8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 with VNNI `vpdpbusd` (activations offset to u8).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// AVX-512BW `vpmaddubsw` + `vpmaddwd`.
    #[cfg(target_arch = "x86_64")]
    Avx512Bw,
    /// NEON with `sdot`.
    #[cfg(target_arch = "aarch64")]
    NeonDot,
    /// NEON `smull` + `sadalp`.
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// The portable kernels with the VNNI activation offset: runs the
    /// offset path (row sums, padding) on any CPU in the unit tests.
    #[cfg(test)]
    PortableOffset,
}

/// The int8 kernels to run. Its field is private to this module, so
/// [`Kern::select`] (from a [`CheckedIsa`], testing the dot-product
/// features itself) and the portable constants are the only ways to get
/// one: the `// SAFETY:` comments of the drivers' SIMD calls rest on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kern(Family, CheckedIsa);

impl Kern {
    /// The portable kernels (`Isa::Scalar`, and unit tests).
    pub(crate) const PORTABLE: Kern = Kern(Family::Portable, CheckedIsa::scalar());
    /// The portable kernels with the VNNI activation offset (unit tests).
    #[cfg(test)]
    pub(crate) const PORTABLE_OFFSET: Kern = Kern(Family::PortableOffset, CheckedIsa::scalar());

    /// The kernels for `isa`.
    pub(crate) fn select(isa: CheckedIsa) -> Kern {
        static NO_DOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let no_dot = *NO_DOT.get_or_init(|| {
            std::env::var_os(NO_DOT_ENV_VAR).is_some_and(|v| !v.is_empty() && v != "0")
        });
        let family = match isa.isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Family::Avx2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if !no_dot && std::arch::is_x86_feature_detected!("avx512vnni") => {
                Family::Avx512Vnni
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Family::Avx512Bw,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon if !no_dot && std::arch::is_aarch64_feature_detected!("dotprod") => {
                Family::NeonDot
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => Family::Neon,
            _ => Family::Portable,
        };
        Kern(family, isa)
    }

    /// The checked ISA the kernels were chosen for (the portable ones:
    /// scalar), for the loops compiled per ISA (`per_isa!`).
    pub(crate) fn isa(self) -> CheckedIsa {
        self.1
    }

    /// The family the drivers dispatch on.
    pub(crate) fn family(self) -> Family {
        self.0
    }

    /// Whether activations go in as q + 128 (u8), corrected by row sums.
    pub(crate) fn offset(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.0 == Family::Avx512Vnni {
            return true;
        }
        #[cfg(test)]
        if self.0 == Family::PortableOffset {
            return true;
        }
        false
    }
}
