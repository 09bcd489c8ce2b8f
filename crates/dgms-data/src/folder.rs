//! Class-per-folder image sets: torchvision's `ImageFolder` layout, which
//! ImageNet's `train/` and `val/` follow (`<split>/<class>/.../<image>`),
//! as do CUB-200, Stanford Cars and FGVC Aircraft in the reference's
//! loaders.
//!
//! Only the file list is held, never the images. The order is
//! `ImageFolder`'s, so that label `i` and sample `j` mean the same here as
//! in PyTorch: classes sorted by name (label = position), then within each
//! class every directory in sorted path order (`sorted(os.walk(...))`) and
//! its files sorted by name; a file counts when its extension is one of
//! torchvision's [`IMAGE_EXTENSIONS`], compared case-insensitively.
//! Names are compared as bytes, which for UTF-8 is Python's code-point
//! order.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// torchvision's `IMG_EXTENSIONS`, without the dot.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// The file list of one split.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    pub root: PathBuf,
    /// Class names (folder names), sorted; a label indexes this list.
    pub classes: Vec<String>,
    /// Every image file and its label, in `ImageFolder` order.
    pub samples: Vec<(PathBuf, u32)>,
}

impl ImageFolder {
    /// Lists `root`. A missing root, a root without class folders, or a
    /// class folder without any image file is an error naming the folder.
    pub fn scan(root: &Path) -> Result<Self> {
        let mut classes: Vec<(Vec<u8>, String, PathBuf)> = Vec::new();
        for entry in read_dir(root)? {
            let (path, name) = entry;
            if path.is_dir() {
                let text = name.to_string_lossy().into_owned();
                classes.push((name.as_encoded_bytes().to_vec(), text, path));
            }
        }
        if classes.is_empty() {
            return Err(DataError::NoClasses {
                dir: root.to_path_buf(),
            });
        }
        classes.sort();
        let mut samples = Vec::new();
        for (label, (_, name, dir)) in classes.iter().enumerate() {
            let before = samples.len();
            for file in images_under(dir)? {
                samples.push((file, label as u32));
            }
            if samples.len() == before {
                return Err(DataError::EmptyClass {
                    dir: dir.clone(),
                    class: name.clone(),
                });
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes: classes.into_iter().map(|(_, name, _)| name).collect(),
            samples,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the split holds no image (never true for a scanned folder).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// The class names under `root` (its sub-folders, sorted as
/// [`ImageFolder::scan`] sorts them), without listing any image.
pub fn class_names(root: &Path) -> Result<Vec<String>> {
    let mut classes: Vec<(Vec<u8>, String)> = read_dir(root)?
        .into_iter()
        .filter(|(path, _)| path.is_dir())
        .map(|(_, name)| {
            (
                name.as_encoded_bytes().to_vec(),
                name.to_string_lossy().into_owned(),
            )
        })
        .collect();
    if classes.is_empty() {
        return Err(DataError::NoClasses {
            dir: root.to_path_buf(),
        });
    }
    classes.sort();
    Ok(classes.into_iter().map(|(_, name)| name).collect())
}

/// Whether `path` has one of [`IMAGE_EXTENSIONS`] (any case).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// A file's name as bytes (its sort key) and its path.
type NamedPath = (Vec<u8>, PathBuf);

/// The entries of `dir` as (path, file name).
fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, std::ffi::OsString)>> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        what: "an image folder".to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        out.push((entry.path(), entry.file_name()));
    }
    Ok(out)
}

/// Every image file under `class_dir` (following symlinks, as torchvision
/// does, but entering each real directory once, so a symlink loop ends),
/// in `sorted(os.walk(class_dir))` order: directories by path, the files
/// of each by name.
fn images_under(class_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<(Vec<u8>, Vec<NamedPath>)> = Vec::new();
    let mut visited = std::collections::HashSet::new();
    let mut pending = vec![class_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        if !visited.insert(dir.canonicalize().unwrap_or_else(|_| dir.clone())) {
            continue;
        }
        let mut files = Vec::new();
        for (path, name) in read_dir(&dir)? {
            if path.is_dir() {
                pending.push(path);
            } else if has_image_extension(&path) {
                files.push((name.as_encoded_bytes().to_vec(), path));
            }
        }
        files.sort();
        dirs.push((dir.as_os_str().as_encoded_bytes().to_vec(), files));
    }
    dirs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(dirs
        .into_iter()
        .flat_map(|(_, files)| files.into_iter().map(|(_, p)| p))
        .collect())
}
