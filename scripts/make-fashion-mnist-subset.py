#!/usr/bin/env python3
"""Make the embedded Fashion-MNIST subset in fixtures/fashion-mnist-subset/.

Takes a class-balanced, seeded subset of Fashion-MNIST's train set (default:
1,000 images per class) and writes it in the same idx format, gzip-compressed
with mtime = 0 so that the same inputs and seed always give byte-identical
files. The test split is the full t10k set (10,000 images), copied as
distributed, unless --test-per-class asks for a subset of it.

Python 3 standard library only. The source files come from Debian's package
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist by default).

    python3 scripts/make-fashion-mnist-subset.py
"""

import argparse
import gzip
import os
import random
import shutil
import struct
import sys

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
CLASSES = 10

DEFAULT_SRC = "/usr/share/datasets/fashion-mnist"
DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "fashion-mnist-subset"
)


def read_idx(path, magic, dims):
    with gzip.open(path, "rb") as f:
        data = f.read()
    header = 4 + 4 * dims
    if len(data) < header:
        sys.exit(f"{path}: {len(data)} bytes, expected at least a {header}-byte header")
    got_magic = struct.unpack(">I", data[:4])[0]
    if got_magic != magic:
        sys.exit(f"{path}: magic number {got_magic}, expected {magic}")
    shape = struct.unpack(">" + "I" * dims, data[4:header])
    item = 1
    for d in shape[1:]:
        item *= d
    expected = header + shape[0] * item
    if len(data) != expected:
        sys.exit(f"{path}: {len(data)} bytes, expected {expected}")
    return shape, item, data[header:]


def write_idx(path, magic, shape, payload):
    header = struct.pack(">I", magic) + struct.pack(">" + "I" * len(shape), *shape)
    # mtime=0 and no file name in the header: deterministic output.
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write(header)
            f.write(payload)


def subset(src, out, split, per_class, rng):
    img_path = os.path.join(src, f"{split}-images-idx3-ubyte.gz")
    lbl_path = os.path.join(src, f"{split}-labels-idx1-ubyte.gz")
    img_shape, img_size, images = read_idx(img_path, IMAGES_MAGIC, 3)
    (n_labels,), _, labels = read_idx(lbl_path, LABELS_MAGIC, 1)
    if img_shape[0] != n_labels:
        sys.exit(f"{img_path}: {img_shape[0]} images but {lbl_path}: {n_labels} labels")

    by_class = [[] for _ in range(CLASSES)]
    for i, label in enumerate(labels):
        if label >= CLASSES:
            sys.exit(f"{lbl_path}: label {label} at index {i}, expected < {CLASSES}")
        by_class[label].append(i)

    chosen = []
    for c in range(CLASSES):
        if len(by_class[c]) < per_class:
            sys.exit(f"{lbl_path}: class {c} has {len(by_class[c])} images, need {per_class}")
        chosen.extend(rng.sample(by_class[c], per_class))
    # Keep the source order: classes stay interleaved as in the original files.
    chosen.sort()

    out_images = b"".join(images[i * img_size : (i + 1) * img_size] for i in chosen)
    out_labels = bytes(labels[i] for i in chosen)
    n = len(chosen)
    write_idx(
        os.path.join(out, f"{split}-images-idx3-ubyte.gz"),
        IMAGES_MAGIC,
        (n, img_shape[1], img_shape[2]),
        out_images,
    )
    write_idx(os.path.join(out, f"{split}-labels-idx1-ubyte.gz"), LABELS_MAGIC, (n,), out_labels)
    print(f"{split}: {n} images ({per_class} per class) from {img_shape[0]}")
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=DEFAULT_SRC, help="folder with the full Fashion-MNIST .gz files")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-per-class", type=int, default=1000)
    ap.add_argument(
        "--test-per-class",
        type=int,
        default=None,
        help="a seeded subset of the t10k set [default: all of it, copied unchanged]",
    )
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    # One generator per split, seeded from the seed and the split name, so a
    # change in one split's count does not change the other split's choice.
    subset(args.src, args.out, "train", args.train_per_class, random.Random(f"{args.seed}/train"))
    if args.test_per_class is None:
        for kind in ("images-idx3", "labels-idx1"):
            name = f"t10k-{kind}-ubyte.gz"
            shutil.copyfile(os.path.join(args.src, name), os.path.join(args.out, name))
        print("t10k: the full set, copied unchanged")
    else:
        rng = random.Random(f"{args.seed}/t10k")
        subset(args.src, args.out, "t10k", args.test_per_class, rng)


if __name__ == "__main__":
    main()
