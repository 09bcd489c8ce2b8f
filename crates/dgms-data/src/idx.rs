//! The idx format of MNIST and Fashion-MNIST, gzip-compressed or raw.
//!
//! A file is a big-endian header — magic `0x0000_08DD` (`08` = unsigned
//! bytes, `DD` = number of dimensions), then one u32 per dimension — and the
//! bytes. Images are `n x rows x cols` (magic `0x0803`), labels `n` (`0x0801`).
//! Whether a file is gzip is decided by its first two bytes, not its name.

use std::fs::File;
use std::io::{Read, Write};
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

/// Reads a whole file, gunzipping it when it starts with the gzip magic.
/// Returns the bytes and whether they were decompressed.
pub(crate) fn read_maybe_gz(path: &Path, what: &str) -> Result<(Vec<u8>, bool)> {
    let io_err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile {
                path: path.to_path_buf(),
                what: what.to_string(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                what: what.to_string(),
                source,
            }
        }
    };
    let mut raw = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(io_err)?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok((raw, false));
    }
    let mut out = Vec::new();
    MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            what: format!("{what} (gzip stream corrupt or truncated)"),
            source,
        })?;
    Ok((out, true))
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

/// Checks the header and length of an idx file of `dims` dimensions and
/// returns the dimension sizes and the payload.
fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
    gz: bool,
    magic: u32,
    what: &str,
) -> Result<(Vec<usize>, &'a [u8])> {
    let dims = (magic & 0xff) as usize;
    let header = 4 + 4 * dims;
    let gz_note = if gz { ", after gunzip" } else { "" };
    let truncated = |expected: usize, what: String| DataError::Truncated {
        path: path.to_path_buf(),
        what,
        expected: expected as u64,
        found: bytes.len() as u64,
    };
    if bytes.len() < 4 {
        return Err(truncated(
            header,
            format!("{what} (a {header}-byte header at least{gz_note})"),
        ));
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        return Err(DataError::WrongMagic {
            path: path.to_path_buf(),
            what: format!("{what}; the file looks like {}", describe_magic(found)),
            expected: magic,
            found,
        });
    }
    if bytes.len() < header {
        return Err(truncated(
            header,
            format!("{what} (a {header}-byte header at least{gz_note})"),
        ));
    }
    let sizes: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let payload = sizes
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|p| p.checked_add(header))
        .ok_or_else(|| DataError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("dimensions {sizes:?} overflow"),
        })?;
    let shape = sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" x ");
    let described = format!("{what} (header: {shape}{gz_note})");
    if bytes.len() < payload {
        return Err(truncated(payload, described));
    }
    if bytes.len() > payload {
        return Err(DataError::TrailingData {
            path: path.to_path_buf(),
            what: described,
            expected: payload as u64,
            found: bytes.len() as u64,
        });
    }
    Ok((sizes, &bytes[header..]))
}

/// Reads an idx images file (`.gz` or raw).
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let what = "idx images file (magic 0x00000803, n x rows x cols bytes)";
    let (bytes, gz) = read_maybe_gz(path, what)?;
    let (sizes, pixels) = parse(path, &bytes, gz, IMAGES_MAGIC, "idx images file")?;
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
        pixels: pixels.to_vec(),
    })
}

/// Reads an idx labels file (`.gz` or raw) and checks every label is
/// `< classes`.
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<u8>> {
    let what = "idx labels file (magic 0x00000801, n bytes)";
    let (bytes, gz) = read_maybe_gz(path, what)?;
    let (_, labels) = parse(path, &bytes, gz, LABELS_MAGIC, "idx labels file")?;
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
    Ok(labels.to_vec())
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
    let io_err = |source| DataError::Io {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    };
    let file = File::create(path).map_err(io_err)?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let result = if gz {
        let mut w = GzBuilder::new()
            .mtime(0)
            .write(file, Compression::default());
        w.write_all(header)
            .and_then(|()| w.write_all(payload))
            .and_then(|()| w.finish().map(drop))
    } else {
        let mut w = std::io::BufWriter::new(file);
        w.write_all(header)
            .and_then(|()| w.write_all(payload))
            .and_then(|()| w.flush())
    };
    result.map_err(io_err)
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
