//! Instruction-set selection: what the CPU offers and what the user forces.

use std::fmt;
use std::str::FromStr;

use crate::error::{QsimdError, Result};

/// Environment variable that forces a kernel ISA (`scalar|avx2|avx512|neon|auto`).
pub const ISA_ENV_VAR: &str = "DGMS_QSIMD";

/// The instruction set a kernel runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust; the reference every SIMD kernel is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL.
    Avx512,
    /// aarch64 Advanced SIMD.
    Neon,
}

impl Isa {
    /// Every ISA, best last.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// Lower-case name, as accepted by [`FromStr`] and `DGMS_QSIMD`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Whether this CPU can run the kernels of `self`.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    // The AVX-512 kernels also use AVX2/FMA encodings.
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// All ISAs this CPU can run, `Scalar` first and the best last.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The best ISA this CPU can run.
    pub fn detect() -> Isa {
        // ALL is ordered so that the last available one is the fastest.
        Isa::ALL
            .into_iter()
            .rev()
            .find(|i| i.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// The ISA chosen by `DGMS_QSIMD` (unset, empty or `auto`: [`Isa::detect`]).
    /// Errors if the value is unknown or names an ISA this CPU lacks.
    pub fn from_env() -> Result<Isa> {
        match std::env::var(ISA_ENV_VAR) {
            Ok(v) => Isa::from_choice(Some(&v)),
            Err(std::env::VarError::NotPresent) => Isa::from_choice(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(QsimdError::UnknownIsa {
                value: v.to_string_lossy().into_owned(),
            }),
        }
    }

    /// What [`Isa::from_env`] does with the variable's value, without
    /// reading the environment (for tests and command-line flags).
    pub fn from_choice(value: Option<&str>) -> Result<Isa> {
        let v = value.map(str::trim).unwrap_or("");
        if v.is_empty() || v.eq_ignore_ascii_case("auto") {
            return Ok(Isa::detect());
        }
        let isa: Isa = v.parse()?;
        if isa.is_available() {
            Ok(isa)
        } else {
            Err(QsimdError::IsaUnavailable {
                isa: isa.name().to_string(),
            })
        }
    }

    /// Errors unless this CPU can run `self`.
    pub fn ensure_available(self) -> Result<()> {
        self.check().map(|_| ())
    }

    /// The token that proves this CPU can run `self`, or
    /// [`QsimdError::IsaUnavailable`]. Every public kernel entry point
    /// calls it first and hands the token to its driver, so no
    /// `#[target_feature]` code runs on a CPU without the feature.
    pub fn check(self) -> Result<CheckedIsa> {
        if self.is_available() {
            Ok(CheckedIsa(self))
        } else {
            Err(QsimdError::IsaUnavailable {
                isa: self.name().to_string(),
            })
        }
    }
}

/// An [`Isa`] that this CPU was checked to run. Its field is private to
/// this module, so [`Isa::check`] (and [`CheckedIsa::scalar`], which
/// needs no check) is the only way to get one: a driver taking a
/// `CheckedIsa` may run the ISA's `#[target_feature]` kernels, and the
/// `// SAFETY:` comments at those calls rest on this type, not on a
/// convention about what the caller did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CheckedIsa(Isa);

impl CheckedIsa {
    /// The portable kernels, which every CPU runs.
    pub const fn scalar() -> CheckedIsa {
        CheckedIsa(Isa::Scalar)
    }

    /// The ISA that was checked.
    pub fn isa(self) -> Isa {
        self.0
    }
}

impl fmt::Display for CheckedIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = QsimdError;

    fn from_str(s: &str) -> Result<Isa> {
        let t = s.trim();
        Isa::ALL
            .into_iter()
            .find(|i| t.eq_ignore_ascii_case(i.name()))
            .or_else(|| match t.to_ascii_lowercase().as_str() {
                "avx-512" | "avx512f" => Some(Isa::Avx512),
                "asimd" => Some(Isa::Neon),
                _ => None,
            })
            .ok_or_else(|| QsimdError::UnknownIsa {
                value: s.to_string(),
            })
    }
}
