//! The device a run computes on: `--device cpu|cuda|cuda:N`, parsed into a
//! [`DeviceSpec`] and opened as a candle [`Device`] with [`DeviceSpec::to_device`].
//!
//! CUDA needs the `cuda` cargo feature (off by default; `cudnn` adds
//! cuDNN convolutions). Without it, asking for CUDA is a
//! [`DeviceError::NotBuilt`] rather than candle's generic error, so the
//! message says how to get a build that can.
//!
//! On a non-CPU device the models fall back from the project's CPU-only
//! custom ops to candle's own ops (see `dgms_models::ConvBackend::for_device`
//! and `dgms_core::GaussianMixture::soft_weights`). Export, the packed
//! format, `qsimd` and `infer` stay on the CPU.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// Which device to compute on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU (the default).
    #[default]
    Cpu,
    /// CUDA GPU number `ordinal` (`cuda` is `cuda:0`).
    Cuda { ordinal: usize },
}

/// A device that cannot be named or opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The string is not `cpu`, `cuda` or `cuda:N`.
    #[error(
        "unknown device {input:?}: expected cpu, cuda or cuda:N (N a GPU number, e.g. cuda:1)"
    )]
    Parse { input: String },
    /// CUDA was asked for in a build without the `cuda` cargo feature.
    #[error("--device {spec}: this dgms was built without CUDA: rebuild with --features cuda")]
    NotBuilt { spec: DeviceSpec },
    /// candle could not open the device (no driver, no such GPU, ...).
    #[error("--device {spec}: cannot open the device")]
    Open {
        spec: DeviceSpec,
        #[source]
        source: candle_core::Error,
    },
}

impl DeviceSpec {
    /// Whether this is the CPU.
    pub fn is_cpu(self) -> bool {
        self == DeviceSpec::Cpu
    }

    /// Opens the device: the CPU always; a CUDA device only in a build with
    /// the `cuda` feature, and only if candle can open it.
    pub fn to_device(self) -> Result<Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda { ordinal } => open_cuda(self, ordinal),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(spec: DeviceSpec, ordinal: usize) -> Result<Device, DeviceError> {
    Device::new_cuda(ordinal).map_err(|source| DeviceError::Open {
        spec,
        source: without_backtrace(source),
    })
}

/// `e` without the backtrace candle attaches when `RUST_BACKTRACE` is set:
/// "no driver" is a user's situation, not a bug, and the backtrace would
/// bury the one line that says so.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        other => other,
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(spec: DeviceSpec, _ordinal: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuilt { spec })
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DeviceError::Parse {
            input: s.to_string(),
        };
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda { ordinal: 0 }),
            _ => {
                let digits = s.strip_prefix("cuda:").ok_or_else(bad)?;
                // Digits only: usize's parser would also take "+1".
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let ordinal = digits.parse().map_err(|_| bad())?;
                Ok(DeviceSpec::Cuda { ordinal })
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_cuda_ordinals() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda { ordinal: 0 }
        );
        assert_eq!(
            "cuda:1".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda { ordinal: 1 }
        );
        assert_eq!(
            "cuda:12".parse::<DeviceSpec>().unwrap().to_string(),
            "cuda:12"
        );
    }

    #[test]
    fn rejects_other_strings_naming_the_accepted_forms() {
        for bad in [
            "", "gpu", "CPU", "cuda:", "cuda:x", "cuda:+1", "cuda:-1", "cuda1", "cuda:1 ",
        ] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(matches!(err, DeviceError::Parse { .. }), "{bad:?}: {err}");
            let msg = err.to_string();
            assert!(msg.contains("expected cpu, cuda or cuda:N"), "{msg}");
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
        }
    }

    #[test]
    fn driver_errors_lose_candle_s_backtrace() {
        let plain = || candle_core::Error::Msg("CUDA_ERROR_STUB_LIBRARY".into());
        let wrapped = candle_core::Error::WithBacktrace {
            inner: Box::new(plain()),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(wrapped.to_string().len() > plain().to_string().len());
        assert_eq!(without_backtrace(wrapped).to_string(), plain().to_string());
    }

    #[test]
    fn cpu_opens() {
        assert!(DeviceSpec::Cpu.to_device().unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_rebuild() {
        let err = DeviceSpec::Cuda { ordinal: 1 }.to_device().unwrap_err();
        assert!(matches!(err, DeviceError::NotBuilt { .. }));
        assert_eq!(
            err.to_string(),
            "--device cuda:1: this dgms was built without CUDA: rebuild with --features cuda"
        );
    }
}
