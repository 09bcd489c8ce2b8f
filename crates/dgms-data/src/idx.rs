//! The idx format of MNIST and Fashion-MNIST, gzip-compressed or raw.
//!
//! A file is a big-endian header — magic `0x0000_08DD` (`08` = unsigned
//! bytes, `DD` = number of dimensions), then one u32 per dimension — and the
//! bytes. Images are `n x rows x cols` (magic `0x0803`), labels `n` (`0x0801`).
//! Whether a file is gzip is decided by its first two bytes, not its name.
//!
//! A file is read as a stream: the header first, then exactly the bytes it
//! implies (checked arithmetic, at most [`MAX_IDX_BYTES`]), then a short
//! probe for trailing data; so a gzip bomb is never inflated beyond the
//! header's extent plus [`TRAILING_PROBE`] bytes.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};

use crate::dataset::{Dataset, DatasetKind, Splits};
use crate::error::{DataError, Result};

/// Magic number of an idx images file (u8, 3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an idx labels file (u8, 1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Grey images read from an idx file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    /// `n * rows * cols` bytes, row-major per image.
    pub pixels: Vec<u8>,
}

/// Largest idx payload accepted, in bytes (MNIST's largest file holds
/// 47 MB), so a header cannot make the reader allocate without bound.
pub const MAX_IDX_BYTES: u64 = 1 << 30;
/// Bytes read past the extent a header implies to report trailing data;
/// a gzip bomb is never inflated further than this.
pub const TRAILING_PROBE: u64 = 1 << 16;
/// Largest file [`read_maybe_gz`] reads (after gunzip): CIFAR-10 batches
/// are 30.7 MB.
pub const MAX_WHOLE_FILE_BYTES: u64 = 1 << 28;

/// The error of a failed open or read of `path`.
fn io_error(path: &Path, what: &str, gz: bool, source: std::io::Error) -> DataError {
    if source.kind() == std::io::ErrorKind::NotFound {
        DataError::MissingFile {
            path: path.to_path_buf(),
            what: what.to_string(),
        }
    } else if gz {
        DataError::Io {
            path: path.to_path_buf(),
            what: format!("{what} (gzip stream corrupt or truncated)"),
            source,
        }
    } else {
        DataError::Io {
            path: path.to_path_buf(),
            what: what.to_string(),
            source,
        }
    }
}

/// Opens `path` as a stream of its bytes, gunzipped when it starts with the
/// gzip magic; also returns whether it is gzip.
fn open_maybe_gz(path: &Path, what: &str) -> Result<(Box<dyn Read>, bool)> {
    let file = File::open(path).map_err(|e| io_error(path, what, false, e))?;
    let mut reader = BufReader::new(file);
    let head = reader
        .fill_buf()
        .map_err(|e| io_error(path, what, false, e))?;
    if head.starts_with(&GZIP_MAGIC) {
        Ok((Box::new(MultiGzDecoder::new(reader)), true))
    } else {
        Ok((Box::new(reader), false))
    }
}

/// Up to `n` bytes of `reader` (fewer at its end); allocation grows with
/// the bytes actually read, never with `n` alone.
fn read_up_to(reader: &mut dyn Read, n: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(n).read_to_end(&mut out)?;
    Ok(out)
}

/// Reads a whole file of at most [`MAX_WHOLE_FILE_BYTES`] (after gunzip),
/// gunzipping it when it starts with the gzip magic. Returns the bytes and
/// whether they were decompressed.
pub(crate) fn read_maybe_gz(path: &Path, what: &str) -> Result<(Vec<u8>, bool)> {
    let (mut reader, gz) = open_maybe_gz(path, what)?;
    let bytes = read_up_to(&mut reader, MAX_WHOLE_FILE_BYTES + 1)
        .map_err(|e| io_error(path, what, gz, e))?;
    if bytes.len() as u64 > MAX_WHOLE_FILE_BYTES {
        return Err(DataError::TrailingData {
            path: path.to_path_buf(),
            what: format!("{what} (larger than the limit{})", gz_note(gz)),
            expected: MAX_WHOLE_FILE_BYTES,
            found: bytes.len() as u64,
        });
    }
    Ok((bytes, gz))
}

fn gz_note(gz: bool) -> &'static str {
    if gz {
        ", after gunzip"
    } else {
        ""
    }
}

