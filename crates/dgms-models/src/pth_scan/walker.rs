//! The pickle walker of [`super`]: one record per object (nesting depth,
//! bytes a copy takes) in place of the object, every opcode of protocols
//! 0-5 with its argument length and stack effect.

use std::collections::HashMap;

use super::{
    PthScanError, MAX_MARKS, MAX_MEMO, MAX_NESTING, MAX_OBJECT_BYTES, MAX_OPCODES, MAX_STACK,
    OBJECT_BYTES,
};

/// What the walker knows of one object on the stack or in the memo.
#[derive(Clone, Copy, Debug)]
struct Obj {
    /// Nesting depth (a leaf is 1).
    depth: u32,
    /// Bytes a copy of it takes.
    bytes: u64,
    is_mark: bool,
}

impl Obj {
    fn leaf(payload: u64) -> Self {
        Obj {
            depth: 1,
            bytes: OBJECT_BYTES.saturating_add(payload),
            is_mark: false,
        }
    }
}

/// The simulated pickle machine.
struct Walker<'a> {
    entry: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for errors.
    op_at: usize,
    stack: Vec<Obj>,
    marks: usize,
    memo: HashMap<u64, Obj>,
    allocated: u64,
}

/// Scans one pickle (the bytes of a `data.pkl` entry named `entry`).
pub fn scan_pickle(entry: &str, bytes: &[u8]) -> Result<(), PthScanError> {
    Walker {
        entry,
        bytes,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        marks: 0,
        memo: HashMap::new(),
        allocated: 0,
    }
    .run()
}

