//! [`SocketComm`]: an [`AllReduce`] group whose ranks are processes, on
//! one machine or several, connected over TCP.
//!
//! Rank 0 is the hub: it listens at the rendezvous address, the other
//! ranks connect to it, and in every collective it receives their buffers
//! in rank order, reduces them with the in-process group's own reduction
//! (`x0 + x1 + ... + x(N-1)`, then `/ N` for a mean) and sends the result
//! back. So a group of processes computes the same bits as the same
//! number of in-process ranks, and a run with `--rank-processes` is a run
//! with threads, bit for bit (`tests/socket_ranks.rs`). A star moves
//! `2 (N - 1)` buffers through rank 0 per collective: fine for CPU ranks
//! and a handful of processes; GPUs use NCCL's rings behind the same
//! trait.
//!
//! Frames (little-endian): a spoke's hello `DGMSRDV1, rank u32, world
//! u32`, answered by `0` (welcome) or an abort frame; `1, op u8, len u64,
//! len x f32` (a contribution); `2, len u64, len x f32` (the result);
//! `3, rank u32, len u32, reason` (an abort, forwarded by the hub to every
//! other rank); `4, len u64, bytes` (rank 0's broadcast of a small blob,
//! the NCCL id: [`SocketComm::broadcast_bytes`]). A closed connection is
//! the rank leaving the group.

