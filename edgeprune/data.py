"""Datasets: Fashion-MNIST from the Debian package (our own idx reader), .npz files, and image
folders with one subfolder per class. Everything becomes a `Dataset` of numpy arrays, then
`fit_to_model` resizes, converts channels and normalises it for a given model input."""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import DataError, InputFileError

FASHION_MNIST_DIR = Path(os.environ.get("EDGEPRUNE_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
NORMALIZATIONS = ("0_1", "-1_1", "none")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


@dataclass
class Dataset:
    """Images (N, H, W, C) and integer labels (N,), split into train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"name": self.name, "train": int(len(self.x_train)), "test": int(len(self.x_test)),
                "image_shape": list(self.x_train.shape[1:]), "num_classes": self.num_classes}


def read_idx(path: Path) -> np.ndarray:
    """Reads one idx file (optionally gzipped): big-endian magic, dims, then the data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise InputFileError(f"cannot read idx file {path}: {e}", "reinstall the dataset package") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise InputFileError(f"{path} is not an idx file (bad magic number)", "check the file or reinstall it")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != expected:
        raise InputFileError(f"{path} is truncated: {len(body)} data bytes, expected {expected}",
                             "reinstall the dataset package")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _fashion_mnist_dir(directory: Path | str | None = None) -> Path:
    d = Path(directory) if directory else FASHION_MNIST_DIR
    missing = [n for n in FASHION_MNIST_FILES.values() if not (d / n).is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST is not installed ({d}/{missing[0]} is missing)",
            "install it with: sudo apt-get install dataset-fashion-mnist (or set EDGEPRUNE_FASHION_MNIST_DIR)",
        )
    return d


def load_fashion_mnist(directory: Path | str | None = None) -> Dataset:
    d = _fashion_mnist_dir(directory)
    arrays = {k: read_idx(d / n) for k, n in FASHION_MNIST_FILES.items()}
    return Dataset("fashion_mnist", arrays["x_train"][..., None], arrays["y_train"].astype(np.int64),
                   arrays["x_test"][..., None], arrays["y_test"].astype(np.int64), 10, list(FASHION_MNIST_CLASSES))


def load_npz(path: Path | str) -> Dataset:
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"dataset file not found: {p}", "check the path")
    if not zipfile.is_zipfile(p):  # np.load would take it for a pickle, or return one .npy array
        raise InputFileError(f"{p} is not an .npz file (not a zip archive)", "save the arrays with "
                             "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            need = ["x_train", "y_train", "x_test", "y_test"]
            absent = [k for k in need if k not in keys]
            if absent:
                raise DataError(f"{p} lacks the arrays {', '.join(absent)} (it has {', '.join(sorted(keys)) or 'none'})",
                                "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
            arrays = {k: z[k] for k in need}
    except (OSError, ValueError, EOFError) as e:
        raise InputFileError(f"{p} is not a readable .npz file: {e}", "re-save it with numpy.savez") from None
    xs = []
    for k in ("x_train", "x_test"):
        x = arrays[k]
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise DataError(f"{p}: {k} has shape {x.shape}; expected (N, H, W) or (N, H, W, C)",
                            "store images as a 3-D or 4-D array")
        xs.append(x)
    ys = [np.asarray(arrays[k]).reshape(-1).astype(np.int64) for k in ("y_train", "y_test")]
    for x, y, k in zip(xs, ys, ("train", "test")):
        if len(x) != len(y):
            raise DataError(f"{p}: x_{k} has {len(x)} images but y_{k} has {len(y)} labels", "make them equal")
    num_classes = int(max(ys[0].max(initial=0), ys[1].max(initial=0)) + 1)
    return Dataset(p.stem, xs[0], ys[0], xs[1], ys[1], num_classes)


def load_image_folder(path: Path | str, test_fraction: float = 0.2, seed: int = 0,
                      image_size: tuple[int, int] | None = None) -> Dataset:
    """One subfolder per class (sorted names are the labels); split into train/test with a fixed
    seed. Images are read with Pillow and resized to `image_size` (default: the first image's)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise InputFileError(f"image folder not found: {root}", "check the path")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class subfolders; expected at least 2",
                        "put each class's images in a subfolder named after the class")
    images, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if image_size is None:
                        image_size = (im.height, im.width)
                    im = im.resize((image_size[1], image_size[0]))
                    images.append(np.asarray(im, dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as e:
                raise InputFileError(f"cannot read image {f}: {e}", "remove or replace the file") from None
            labels.append(label)
    if not images:
        raise DataError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})", "add images")
    x = np.stack(images)
    y = np.asarray(labels, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    te, tr = order[:n_test], order[n_test:]
    return Dataset(root.name, x[tr], y[tr], x[te], y[te], len(classes), classes)


def load_dataset(kind: str, path: str | None = None, **kw) -> Dataset:
    if kind == "fashion_mnist":
        return load_fashion_mnist(path)
    if kind == "npz":
        if not path:
            raise DataError("data kind 'npz' needs a path", "set path = \"file.npz\" in the recipe's [data] table")
        return load_npz(path)
    if kind == "image_folder":
        if not path:
            raise DataError("data kind 'image_folder' needs a path", "set path = \"folder\" in the recipe's [data]")
        return load_image_folder(path, **kw)
    raise DataError(f"unknown data kind {kind!r}", "use one of: fashion_mnist, npz, image_folder")


def check_source(kind: str, path: str | None = None) -> None:
    """Raises what load_dataset would for missing files, without reading any: a run checks its data
    this way before it starts."""
    if kind == "fashion_mnist":
        _fashion_mnist_dir(path)
    elif kind == "npz" and path and not Path(path).is_file():
        raise InputFileError(f"dataset file not found: {path}", "check the path")
    elif kind == "image_folder" and path and not Path(path).is_dir():
        raise InputFileError(f"image folder not found: {path}", "check the path")


def prepare_images(x: np.ndarray, input_shape: tuple[int, int, int], normalization: str = "0_1",
                   mean: list[float] | None = None, std: list[float] | None = None,
                   batch: int = 4096) -> np.ndarray:
    """Resizes (bilinear) and converts channels to `input_shape` (H, W, C), then normalises:
    "0_1" divides by 255, "-1_1" maps to [-1, 1], "none" keeps the values; mean/std apply after."""
    h, w, c = (int(v) for v in input_shape)
    if x.ndim != 4:
        raise DataError(f"images have shape {x.shape}; expected (N, H, W, C)", "check the dataset")
    have = x.shape[-1]
    if have != c and not ((have == 1 and c == 3) or (have == 3 and c == 1) or (have == 4 and c in (1, 3))):
        raise DataError(f"images have {have} channels but the model wants {c}",
                        "use a model with 1 or 3 input channels, or convert the dataset")
    out = np.empty((len(x), h, w, c), dtype=np.float32)
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch].astype(np.float32)
        if have == 4:
            chunk = chunk[..., :3]
        if chunk.shape[-1] == 3 and c == 1:
            chunk = chunk @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32)
        elif chunk.shape[-1] == 1 and c == 3:
            chunk = np.repeat(chunk, 3, axis=-1)
        if chunk.shape[1:3] != (h, w):
            chunk = _resize(chunk, h, w)
        out[i:i + len(chunk)] = chunk
    if normalization == "0_1":
        out /= 255.0
    elif normalization == "-1_1":
        out = out / 127.5 - 1.0
    elif normalization != "none":
        raise DataError(f"unknown normalization {normalization!r}", f"use one of: {', '.join(NORMALIZATIONS)}")
    if mean is not None:
        out -= np.asarray(mean, dtype=np.float32)
    if std is not None:
        out /= np.asarray(std, dtype=np.float32)
    return out


def _resize(chunk: np.ndarray, h: int, w: int) -> np.ndarray:
    from edgeprune._tf import tf

    return tf.image.resize(chunk, (h, w), method="bilinear").numpy()


def fit_to_model(ds: Dataset, input_shape, num_outputs: int, normalization: str = "0_1", mean=None, std=None,
                 train_limit: int | None = None, test_limit: int | None = None, seed: int = 0) -> Dataset:
    """A copy of `ds` shaped for a model with `input_shape` (H, W, C) and `num_outputs` classes."""
    if len(input_shape) != 3 or any(v is None for v in input_shape):
        raise DataError(f"the model's input shape {tuple(input_shape)} is not a fixed (H, W, C) image shape",
                        "build the model with a fixed image input shape")
    if num_outputs != ds.num_classes:
        raise DataError(f"the dataset {ds.name} has {ds.num_classes} classes but the model outputs {num_outputs}",
                        "use a model whose classifier has as many outputs as the dataset has classes")
    rng = np.random.default_rng(seed)

    def take(x, y, limit):
        if limit is not None and limit < len(x):
            idx = np.sort(rng.choice(len(x), size=limit, replace=False))
            return x[idx], y[idx]
        return x, y

    xtr, ytr = take(ds.x_train, ds.y_train, train_limit)
    xte, yte = take(ds.x_test, ds.y_test, test_limit)
    return Dataset(ds.name, prepare_images(xtr, input_shape, normalization, mean, std), ytr,
                   prepare_images(xte, input_shape, normalization, mean, std), yte, ds.num_classes,
                   list(ds.class_names))


def representative_set(ds: Dataset, count: int = 200, seed: int = 0) -> np.ndarray:
    """Images drawn from the training split for int8 calibration."""
    if len(ds.x_train) == 0:
        raise DataError("int8 calibration needs training images, and the dataset has none",
                        "give the recipe a dataset with a training split")
    idx = np.random.default_rng(seed).choice(len(ds.x_train), size=min(count, len(ds.x_train)), replace=False)
    return ds.x_train[np.sort(idx)]
