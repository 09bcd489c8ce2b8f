//! Ranks as processes ([`train_processes`]): the launcher behind `dgms
//! pretrain|dgms --ranks N --rank-processes` and the multi-machine flags
//! `--nodes M --node-rank I --rendezvous HOST:PORT`.
//!
//! The process the user starts is the first rank of its node: it starts
//! the node's other ranks as children (the same program and arguments,
//! with the rank, the group size and the rendezvous address in
//! [`RANK_ENV`], [`WORLD_ENV`] and [`RENDEZVOUS_ENV`]), joins the group
//! ([`SocketComm`]: rank 0 listens at the rendezvous address, every
//! other rank connects to it) and trains its part. Global ranks are
//! `node_rank * N + local`, so node 0's first process is rank 0, the one
//! that writes the run. A child that fails aborts the group; the launcher
//! waits for every child and reports the first that failed.
//!
//! With [`ProcessGroup::devices`] (`--devices 0,1,2,3`), local rank `i`
//! computes on `cuda:<devices[i]>` (passed to a child in [`DEVICE_ENV`])
//! and the group reduces with NCCL in a build with the `nccl` feature
//! ([`crate::parallel::nccl::NcclComm`]); otherwise, and for every other
//! group, through [`SocketComm`], which works for any device by copying
//! each gradient to the host and back.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::config::RunConfig;
use crate::device::DeviceSpec;
use crate::error::{Result, TrainError};
use crate::parallel::all_reduce::AllReduce;
use crate::parallel::error::ParallelError;
use crate::parallel::socket::SocketComm;
use crate::parallel::train::train_rank;
use crate::train::trainer::{TrainOptions, TrainOutcome};

/// The global rank of a child process.
pub const RANK_ENV: &str = "DGMS_RANK";
/// The group's number of ranks, for a child process.
pub const WORLD_ENV: &str = "DGMS_WORLD";
/// Where rank 0 listens, for a child process.
pub const RENDEZVOUS_ENV: &str = "DGMS_RENDEZVOUS";
/// The device of a child rank of a `--devices` group (`cuda:N`).
pub const DEVICE_ENV: &str = "DGMS_DEVICE";
/// How long ranks wait for the whole group to meet (machines of a
/// multi-node run may start minutes apart).
pub const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(600);

/// Where this process's node sits in a group of rank processes.
#[derive(Clone, Debug)]
pub struct ProcessGroup {
    /// Machines taking part (`--nodes`).
    pub nodes: usize,
    /// This machine's index, `0..nodes` (`--node-rank`).
    pub node_rank: usize,
    /// Ranks per machine (`--ranks`).
    pub local_ranks: usize,
    /// Where rank 0 listens; `None`: a free port of 127.0.0.1 (one
    /// machine only).
    pub rendezvous: Option<String>,
    /// CUDA ordinals of this machine's ranks, one per local rank
    /// (`--devices`); `None`: every rank on the run's `--device`.
    pub devices: Option<Vec<usize>>,
}

impl ProcessGroup {
    fn world(&self) -> usize {
        self.nodes * self.local_ranks
    }

    fn first_rank(&self) -> usize {
        self.node_rank * self.local_ranks
    }
}

/// A child rank of this process, as read from its environment: `(rank,
/// world, rendezvous address)`, or `None` in a process the user started.
pub fn child_rank_from_env() -> Result<Option<(usize, usize, String)>> {
    let Some(rank) = std::env::var_os(RANK_ENV) else {
        return Ok(None);
    };
    let bad = |what: &str| -> TrainError {
        ParallelError::Rendezvous {
            addr: std::env::var(RENDEZVOUS_ENV).unwrap_or_default(),
            reason: format!("{what} is not set to a number by the launcher"),
        }
        .into()
    };
    let rank: usize = rank
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(RANK_ENV))?;
    let world: usize = std::env::var(WORLD_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(WORLD_ENV))?;
    let addr = std::env::var(RENDEZVOUS_ENV).map_err(|_| bad(RENDEZVOUS_ENV))?;
    Ok(Some((rank, world, addr)))
}

/// The device a launcher gave this child rank ([`DEVICE_ENV`]), or
/// `None` (not a child of a `--devices` group).
pub fn child_device_from_env() -> Result<Option<DeviceSpec>> {
    match std::env::var(DEVICE_ENV) {
        Ok(s) => Ok(Some(s.parse()?)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(s)) => Err(ParallelError::Rendezvous {
            addr: std::env::var(RENDEZVOUS_ENV).unwrap_or_default(),
            reason: format!("{DEVICE_ENV} is not a device: {s:?}"),
        }
        .into()),
    }
}

/// The run of a child rank started by [`train_processes`], on the device
/// in [`DEVICE_ENV`] if the launcher set one (else `opts.device`).
pub fn train_child_rank(
    cfg: &RunConfig,
    opts: &TrainOptions,
    rank: usize,
    world: usize,
    addr: &str,
) -> Result<TrainOutcome> {
    let own = child_device_from_env()?;
    let opts = TrainOptions {
        device: own.unwrap_or(opts.device),
        ..*opts
    };
    let comm = SocketComm::connect(addr, rank, world, RENDEZVOUS_TIMEOUT)?;
    let comm = rank_comm(comm, own)?;
    train_rank(cfg, &opts, comm.as_ref())
}