use std::io::{BufWriter, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use candle_core::Tensor;

use crate::parallel::all_reduce::{reduce, reduce_through_host, AllReduce, ReduceOp};
use crate::parallel::error::ParallelError;

use frame::{
    connection, left_or, op_byte, protocol, read_abort, read_f32s, read_u64, read_u8, write_abort,
    write_f32s, ABORT, CONTRIBUTION, HELLO, RESULT, WELCOME,
};

pub(crate) mod broadcast;
mod frame;

/// One rank's connections: the hub holds one per other rank (index r - 1
/// for rank r), every other rank one to the hub.
#[derive(Debug)]
enum Links {
    Hub(Vec<TcpStream>),
    Spoke(TcpStream),
}

/// Rank `rank` of a group of processes over TCP (see the module docs).
#[derive(Debug)]
pub struct SocketComm {
    rank: usize,
    world: usize,
    links: Links,
    /// Set by the first failure; every later collective returns it.
    failed: Mutex<Option<(usize, String)>>,
}

impl SocketComm {
    /// Joins the group of `world` ranks meeting at `addr` as `rank`: rank
    /// 0 listens there ([`Self::hub`]), the others connect
    /// ([`Self::connect`]). Gives up after `timeout` without the whole
    /// group.
    pub fn rendezvous(
        addr: &str,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<SocketComm, ParallelError> {
        if rank == 0 {
            let listener = TcpListener::bind(addr).map_err(|e| rendezvous(addr, e))?;
            SocketComm::hub(listener, world, timeout)
        } else {
            SocketComm::connect(addr, rank, world, timeout)
        }
    }

    /// Rank 0 of a group of `world`: accepts the other `world - 1` ranks
    /// on `listener` (each once, all claiming the same group size) within
    /// `timeout`, then welcomes them.
    pub fn hub(
        listener: TcpListener,
        world: usize,
        timeout: Duration,
    ) -> Result<SocketComm, ParallelError> {
        if world == 0 {
            return Err(ParallelError::EmptyGroup);
        }
        let addr = listener
            .local_addr()
            .map_or_else(|_| "the listener".to_string(), |a| a.to_string());
        let deadline = Instant::now() + timeout;
        listener
            .set_nonblocking(true)
            .map_err(|e| rendezvous(&addr, e))?;
        let mut peers: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
        while peers.iter().any(Option::is_none) {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing: Vec<usize> =
                            (1..world).filter(|r| peers[r - 1].is_none()).collect();
                        return Err(ParallelError::Rendezvous {
                            addr,
                            reason: format!("ranks {missing:?} did not arrive within {timeout:?}"),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) => return Err(rendezvous(&addr, e)),
            };
            let (rank, stream) = greet(stream, &addr, deadline)?;
            let refuse = |stream: &TcpStream, reason: String| {
                let _ = write_abort(stream, 0, &reason);
                ParallelError::Rendezvous {
                    addr: addr.clone(),
                    reason,
                }
            };
            match rank {
                (r, w) if w != world => {
                    return Err(refuse(
                        &stream,
                        format!("rank {r} expects a group of {w}, rank 0 one of {world}"),
                    ))
                }
                (r, _) if r == 0 || r >= world => {
                    return Err(refuse(
                        &stream,
                        format!("rank {r} is not in a group of {world}"),
                    ))
                }
                (r, _) if peers[r - 1].is_some() => {
                    return Err(refuse(&stream, format!("rank {r} joined twice")))
                }
                (r, _) => peers[r - 1] = Some(stream),
            }
        }
        let peers: Vec<TcpStream> = peers.into_iter().flatten().collect();
        for (i, p) in peers.iter().enumerate() {
            (&*p)
                .write_all(&[WELCOME])
                .map_err(|source| connection(i + 1, "welcoming it", source))?;
        }
        Ok(SocketComm {
            rank: 0,
            world,
            links: Links::Hub(peers),
            failed: Mutex::new(None),
        })
    }

    /// Rank `rank` (> 0) of a group of `world`: connects to the hub at
    /// `addr`, retrying until `timeout` (the hub may start later), and
    /// waits for its welcome.
    pub fn connect(
        addr: &str,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<SocketComm, ParallelError> {
        if rank == 0 || rank >= world {
            return Err(ParallelError::RankOutOfRange { rank, world });
        }
        let deadline = Instant::now() + timeout;
        let stream = loop {
            let last = match addr.to_socket_addrs() {
                Ok(addrs) => {
                    let mut last = None;
                    for a in addrs {
                        match TcpStream::connect_timeout(&a, Duration::from_secs(1)) {
                            Ok(s) => return joined(s, addr, rank, world, deadline),
                            Err(e) => last = Some(e),
                        }
                    }
                    last
                }
                Err(e) => Some(e),
            };
            if Instant::now() >= deadline {
                break last;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Err(ParallelError::Rendezvous {
            addr: addr.to_string(),
            reason: format!(
                "no rank 0 listening within {timeout:?}{}",
                stream.map_or(String::new(), |e| format!(" ({e})"))
            ),
        })
    }

    fn failure(&self) -> MutexGuard<'_, Option<(usize, String)>> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the group's failure (the first one stays) and returns it.
    fn fail(&self, err: ParallelError) -> ParallelError {
        let mut f = self.failure();
        if f.is_none() {
            let rank = match &err {
                ParallelError::Aborted { rank, .. } | ParallelError::RankLeft { rank } => *rank,
                _ => self.rank,
            };
            *f = Some((rank, err.to_string()));
        }
        err
    }

    /// Reduces `values` in place across the group (see [`AllReduce`]).
    pub fn all_reduce_slice(&self, values: &mut [f32], op: ReduceOp) -> Result<(), ParallelError> {
        if let Some((rank, reason)) = self.failure().clone() {
            return Err(ParallelError::Aborted { rank, reason });
        }
        match &self.links {
            Links::Spoke(hub) => self.spoke_reduce(hub, values, op),
            Links::Hub(peers) => self.hub_reduce(peers, values, op),
        }
        .map_err(|e| self.fail(e))
    }

    fn spoke_reduce(
        &self,
        hub: &TcpStream,
        values: &mut [f32],
        op: ReduceOp,
    ) -> Result<(), ParallelError> {
        let mut w = BufWriter::new(hub);
        let header = [CONTRIBUTION, op_byte(op)];
        w.write_all(&header)
            .and_then(|_| w.write_all(&(values.len() as u64).to_le_bytes()))
            .and_then(|_| write_f32s(&mut w, values))
            .and_then(|_| w.flush())
            .map_err(|e| left_or(0, "sending its contribution", e))?;
        drop(w);
        // Unbuffered: a buffer dropped after this frame could swallow the
        // start of the next (an abort forwarded by the hub).
        let mut r = hub;
        match read_u8(&mut r).map_err(|e| left_or(0, "waiting for the result", e))? {
            RESULT => {
                let len = read_u64(&mut r).map_err(|e| left_or(0, "reading the result", e))?;
                if len != values.len() as u64 {
                    return Err(protocol(
                        0,
                        format!("a result of {len} values for {}", values.len()),
                    ));
                }
                read_f32s(&mut r, values).map_err(|e| left_or(0, "reading the result", e))
            }
            ABORT => Err(read_abort(&mut r, 0)),
            tag => Err(protocol(0, format!("frame {tag} where a result was due"))),
        }
    }

    fn hub_reduce(
        &self,
        peers: &[TcpStream],
        values: &mut [f32],
        op: ReduceOp,
    ) -> Result<(), ParallelError> {
        let mut inputs: Vec<Option<Vec<f32>>> = vec![Some(values.to_vec())];
        for (i, p) in peers.iter().enumerate() {
            let rank = i + 1;
            match self.receive(p, rank, values.len(), op) {
                Ok(v) => inputs.push(Some(v)),
                Err(e) => {
                    // Every other rank learns why the group stops.
                    let (culprit, reason) = match &e {
                        ParallelError::Aborted { rank, reason } => (*rank, reason.clone()),
                        ParallelError::RankLeft { rank } => (*rank, "it left the group".into()),
                        other => (rank, other.to_string()),
                    };
                    for (j, q) in peers.iter().enumerate() {
                        if j != i {
                            let _ = write_abort(q, culprit, &reason);
                        }
                    }
                    return Err(e);
                }
            }
        }
        let out = reduce(&inputs, op);
        for (i, p) in peers.iter().enumerate() {
            let mut w = BufWriter::new(p);
            w.write_all(&[RESULT])
                .and_then(|_| w.write_all(&(out.len() as u64).to_le_bytes()))
                .and_then(|_| write_f32s(&mut w, &out))
                .and_then(|_| w.flush())
                .map_err(|e| left_or(i + 1, "sending the result", e))?;
        }
        values.copy_from_slice(&out);
        Ok(())
    }

    /// Rank `rank`'s contribution, checked against the hub's length and op.
    fn receive(
        &self,
        p: &TcpStream,
        rank: usize,
        len: usize,
        op: ReduceOp,
    ) -> Result<Vec<f32>, ParallelError> {
        let mut r = p;
        let tag = read_u8(&mut r).map_err(|e| left_or(rank, "waiting for its contribution", e))?;
        match tag {
            CONTRIBUTION => {}
            ABORT => return Err(read_abort(&mut r, rank)),
            tag => {
                return Err(protocol(
                    rank,
                    format!("frame {tag} where a contribution was due"),
                ))
            }
        }
        let their_op = read_u8(&mut r).map_err(|e| left_or(rank, "reading its contribution", e))?;
        let their_len =
            read_u64(&mut r).map_err(|e| left_or(rank, "reading its contribution", e))?;
        let their_op = match their_op {
            0 => ReduceOp::Sum,
            1 => ReduceOp::Mean,
            b => return Err(protocol(rank, format!("reduction {b}"))),
        };
        if their_len != len as u64 {
            return Err(ParallelError::LengthMismatch {
                rank,
                len: their_len as usize,
                expected: len,
            });
        }
        if their_op != op {
            return Err(ParallelError::OpMismatch {
                rank,
                op: their_op,
                expected: op,
            });
        }
        let mut v = vec![0f32; len];
        read_f32s(&mut r, &mut v).map_err(|e| left_or(rank, "reading its contribution", e))?;
        Ok(v)
    }
}

impl AllReduce for SocketComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    /// Through the host, as the in-process group.
    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor, ParallelError> {
        reduce_through_host(self, tensor, |values| self.all_reduce_slice(values, op))
    }

    fn abort(&self, reason: &str) {
        {
            let mut f = self.failure();
            if f.is_none() {
                *f = Some((self.rank, reason.to_string()));
            }
        }
        match &self.links {
            Links::Spoke(hub) => {
                let _ = write_abort(hub, self.rank, reason);
            }
            Links::Hub(peers) => {
                for p in peers {
                    let _ = write_abort(p, 0, reason);
                }
            }
        }
    }
}

/// Reads a spoke's hello: its (rank, world).
fn greet(
    stream: TcpStream,
    addr: &str,
    deadline: Instant,
) -> Result<((usize, usize), TcpStream), ParallelError> {
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_read_timeout(Some(wait)))
        .and_then(|_| stream.set_nodelay(true))
        .map_err(|e| rendezvous(addr, e))?;
    let mut hello = [0u8; 16];
    (&stream)
        .read_exact(&mut hello)
        .map_err(|e| rendezvous(addr, e))?;
    if &hello[..8] != HELLO {
        return Err(ParallelError::Rendezvous {
            addr: addr.to_string(),
            reason: "a connection that is not a dgms rank (wrong greeting)".to_string(),
        });
    }
    let word = |i: usize| u32::from_le_bytes([hello[i], hello[i + 1], hello[i + 2], hello[i + 3]]);
    // Collectives wait as long as the slowest rank needs (rank 0
    // evaluates between epochs while the others wait).
    stream
        .set_read_timeout(None)
        .map_err(|e| rendezvous(addr, e))?;
    Ok(((word(8) as usize, word(12) as usize), stream))
}

/// A spoke's side of the rendezvous on a connected `stream`.
fn joined(
    stream: TcpStream,
    addr: &str,
    rank: usize,
    world: usize,
    deadline: Instant,
) -> Result<SocketComm, ParallelError> {
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    stream
        .set_nodelay(true)
        .and_then(|_| stream.set_read_timeout(Some(wait)))
        .map_err(|e| rendezvous(addr, e))?;
    let mut hello = HELLO.to_vec();
    hello.extend((rank as u32).to_le_bytes());
    hello.extend((world as u32).to_le_bytes());
    (&stream)
        .write_all(&hello)
        .map_err(|e| rendezvous(addr, e))?;
    let mut r = &stream;
    match read_u8(&mut r).map_err(|e| rendezvous(addr, e))? {
        WELCOME => {}
        ABORT => {
            return Err(ParallelError::Rendezvous {
                addr: addr.to_string(),
                reason: read_abort(&mut r, 0).to_string(),
            })
        }
        tag => {
            return Err(ParallelError::Rendezvous {
                addr: addr.to_string(),
                reason: format!("answered with frame {tag} instead of a welcome"),
            })
        }
    }
    stream
        .set_read_timeout(None)
        .map_err(|e| rendezvous(addr, e))?;
    Ok(SocketComm {
        rank,
        world,
        links: Links::Spoke(stream),
        failed: Mutex::new(None),
    })
}

fn rendezvous(addr: &str, e: std::io::Error) -> ParallelError {
    ParallelError::Rendezvous {
        addr: addr.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests;
