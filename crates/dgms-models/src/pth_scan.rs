//! A bounded pre-scan of a `.pth` file (the zip + pickle of `torch.save`),
//! run before candle's pickle reader sees it.
//!
//! candle's reader builds a tree of objects with recursion (clone, drop,
//! debug printing), allocates a declared string length before reading it,
//! copies a memo entry on every get, and reads the zip's entries at the
//! sizes they declare. A hostile file could thus overflow the stack,
//! exhaust memory or spin for a long time. This walker goes over every
//! pickle opcode of protocols 0-5 knowing each one's argument length, and
//! simulates the stack with one small record per object (its nesting depth
//! and the bytes a copy of it would take), so it can refuse such a file in
//! time linear in its size, before anything large is allocated.
//!
//! The limits are far above what `torch.save` writes for a state dict or a
//! training checkpoint (nested dicts, optimizer state, lists of floats):
//! those nest about ten deep and their pickles are kilobytes.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use zip::CompressionMethod;

/// Most entries a `.pth` zip may hold (one per storage, plus a few).
pub const MAX_ZIP_ENTRIES: usize = 16_384;
/// Largest pickle entry (`data.pkl`) read.
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Most opcodes in one pickle.
pub const MAX_OPCODES: u64 = 16_000_000;
/// Most objects on the pickle stack at once.
pub const MAX_STACK: usize = 100_000;
/// Most marks on the pickle stack at once.
pub const MAX_MARKS: usize = 1_000;
/// Deepest nesting of objects (candle recurses over it).
pub const MAX_NESTING: u32 = 200;
/// Most memo entries.
pub const MAX_MEMO: usize = 1 << 20;
/// Most bytes the reader may allocate for objects, memo copies included.
pub const MAX_OBJECT_BYTES: u64 = 256 << 20;
/// Bytes counted per object (the size of candle's `Object` and its box).
const OBJECT_BYTES: u64 = 64;

/// Why a `.pth` file was refused before parsing.
#[derive(Debug, thiserror::Error)]
pub enum PthScanError {
    /// The zip archive cannot be opened or an entry cannot be read.
    #[error("zip archive: {0}")]
    Zip(String),
    /// A zip entry is unusable (compressed, or sizes past the file's end).
    #[error("zip entry `{entry}`: {what}")]
    Entry { entry: String, what: String },
    /// A pickle exceeds one of this module's limits.
    #[error("pickle `{entry}` at byte {offset}: {what} ({found} > limit {limit})")]
    Limit {
        entry: String,
        offset: u64,
        what: &'static str,
        found: u64,
        limit: u64,
    },
    /// A pickle is malformed (truncated, unknown opcode, stack underflow).
    #[error("pickle `{entry}` at byte {offset}: {what}")]
    Malformed {
        entry: String,
        offset: u64,
        what: String,
    },
}

/// Checks the zip entries and every `*data.pkl` pickle of the `.pth` file at
/// `path` (of `file_len` bytes). Returns each entry's size by name, which
/// bounds the tensors stored in it.
pub fn scan(path: &Path, file_len: u64) -> Result<HashMap<String, u64>, PthScanError> {
    let zip_err = |e: &dyn std::fmt::Display| PthScanError::Zip(e.to_string());
    let file = std::fs::File::open(path).map_err(|e| zip_err(&e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| zip_err(&e))?;
    if zip.len() > MAX_ZIP_ENTRIES {
        return Err(PthScanError::Zip(format!(
            "{} entries, more than the limit of {MAX_ZIP_ENTRIES}",
            zip.len()
        )));
    }
    let mut sizes = HashMap::with_capacity(zip.len());
    let mut pickles = Vec::new();
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|e| zip_err(&e))?;
        let name = entry.name().map_err(|e| zip_err(&e))?.into_owned();
        let bad = |what: String| PthScanError::Entry {
            entry: name.clone(),
            what,
        };
        if entry.compression() != CompressionMethod::Stored {
            // torch.save stores every entry; candle's zip has no decompressor.
            return Err(bad(format!(
                "compressed ({}); torch.save stores entries uncompressed",
                entry.compression()
            )));
        }
        let size = entry.size();
        if size != entry.compressed_size() {
            return Err(bad(format!(
                "stored entry declares {size} bytes but holds {}",
                entry.compressed_size()
            )));
        }
        let start = entry.data_start().unwrap_or(u64::MAX);
        if start.checked_add(size).is_none_or(|end| end > file_len) {
            return Err(bad(format!(
                "declares {size} bytes from byte {start}, past the end of the {file_len}-byte file"
            )));
        }
        if name.ends_with("data.pkl") {
            if size > MAX_PICKLE_BYTES {
                return Err(PthScanError::Limit {
                    entry: name,
                    offset: 0,
                    what: "pickle size in bytes",
                    found: size,
                    limit: MAX_PICKLE_BYTES,
                });
            }
            pickles.push(i);
        }
        sizes.insert(name, size);
    }
    for i in pickles {
        let entry = zip.by_index(i).map_err(|e| zip_err(&e))?;
        let name = entry.name().map_err(|e| zip_err(&e))?.into_owned();
        let mut bytes = Vec::new();
        // The size was checked above; `take` keeps a lying reader bounded.
        entry
            .take(MAX_PICKLE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| zip_err(&e))?;
        scan_pickle(&name, &bytes)?;
    }
    Ok(sizes)
}

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