impl Walker<'_> {
    fn malformed(&self, what: impl Into<String>) -> PthScanError {
        PthScanError::Malformed {
            entry: self.entry.to_string(),
            offset: self.op_at as u64,
            what: what.into(),
        }
    }

    fn limit(&self, what: &'static str, found: u64, limit: u64) -> PthScanError {
        PthScanError::Limit {
            entry: self.entry.to_string(),
            offset: self.op_at as u64,
            what,
            found,
            limit,
        }
    }

    fn take(&mut self, n: u64) -> Result<&[u8], PthScanError> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(self.limit("declared length exceeds the bytes left", n, left));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn uint(&mut self, n: u64) -> Result<u64, PthScanError> {
        let b = self.take(n)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// A newline-terminated argument (protocol 0 opcodes).
    fn line(&mut self) -> Result<&[u8], PthScanError> {
        let rest = &self.bytes[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.malformed("truncated: a text argument has no newline"));
        };
        self.take(n as u64 + 1)
    }

    /// A length-prefixed payload whose length takes `len_bytes` bytes.
    fn counted(&mut self, len_bytes: u64) -> Result<u64, PthScanError> {
        let n = self.uint(len_bytes)?;
        if len_bytes == 4 && n > i32::MAX as u64 && matches!(self.bytes[self.op_at], b'T' | 0x8b) {
            return Err(self.malformed("negative length"));
        }
        self.take(n)?;
        Ok(n)
    }

    fn charge(&mut self, bytes: u64) -> Result<(), PthScanError> {
        self.allocated = self.allocated.saturating_add(bytes);
        if self.allocated > MAX_OBJECT_BYTES {
            return Err(self.limit(
                "bytes of objects (memo copies included)",
                self.allocated,
                MAX_OBJECT_BYTES,
            ));
        }
        Ok(())
    }

    fn push(&mut self, obj: Obj) -> Result<(), PthScanError> {
        if obj.depth > MAX_NESTING {
            return Err(self.limit("nesting depth", obj.depth.into(), MAX_NESTING.into()));
        }
        if self.stack.len() >= MAX_STACK {
            return Err(self.limit("stack size", self.stack.len() as u64 + 1, MAX_STACK as u64));
        }
        if obj.is_mark {
            self.marks += 1;
            if self.marks > MAX_MARKS {
                return Err(self.limit("marks on the stack", self.marks as u64, MAX_MARKS as u64));
            }
        }
        self.stack.push(obj);
        Ok(())
    }

    fn push_leaf(&mut self, payload: u64) -> Result<(), PthScanError> {
        let obj = Obj::leaf(payload);
        self.charge(obj.bytes)?;
        self.push(obj)
    }

    fn pop(&mut self) -> Result<Obj, PthScanError> {
        let obj = self
            .stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))?;
        if obj.is_mark {
            self.marks -= 1;
        }
        Ok(obj)
    }

    /// Pops everything above the topmost mark, and the mark.
    fn pop_to_mark(&mut self) -> Result<Vec<Obj>, PthScanError> {
        let at = self
            .stack
            .iter()
            .rposition(|o| o.is_mark)
            .ok_or_else(|| self.malformed("no mark on the stack"))?;
        let items = self.stack.split_off(at + 1);
        self.pop()?;
        Ok(items)
    }

    /// A new object holding `items`.
    fn container(items: &[Obj]) -> Obj {
        items.iter().fold(Obj::leaf(0), |acc, o| Obj {
            depth: acc.depth.max(o.depth.saturating_add(1)),
            bytes: acc.bytes.saturating_add(o.bytes),
            is_mark: false,
        })
    }

    fn push_container(&mut self, items: &[Obj]) -> Result<(), PthScanError> {
        self.charge(OBJECT_BYTES)?;
        self.push(Self::container(items))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Obj>, PthScanError> {
        (0..n).map(|_| self.pop()).collect()
    }

    /// Adds `items` to the object on top of the stack (APPEND, SETITEM...).
    fn extend_top(&mut self, items: &[Obj]) -> Result<(), PthScanError> {
        let top = self.pop()?;
        let mut grown = Self::container(items);
        grown.depth = grown.depth.max(top.depth);
        grown.bytes = grown.bytes.saturating_add(top.bytes);
        self.charge(OBJECT_BYTES)?;
        self.push(grown)
    }

    fn memo_put(&mut self, id: u64) -> Result<(), PthScanError> {
        let top = *self
            .stack
            .last()
            .ok_or_else(|| self.malformed("memo put on an empty stack"))?;
        self.charge(top.bytes)?;
        if self.memo.insert(id, top).is_none() && self.memo.len() > MAX_MEMO {
            return Err(self.limit("memo entries", self.memo.len() as u64, MAX_MEMO as u64));
        }
        Ok(())
    }

    fn memo_get(&mut self, id: u64) -> Result<(), PthScanError> {
        let obj = *self
            .memo
            .get(&id)
            .ok_or_else(|| self.malformed(format!("memo entry {id} is missing")))?;
        self.charge(obj.bytes)?;
        self.push(obj)
    }

    /// The decimal id of a text GET / PUT.
    fn text_id(&mut self) -> Result<u64, PthScanError> {
        let line = self.line()?;
        let id = std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.trim_end().parse::<u64>().ok());
        id.ok_or_else(|| self.malformed("memo id is not a number"))
    }

    fn run(mut self) -> Result<(), PthScanError> {
        let mut opcodes = 0u64;
        loop {
            self.op_at = self.pos;
            let Some(&op) = self.bytes.get(self.pos) else {
                return Err(self.malformed("truncated: no STOP opcode"));
            };
            self.pos += 1;
            opcodes += 1;
            if opcodes > MAX_OPCODES {
                return Err(self.limit("opcodes", opcodes, MAX_OPCODES));
            }
            if self.step(op)? {
                return Ok(());
            }
        }
    }

    /// Runs one opcode; `true` at STOP.
    fn step(&mut self, op: u8) -> Result<bool, PthScanError> {
        match op {
            b'.' => return Ok(true),
            0x80 => {
                let version = self.uint(1)?;
                if version > 5 {
                    return Err(self.malformed(format!("unknown protocol {version}")));
                }
            }
            0x95 => {
                self.uint(8)?; // FRAME: a size hint.
            }
            b'(' => {
                self.charge(OBJECT_BYTES)?;
                self.push(Obj {
                    is_mark: true,
                    ..Obj::leaf(0)
                })?;
            }
            // Leaves with fixed-size arguments.
            b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | 0x8f | 0x97 => self.push_leaf(0)?,
            b'K' | 0x82 => self.fixed_leaf(1)?,
            b'M' | 0x83 => self.fixed_leaf(2)?,
            b'J' | 0x84 => self.fixed_leaf(4)?,
            b'G' => self.fixed_leaf(8)?,
            0x8a => {
                let n = self.uint(1)?;
                if n > 8 {
                    return Err(self.limit("LONG1 integer width in bytes", n, 8));
                }
                self.take(n)?;
                self.push_leaf(0)?;
            }
            // Length-prefixed strings and bytes.
            b'U' | b'C' | 0x8c => self.counted_leaf(1)?,
            b'T' | b'X' | b'B' | 0x8b => self.counted_leaf(4)?,
            0x8d | 0x8e | 0x96 => self.counted_leaf(8)?,
            // Newline-terminated leaves (protocol 0).
            b'I' | b'L' | b'F' | b'S' | b'V' | b'P' => {
                let n = self.line()?.len() as u64;
                self.push_leaf(n)?;
            }
            b'c' => {
                let n = self.line()?.len() as u64;
                let m = self.line()?.len() as u64;
                self.push_leaf(n.saturating_add(m))?;
            }
            b'i' => {
                self.line()?;
                self.line()?;
                let items = self.pop_to_mark()?;
                self.push_container(&items)?;
            }
            // Memo.
            b'h' => {
                let id = self.uint(1)?;
                self.memo_get(id)?;
            }
            b'j' => {
                let id = self.uint(4)?;
                self.memo_get(id)?;
            }
            b'g' => {
                let id = self.text_id()?;
                self.memo_get(id)?;
            }
            b'q' => {
                let id = self.uint(1)?;
                self.memo_put(id)?;
            }
            b'r' => {
                let id = self.uint(4)?;
                self.memo_put(id)?;
            }
            b'p' => {
                let id = self.text_id()?;
                self.memo_put(id)?;
            }
            0x94 => {
                let id = self.memo.len() as u64;
                self.memo_put(id)?;
            }
            // Stack manipulation.
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_to_mark()?;
            }
            b'2' => {
                let top = *self
                    .stack
                    .last()
                    .ok_or_else(|| self.malformed("DUP on an empty stack"))?;
                self.charge(top.bytes)?;
                self.push(top)?;
            }
            0x98 => {
                self.stack
                    .last()
                    .ok_or_else(|| self.malformed("READONLY_BUFFER on an empty stack"))?;
            }
            // Objects built from the top of the stack.
            b'Q' | 0x85 => self.build_from(1)?,
            b'R' | b'b' | 0x81 | 0x86 | 0x93 => self.build_from(2)?,
            0x87 | 0x92 => self.build_from(3)?,
            b't' | b'l' | b'd' | b'o' | 0x91 => {
                let items = self.pop_to_mark()?;
                self.push_container(&items)?;
            }
            // Containers grown in place.
            b'a' => {
                let items = self.pop_n(1)?;
                self.extend_top(&items)?;
            }
            b's' => {
                let items = self.pop_n(2)?;
                self.extend_top(&items)?;
            }
            b'e' | b'u' | 0x90 => {
                let items = self.pop_to_mark()?;
                self.extend_top(&items)?;
            }
            other => return Err(self.malformed(format!("unknown opcode 0x{other:02x}"))),
        }
        Ok(false)
    }

    fn fixed_leaf(&mut self, n: u64) -> Result<(), PthScanError> {
        self.take(n)?;
        self.push_leaf(0)
    }

    fn counted_leaf(&mut self, len_bytes: u64) -> Result<(), PthScanError> {
        let n = self.counted(len_bytes)?;
        self.push_leaf(n)
    }

    fn build_from(&mut self, n: usize) -> Result<(), PthScanError> {
        let items = self.pop_n(n)?;
        self.push_container(&items)
    }
}
