"""Write the vendored Fashion-MNIST subset under ``src/headpursuit/data/fashion_mnist/``.

    python scripts/vendor_fashion_mnist.py --source /usr/share/datasets/fashion-mnist

``--source`` holds the four official IDX files (``train-images-idx3-ubyte.gz`` …), e.g. from
Debian's ``dataset-fashion-mnist`` package or the Zalando repository. Splits (the first images
of each official file, so each split is a contiguous, documented range):

- ``train``: official training images 0 … 14,999
- ``select``: official training images 15,000 … 15,999 (head selection)
- ``test``: official test (t10k) images 0 … 1,999

Each split is a file pair: ``<split>-images.npy.xz`` (uint8 ``[n, 28, 28]``,
``numpy.save`` format, xz-compressed) and ``<split>-labels.npy`` (uint8 ``[n]``).
"""

from __future__ import annotations

import argparse
import gzip
import io
import lzma
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "headpursuit" / "data" / "fashion_mnist"
SPLITS = {
    "train": ("train", 0, 15_000),
    "select": ("train", 15_000, 16_000),
    "test": ("t10k", 0, 2_000),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    n_dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(n_dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, (prefix, start, stop) in SPLITS.items():
        images = read_idx(args.source / f"{prefix}-images-idx3-ubyte.gz")[start:stop]
        labels = read_idx(args.source / f"{prefix}-labels-idx1-ubyte.gz")[start:stop]
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(images))
        packed = lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME)
        (args.out / f"{split}-images.npy.xz").write_bytes(packed)
        np.save(args.out / f"{split}-labels.npy", np.ascontiguousarray(labels))
        print(f"{split}: {len(labels)} images, {len(packed) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
