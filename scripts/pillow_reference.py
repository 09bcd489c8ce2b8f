#!/usr/bin/env python3
"""What torchvision's ImageNet pipeline makes of an image folder, computed
with Pillow + numpy only (torchvision's transforms on a PIL image are
Pillow's resize and crop, then a division and a normalisation), for the
image-folder data source's parity tests.

    pip install pillow numpy
    python3 scripts/pillow_reference.py FOLDER OUT.safetensors [--resize 256] [--crop 224]

FOLDER is a class-per-folder split (e.g. fixtures/imagenet-mini/val). For
every file with an image extension, in torchvision ImageFolder's order
(classes sorted by name, files sorted by name within a class), OUT gets:

- `decoded/<class>/<file>`: u8 (H, W, 3), the image after PIL's
  `convert('RGB')` (greyscale replicated, CMYK converted by Pillow), so
  that decode differences can be told apart from resize differences;
- `eval/<class>/<file>`: f32 (3, crop, crop), torchvision's eval transform
  `Resize(resize)` (shorter side, PIL bilinear with antialiasing) ->
  `CenterCrop(crop)` -> `ToTensor()` -> `Normalize(ImageNet mean, std)`.

Files Pillow cannot decode are left out and listed, with the reason, in
the header metadata under `skipped` (JSON). The metadata also records the
Pillow and numpy versions and the transform's parameters.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
import PIL
from PIL import Image

# torchvision.datasets.folder.IMG_EXTENSIONS (compared case-insensitively).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif",
                  ".tiff", ".webp")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def image_files(folder):
    """(class, path) pairs in torchvision ImageFolder's order."""
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        sys.exit(f"{folder}: no class folders")
    out = []
    for c in classes:
        for root, _, names in sorted(os.walk(os.path.join(folder, c), followlinks=True)):
            for n in sorted(names):
                if n.lower().endswith(IMG_EXTENSIONS):
                    out.append((c, os.path.join(root, n)))
    return out


def resize_shorter(img, size):
    """torchvision.transforms.functional.resize(img, size) on a PIL image."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return img.resize((new_w, new_h), Image.BILINEAR)


def center_crop(img, size):
    """torchvision.transforms.functional.center_crop on a PIL image that is
    at least `size` on both sides (true after resize_shorter(size >= crop))."""
    w, h = img.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def eval_tensor(rgb, resize, crop):
    x = np.asarray(center_crop(resize_shorter(rgb, resize), crop), dtype=np.float32)
    x = x / 255.0
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def write_safetensors(path, tensors, metadata):
    """A minimal safetensors writer (the format: u64 header length, JSON
    header, then the raw little-endian tensors in header order)."""
    dtypes = {np.dtype(np.uint8): "U8", np.dtype(np.float32): "F32"}
    header = {"__metadata__": metadata}
    offset = 0
    for name, arr in tensors:
        n = arr.nbytes
        header[name] = {"dtype": dtypes[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, arr in tensors:
            f.write(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--resize", type=int, default=256)
    ap.add_argument("--crop", type=int, default=224)
    args = ap.parse_args()
    if args.crop > args.resize:
        sys.exit("--crop must not exceed --resize")
    tensors, skipped = [], {}
    for cls, path in image_files(args.folder):
        key = f"{cls}/{os.path.basename(path)}"
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except Exception as e:  # truncated, corrupt or not an image
            skipped[key] = f"{type(e).__name__}: {e}"
            continue
        tensors.append((f"decoded/{key}", np.asarray(rgb, dtype=np.uint8)))
        tensors.append((f"eval/{key}", eval_tensor(rgb, args.resize, args.crop)))
    metadata = {
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "resize": str(args.resize),
        "crop": str(args.crop),
        "skipped": json.dumps(skipped, sort_keys=True),
    }
    write_safetensors(args.out, tensors, metadata)
    print(f"{len(tensors) // 2} images, {len(skipped)} skipped -> {args.out}")
    for k, why in sorted(skipped.items()):
        print(f"  skipped {k}: {why}")


if __name__ == "__main__":
    main()