/// What a magic number looks like, for error messages.
fn describe_magic(magic: u32) -> String {
    match magic {
        IMAGES_MAGIC => "an idx images file".to_string(),
        LABELS_MAGIC => "an idx labels file".to_string(),
        m if m >> 8 == 0x08 => format!("an idx u8 file with {} dimensions", m & 0xff),
        m if m >> 16 == 0 => format!("an idx file of data type 0x{:02x}", (m >> 8) & 0xff),
        _ => "not an idx file".to_string(),
    }
}

/// Reads an idx file of the given `magic` as a stream: the header first,
/// then exactly the bytes it implies (checked arithmetic, at most
/// [`MAX_IDX_BYTES`]), then at most [`TRAILING_PROBE`] more to refuse a
/// longer file. Returns the dimension sizes and the payload.
fn read_idx(path: &Path, magic: u32, long_what: &str, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let (mut reader, gz) = open_maybe_gz(path, long_what)?;
    let io = |e| io_error(path, long_what, gz, e);
    let dims = (magic & 0xff) as usize;
    let header = 4 + 4 * dims;
    let note = gz_note(gz);
    let truncated = |expected: u64, found: usize, what: String| DataError::Truncated {
        path: path.to_path_buf(),
        what,
        expected,
        found: found as u64,
    };
    let head = read_up_to(&mut reader, 4).map_err(io)?;
    let Ok(magic_bytes) = <[u8; 4]>::try_from(head.as_slice()) else {
        return Err(truncated(
            header as u64,
            head.len(),
            format!("{what} (a {header}-byte header at least{note})"),
        ));
    };
    let found = u32::from_be_bytes(magic_bytes);
    if found != magic {
        return Err(DataError::WrongMagic {
            path: path.to_path_buf(),
            what: format!("{what}; the file looks like {}", describe_magic(found)),
            expected: magic,
            found,
        });
    }
    let dim_bytes = read_up_to(&mut reader, 4 * dims as u64).map_err(io)?;
    if dim_bytes.len() < 4 * dims {
        return Err(truncated(
            header as u64,
            4 + dim_bytes.len(),
            format!("{what} (a {header}-byte header at least{note})"),
        ));
    }
    let sizes: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let payload = sizes
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| DataError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("dimensions {sizes:?} overflow"),
        })?;
    if payload > MAX_IDX_BYTES {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            reason: format!(
                "dimensions {sizes:?} make {payload} bytes, more than the limit of {MAX_IDX_BYTES}"
            ),
        });
    }
    let shape = sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" x ");
    let described = format!("{what} (header: {shape}{note})");
    let expected = header as u64 + payload;
    let body = read_up_to(&mut reader, payload).map_err(io)?;
    if (body.len() as u64) < payload {
        return Err(truncated(expected, header + body.len(), described));
    }
    let extra =
        std::io::copy(&mut reader.take(TRAILING_PROBE), &mut std::io::sink()).map_err(io)?;
    if extra > 0 {
        let at_least = if extra == TRAILING_PROBE {
            "at least "
        } else {
            ""
        };
        return Err(DataError::TrailingData {
            path: path.to_path_buf(),
            what: format!("{described} (read {at_least}{extra} bytes past it)"),
            expected,
            found: expected + extra,
        });
    }
    Ok((sizes, body))
}

/// Reads an idx images file (`.gz` or raw).
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let what = "idx images file (magic 0x00000803, n x rows x cols bytes)";
    let (sizes, pixels) = read_idx(path, IMAGES_MAGIC, what, "idx images file")?;
    // `parse` returns one size per dimension of the magic, here 3.
    let &[n, rows, cols] = sizes.as_slice() else {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("dimensions {sizes:?}, expected n x rows x cols"),
        });
    };
    if rows == 0 || cols == 0 {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("images of {rows} x {cols} pixels, expected both sizes > 0"),
        });
    }
    Ok(IdxImages {
        n,
        rows,
        cols,
        pixels,
    })
}

/// Reads an idx labels file (`.gz` or raw) and checks every label is
/// `< classes`.
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<u8>> {
    let what = "idx labels file (magic 0x00000801, n bytes)";
    let (_, labels) = read_idx(path, LABELS_MAGIC, what, "idx labels file")?;
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= classes)
    {
        return Err(DataError::BadLabel {
            path: path.to_path_buf(),
            index,
            label,
            classes,
        });
    }
    Ok(labels)
}

