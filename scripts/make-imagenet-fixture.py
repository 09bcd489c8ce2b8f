#!/usr/bin/env python3
"""Makes fixtures/imagenet-mini: a small ImageNet-layout folder
(train/<wnid>/*, val/<wnid>/*) of real photographs, for the image-folder
data source's tests and `cargo xtask bench-data`.

The photographs are scikit-image's bundled sample images (public domain or
CC0; see fixtures/imagenet-mini/README.md for each one's source and
licence). The folder deliberately holds the cases a loader must handle:
varied sizes and aspect ratios, extensions in several cases (.JPEG, .jpeg,
.jpg, .png), a greyscale JPEG, a CMYK JPEG, a PNG saved under a .JPEG
name, and a truncated JPEG.

    pip install pillow numpy scikit-image
    python3 scripts/make-imagenet-fixture.py [OUT_DIR]

The output depends only on the scikit-image images and Pillow's encoder
(versions printed and written to the README's table by hand).
"""

import io
import os
import shutil
import sys

import numpy as np
import PIL
import skimage
import skimage.data as data
from PIL import Image

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "fixtures", "imagenet-mini")
QUALITY = 90


def rgb(array):
    return Image.fromarray(np.asarray(array, dtype=np.uint8))


def fit(img, longer):
    """Scales `img` so that its longer side is `longer` (Lanczos)."""
    w, h = img.size
    s = longer / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)


def jpeg_bytes(img, **kw):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=QUALITY, **kw)
    return buf.getvalue()


def png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write(rel, payload):
    path = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(payload)
    return path


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    astronaut = rgb(data.astronaut())                # 512 x 512
    rocket = rgb(data.rocket())                      # 640 x 427
    hubble = rgb(data.hubble_deep_field())           # 1000 x 872
    coffee = rgb(data.coffee())                      # 600 x 400
    chelsea = rgb(data.chelsea())                    # 451 x 300
    camera = Image.fromarray(data.camera())          # 512 x 512, grey
    retina = rgb(data.retina())                      # 1411 x 1411
    coins = Image.fromarray(data.coins())            # 384 x 303, grey

    files = {
        # n00000001: spaceflight
        "train/n00000001/astronaut.JPEG": jpeg_bytes(astronaut),
        "train/n00000001/rocket.JPEG": jpeg_bytes(rocket),
        "train/n00000001/hubble.jpeg": jpeg_bytes(fit(hubble, 500)),
        "val/n00000001/astronaut_portrait.JPEG":
            jpeg_bytes(astronaut.crop((120, 0, 380, 512))),   # 260 x 512
        "val/n00000001/rocket_wide.JPEG":
            jpeg_bytes(rocket.crop((0, 100, 640, 300))),      # 640 x 200
        # n00000002: still life
        "train/n00000002/coffee.JPEG": jpeg_bytes(coffee),
        "train/n00000002/chelsea.JPEG": jpeg_bytes(chelsea),
        "train/n00000002/camera_grey.JPEG": jpeg_bytes(camera),   # mode L
        "val/n00000002/coffee_cmyk.JPEG":
            jpeg_bytes(coffee.crop((100, 50, 500, 350)).convert("CMYK")),
        "val/n00000002/chelsea_png_named_jpeg.JPEG":
            png_bytes(fit(chelsea, 320)),                     # PNG bytes
        # n00000003: textures of the world
        "train/n00000003/retina.jpg": jpeg_bytes(fit(retina, 480)),
        "train/n00000003/coins_grey.JPEG": jpeg_bytes(coins),
        "train/n00000003/hubble_detail.JPEG":
            jpeg_bytes(hubble.crop((300, 300, 700, 520))),    # 400 x 220
        "val/n00000003/retina_small.png": png_bytes(fit(retina, 300)),
    }
    for rel, payload in files.items():
        write(rel, payload)
    # A JPEG cut in the middle of its entropy-coded data.
    whole = jpeg_bytes(fit(hubble, 360))
    write("train/n00000003/truncated.JPEG", whole[: len(whole) // 2])

    print(f"scikit-image {skimage.__version__}, Pillow {PIL.__version__}, "
          f"numpy {np.__version__}")
    total = 0
    for root, _, names in sorted(os.walk(OUT)):
        for n in sorted(names):
            p = os.path.join(root, n)
            total += os.path.getsize(p)
            rel = os.path.relpath(p, OUT)
            try:
                with Image.open(p) as im:
                    desc = f"{im.format} {im.mode} {im.size[0]}x{im.size[1]}"
            except Exception as e:  # the truncated file, on purpose
                desc = f"unreadable ({type(e).__name__})"
            print(f"{rel:50s} {os.path.getsize(p):7d} B  {desc}")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