/// The collective of a rank that met its group over `socket`: with a GPU
/// of its own (`own`, from `--devices`) and the `nccl` feature, NCCL on
/// it; otherwise the socket group itself (any device: each gradient goes
/// through the host).
fn rank_comm(socket: SocketComm, own: Option<DeviceSpec>) -> Result<Box<dyn AllReduce>> {
    #[cfg(feature = "nccl")]
    if let Some(spec @ DeviceSpec::Cuda { .. }) = own {
        let device = spec.to_device()?;
        return Ok(Box::new(crate::parallel::nccl::NcclComm::new(
            socket, &device,
        )?));
    }
    let _ = own;
    Ok(Box::new(socket))
}

/// Trains `cfg` with the ranks of `group` as processes (see the module
/// docs): starts this node's other ranks by running `exe` with `args`,
/// joins the group as the node's first rank and returns its outcome (rank
/// 0's is the run's) once every child has exited.
pub fn train_processes(
    cfg: &RunConfig,
    opts: &TrainOptions,
    group: &ProcessGroup,
    exe: &Path,
    args: &[OsString],
) -> Result<TrainOutcome> {
    let (world, me) = (group.world(), group.first_rank());
    if group.local_ranks == 0 || group.node_rank >= group.nodes {
        return Err(ParallelError::RankOutOfRange { rank: me, world }.into());
    }
    let device_of = |local: usize| -> Result<Option<DeviceSpec>> {
        match &group.devices {
            None => Ok(None),
            Some(list) if list.len() != group.local_ranks => Err(ParallelError::Rendezvous {
                addr: String::new(),
                reason: format!(
                    "{} devices for {} ranks per machine: one device per rank",
                    list.len(),
                    group.local_ranks
                ),
            }
            .into()),
            Some(list) => Ok(Some(DeviceSpec::Cuda {
                ordinal: list[local],
            })),
        }
    };
    let own = device_of(0)?;
    let opts = &TrainOptions {
        device: own.unwrap_or(opts.device),
        ..*opts
    };
    let listener = match (me, &group.rendezvous) {
        (0, addr) => {
            let addr = addr.as_deref().unwrap_or("127.0.0.1:0");
            Some(
                TcpListener::bind(addr).map_err(|e| ParallelError::Rendezvous {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?,
            )
        }
        (_, Some(_)) => None,
        (_, None) => {
            return Err(ParallelError::Rendezvous {
                addr: String::new(),
                reason: "a node other than 0 needs the rendezvous address of node 0".into(),
            }
            .into())
        }
    };
    // The address this node's children connect to: the listener's own
    // port on the loopback when rank 0 is here.
    let child_addr = match &listener {
        Some(l) => {
            let port = l
                .local_addr()
                .map_err(|e| ParallelError::Rendezvous {
                    addr: "the rendezvous listener".into(),
                    reason: e.to_string(),
                })?
                .port();
            format!("127.0.0.1:{port}")
        }
        None => group.rendezvous.clone().unwrap_or_default(),
    };
    let mut children = Children(Vec::new());
    for rank in me + 1..me + group.local_ranks {
        let mut command = Command::new(exe);
        if let Some(device) = device_of(rank - me)? {
            command.env(DEVICE_ENV, device.to_string());
        }
        let child = command
            .args(args)
            .env(RANK_ENV, rank.to_string())
            .env(WORLD_ENV, world.to_string())
            .env(RENDEZVOUS_ENV, &child_addr)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(TrainError::io(
                "starting the process of rank",
                format!("{rank}"),
            ))?;
        children.0.push((rank, child));
    }
    let comm = match listener {
        Some(l) => SocketComm::hub(l, world, RENDEZVOUS_TIMEOUT)?,
        None => SocketComm::connect(&child_addr, me, world, RENDEZVOUS_TIMEOUT)?,
    };
    let comm = rank_comm(comm, own)?;
    let outcome = train_rank(cfg, opts, comm.as_ref());
    drop(comm);
    let waited = children.wait();
    // This rank's own error first: a child's failure is usually its echo.
    let outcome = outcome?;
    waited?;
    Ok(outcome)
}

/// The children of a launcher, killed if it returns before they exit.
struct Children(Vec<(usize, Child)>);

impl Children {
    /// Waits for every child; the first (by rank) that failed is the error.
    fn wait(&mut self) -> Result<()> {
        let mut first = None;
        for (rank, mut child) in self.0.drain(..) {
            let status = child.wait().map_err(TrainError::io(
                "waiting for the process of rank",
                format!("{rank}"),
            ));
            let failed = match status {
                Ok(s) if s.success() => None,
                Ok(s) => Some(TrainError::from(ParallelError::Aborted {
                    rank,
                    reason: format!("its process exited with {s} (its stderr says why)"),
                })),
                Err(e) => Some(e),
            };
            if first.is_none() {
                first = failed;
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
