#!/usr/bin/env python3
"""The Pillow peer of `cargo xtask bench-data`: images/s of what one
PyTorch DataLoader worker does with torchvision's ImageNet transforms on
PIL images, computed with Pillow + numpy only (torchvision's transforms on
a PIL image are Pillow's resize, crop and transpose, then a division and a
normalisation; default_collate stacks the batch).

    pip install pillow numpy
    python3 scripts/bench_data_pillow.py FOLDER [--batch-size 32] [--reps 3]

FOLDER is a class-per-folder split. Per image:

- eval: Image.open(f).convert('RGB'), Resize(256) (shorter side to 256,
  the longer int(256 * long / short), Image.BILINEAR, which Pillow
  antialiases), CenterCrop(224), ToTensor, Normalize(ImageNet mean, std);
- train: the same with RandomCrop(224) and RandomHorizontalFlip() instead
  of the centre crop, over a shuffled order.

Single process, single thread. Prints one JSON line: images/s of each mode
(the median of --reps timed passes after one untimed pass) and the versions.
"""

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

import numpy as np
import PIL
from PIL import Image

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif",
                  ".tiff", ".webp")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
RESIZE, CROP = 256, 224


def image_files(folder):
    """Paths in torchvision ImageFolder's order."""
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    out = []
    for c in classes:
        for root, _, names in sorted(os.walk(os.path.join(folder, c))):
            for n in sorted(names):
                if n.lower().endswith(IMG_EXTENSIONS):
                    out.append(os.path.join(root, n))
    if not out:
        sys.exit(f"{folder}: no image files")
    return out


def resize_shorter(img, size):
    """torchvision's Resize(size) on a PIL image (v0.8+ size rule)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return img.resize((new_w, new_h), Image.BILINEAR)


def to_tensor_normalized(img):
    """ToTensor (HWC u8 -> contiguous CHW f32 / 255) then Normalize."""
    chw = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))
    return (chw.astype(np.float32) / 255.0 - MEAN) / STD


def load(path, train, rng):
    with open(path, "rb") as f:
        img = Image.open(f).convert("RGB")
    img = resize_shorter(img, RESIZE)
    w, h = img.size
    if train:
        # RandomCrop: torch.randint(0, side - crop + 1), then the flip.
        top, left = rng.randint(0, h - CROP), rng.randint(0, w - CROP)
        img = img.crop((left, top, left + CROP, top + CROP))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
    else:
        top = int(round((h - CROP) / 2.0))
        left = int(round((w - CROP) / 2.0))
        img = img.crop((left, top, left + CROP, top + CROP))
    return to_tensor_normalized(img)


def one_pass(files, train, batch_size, rng):
    """Seconds for every file, batched and stacked as default_collate does."""
    order = list(range(len(files)))
    if train:
        rng.shuffle(order)
    start = time.perf_counter()
    for b in range(0, len(order), batch_size):
        batch = np.stack([load(files[i], train, rng) for i in order[b:b + batch_size]])
        assert batch.shape[1:] == (3, CROP, CROP)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    files = image_files(args.folder)
    rng = random.Random(args.seed)
    out = {
        "images": len(files),
        "batch_size": args.batch_size,
        "reps": args.reps,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    for mode, train in (("train", True), ("eval", False)):
        one_pass(files, train, args.batch_size, rng)  # page cache, imports
        times = [one_pass(files, train, args.batch_size, rng)
                 for _ in range(max(1, args.reps))]
        out[f"{mode}_images_per_s"] = len(files) / statistics.median(times)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
