//! The frames of a socket group on the wire (see the `socket` module
//! docs): their tags, little-endian integers and f32 payloads, abort
//! frames, and the errors a failed read or write maps to.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use crate::parallel::all_reduce::ReduceOp;
use crate::parallel::error::ParallelError;

pub(super) const HELLO: &[u8; 8] = b"DGMSRDV1";
pub(super) const WELCOME: u8 = 0;
pub(super) const CONTRIBUTION: u8 = 1;
pub(super) const RESULT: u8 = 2;
pub(super) const ABORT: u8 = 3;
/// Longest abort reason sent (the rest is cut).
const MAX_REASON: usize = 4096;

pub(super) fn op_byte(op: ReduceOp) -> u8 {
    match op {
        ReduceOp::Sum => 0,
        ReduceOp::Mean => 1,
    }
}

pub(super) fn connection(peer: usize, what: &'static str, source: std::io::Error) -> ParallelError {
    ParallelError::Connection { peer, what, source }
}

pub(super) fn protocol(peer: usize, reason: String) -> ParallelError {
    ParallelError::Protocol { peer, reason }
}

/// A closed connection is the peer leaving; anything else an I/O failure.
pub(super) fn left_or(peer: usize, what: &'static str, e: std::io::Error) -> ParallelError {
    match e.kind() {
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => ParallelError::RankLeft { rank: peer },
        _ => connection(peer, what, e),
    }
}

pub(super) fn write_abort(stream: &TcpStream, rank: usize, reason: &str) -> std::io::Result<()> {
    let mut cut = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut frame = vec![ABORT];
    frame.extend((rank as u32).to_le_bytes());
    frame.extend((cut as u32).to_le_bytes());
    frame.extend(&reason.as_bytes()[..cut]);
    let mut w = stream;
    w.write_all(&frame)
}

/// The rest of an abort frame (after its tag) as the error it reports;
/// `from` is the rank that sent it.
pub(super) fn read_abort(r: &mut impl Read, from: usize) -> ParallelError {
    let mut head = [0u8; 8];
    if let Err(e) = r.read_exact(&mut head) {
        return left_or(from, "reading an abort", e);
    }
    let rank = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let len = (u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize).min(MAX_REASON);
    let mut reason = vec![0u8; len];
    if let Err(e) = r.read_exact(&mut reason) {
        return left_or(from, "reading an abort", e);
    }
    ParallelError::Aborted {
        rank,
        reason: String::from_utf8_lossy(&reason).into_owned(),
    }
}

pub(super) fn read_u8(r: &mut impl Read) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

pub(super) fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

pub(super) fn write_f32s(w: &mut impl Write, values: &[f32]) -> std::io::Result<()> {
    for chunk in values.chunks(4096) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_all(&bytes)?;
    }
    Ok(())
}

pub(super) fn read_f32s(r: &mut impl Read, out: &mut [f32]) -> std::io::Result<()> {
    let mut bytes = vec![0u8; 4 * 4096];
    for chunk in out.chunks_mut(4096) {
        let b = &mut bytes[..4 * chunk.len()];
        r.read_exact(b)?;
        for (o, c) in chunk.iter_mut().zip(b.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    Ok(())
}