/// Reads a pair of images and labels files into a one-channel dataset of
/// 10 classes, checking that their counts agree.
pub fn read_split(
    images_path: &Path,
    labels_path: &Path,
    kind: DatasetKind,
    name: impl Into<String>,
) -> Result<Dataset> {
    let images = read_images(images_path)?;
    let labels = read_labels(labels_path, kind.classes())?;
    if images.n != labels.len() {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: images.n,
            labels_path: labels_path.to_path_buf(),
            labels: labels.len(),
        });
    }
    Dataset::new(
        name,
        kind,
        images.pixels,
        labels,
        1,
        images.rows,
        images.cols,
        kind.classes(),
    )
}

/// The first existing file among the accepted names of `stem` (e.g.
/// `train-images-idx3-ubyte`): gzip, raw, or the dotted variant some mirrors
/// use (`train-images.idx3-ubyte`).
fn find(dir: &Path, stem: &str, what: &str) -> Result<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    let candidates = [
        format!("{stem}.gz"),
        stem.to_string(),
        format!("{dotted}.gz"),
        dotted,
    ];
    candidates
        .iter()
        .map(|c| dir.join(c))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::MissingInDir {
            dir: dir.to_path_buf(),
            what: what.to_string(),
            candidates: candidates.to_vec(),
        })
}

/// Loads the train (`train-*`) and test (`t10k-*`) splits from a folder of
/// MNIST or Fashion-MNIST idx files.
pub fn load_dir(dir: &Path, kind: DatasetKind, name: &str) -> Result<Splits> {
    if !dir.is_dir() {
        return Err(DataError::MissingFile {
            path: dir.to_path_buf(),
            what: format!(
                "a folder holding the {kind} idx files (train-images-idx3-ubyte.gz, \
                 train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)"
            ),
        });
    }
    let split = |split: &str| -> Result<Dataset> {
        let images = find(
            dir,
            &format!("{split}-images-idx3-ubyte"),
            &format!("{kind} {split} images"),
        )?;
        let labels = find(
            dir,
            &format!("{split}-labels-idx1-ubyte"),
            &format!("{kind} {split} labels"),
        )?;
        read_split(&images, &labels, kind, format!("{name}/{split}"))
    };
    Ok(Splits {
        train: split("train")?,
        test: split("t10k")?,
    })
}

/// Writes bytes to `path`, gzip-compressed (with mtime 0, so the output is
/// deterministic) when the name ends in `.gz`.
fn write_maybe_gz(path: &Path, header: &[u8], payload: &[u8], what: &str) -> Result<()> {
    let gz = path.extension().is_some_and(|e| e == "gz");
    dgms_io::write_atomic_with(path, |file| {
        if gz {
            let mut w = GzBuilder::new()
                .mtime(0)
                .write(file, Compression::default());
            w.write_all(header)
                .and_then(|()| w.write_all(payload))
                .and_then(|()| w.finish().map(drop))
        } else {
            file.write_all(header)
                .and_then(|()| file.write_all(payload))
        }
    })
    .map_err(|source| DataError::Write {
        what: what.to_string(),
        source: Box::new(source),
    })
}

fn u32_dim(path: &Path, value: usize) -> Result<[u8; 4]> {
    u32::try_from(value)
        .map(u32::to_be_bytes)
        .map_err(|_| DataError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("dimension {value} does not fit the idx format's u32"),
        })
}

/// Writes `pixels` (`n * rows * cols` bytes) as an idx images file; `.gz`
/// names are gzip-compressed.
pub fn write_images(path: &Path, rows: usize, cols: usize, pixels: &[u8]) -> Result<()> {
    let per_image = rows.saturating_mul(cols);
    if per_image == 0 || !pixels.len().is_multiple_of(per_image) {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            reason: format!(
                "{} pixel bytes are not a whole number of {rows} x {cols} images",
                pixels.len()
            ),
        });
    }
    let mut header = IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [pixels.len() / per_image, rows, cols] {
        header.extend(u32_dim(path, d)?);
    }
    write_maybe_gz(path, &header, pixels, "idx images file")
}

/// Writes `labels` as an idx labels file; `.gz` names are gzip-compressed.
pub fn write_labels(path: &Path, labels: &[u8]) -> Result<()> {
    let mut header = LABELS_MAGIC.to_be_bytes().to_vec();
    header.extend(u32_dim(path, labels.len())?);
    write_maybe_gz(path, &header, labels, "idx labels file")
}
