//! `--devices LIST` of `pretrain` and `dgms`: one rank process per listed
//! GPU of this machine (`--devices 0,1,2,3`), each on `cuda:<id>`.
//!
//! The list is parsed here (clap's value parser: a malformed list is a
//! usage error) and checked against the other group flags in
//! [`local_ranks`]: it implies rank processes, and `--ranks` must be
//! absent or equal to its length.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

/// At most this many GPUs per machine (the `--ranks` limit).
pub const MAX_DEVICES: usize = 64;

/// CUDA ordinals, distinct, in the order given (local rank `i` runs on
/// the `i`-th).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList(pub Vec<usize>);

impl FromStr for DeviceList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expected = "expected GPU numbers separated by commas, e.g. 0,1,2,3";
        let mut ids = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            // Digits only: usize's parser would also take "+1".
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{part:?} is not a GPU number: {expected}"));
            }
            let id: usize = part
                .parse()
                .map_err(|_| format!("{part:?} is not a GPU number: {expected}"))?;
            if ids.contains(&id) {
                return Err(format!(
                    "GPU {id} is listed twice: one rank per GPU, each GPU once"
                ));
            }
            ids.push(id);
        }
        if ids.len() > MAX_DEVICES {
            return Err(format!(
                "{} GPUs: at most {MAX_DEVICES} per machine",
                ids.len()
            ));
        }
        Ok(DeviceList(ids))
    }
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.0.iter().map(usize::to_string).collect();
        f.write_str(&ids.join(","))
    }
}

/// The number of ranks on this machine given `--ranks` (`None`: absent)
/// and `--devices`, refusing a conflict and, in a build without CUDA,
/// any `--devices`.
pub fn local_ranks(ranks: Option<u32>, devices: Option<&DeviceList>) -> Result<usize> {
    let Some(devices) = devices else {
        return Ok(ranks.unwrap_or(1) as usize);
    };
    if let Some(n) = ranks {
        if n as usize != devices.0.len() {
            bail!(
                "--ranks {n} --devices {devices}: --devices starts one rank per GPU ({}); drop --ranks or make it {}",
                devices.0.len(),
                devices.0.len()
            );
        }
    }
    if !cfg!(feature = "cuda") {
        bail!(
            "--devices {devices}: this dgms was built without CUDA: rebuild with --features cuda (and nccl for NCCL all-reduce)"
        );
    }
    Ok(devices.0.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_in_order() {
        assert_eq!("0,1,2,3".parse(), Ok(DeviceList(vec![0, 1, 2, 3])));
        assert_eq!("3, 1".parse(), Ok(DeviceList(vec![3, 1])));
        assert_eq!("7".parse(), Ok(DeviceList(vec![7])));
        assert_eq!(DeviceList(vec![2, 0]).to_string(), "2,0");
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        for (bad, says) in [
            ("", "\"\" is not a GPU number"),
            ("0,,1", "\"\" is not a GPU number"),
            ("0,", "\"\" is not a GPU number"),
            ("cuda:0", "\"cuda:0\" is not a GPU number"),
            ("+1", "\"+1\" is not a GPU number"),
            ("-1", "\"-1\" is not a GPU number"),
            ("0,1,0", "GPU 0 is listed twice"),
        ] {
            let err = bad.parse::<DeviceList>().unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let many: Vec<String> = (0..=MAX_DEVICES).map(|i| i.to_string()).collect();
        let err = many.join(",").parse::<DeviceList>().unwrap_err();
        assert!(err.contains("at most 64 per machine"), "{err}");
    }

    #[test]
    fn ranks_must_be_absent_or_the_device_count() {
        let two = DeviceList(vec![0, 1]);
        assert_eq!(local_ranks(None, None).unwrap(), 1);
        assert_eq!(local_ranks(Some(3), None).unwrap(), 3);
        let err = local_ranks(Some(3), Some(&two)).unwrap_err().to_string();
        assert!(
            err.contains("--ranks 3 --devices 0,1: --devices starts one rank per GPU (2)"),
            "{err}"
        );
        for ranks in [None, Some(2)] {
            let got = local_ranks(ranks, Some(&two));
            if cfg!(feature = "cuda") {
                assert_eq!(got.unwrap(), 2);
            } else {
                let err = got.unwrap_err().to_string();
                assert!(err.contains("built without CUDA"), "{err}");
            }
        }
    }
}
