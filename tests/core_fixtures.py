"""Tiny real models and data shared by the core pipeline tests: a small CNN trained for a few
seconds on a slice of the real Fashion-MNIST, resized to 16x16."""

from __future__ import annotations

import functools

import numpy as np

INPUT = (16, 16, 1)


@functools.lru_cache(maxsize=None)
def tiny_dataset(train: int = 3000, test: int = 500):
    from edgeprune.data import fit_to_model, load_fashion_mnist

    return fit_to_model(load_fashion_mnist(), INPUT, 10, train_limit=train, test_limit=test)


def build_tiny(seed: int = 0):
    from edgeprune._tf import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    i = keras.Input(INPUT, name="image")
    x = L.Conv2D(8, 3, padding="same", name="stem")(i)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU()(x)
    x = L.Conv2D(16, 3, strides=2, padding="same", name="conv_a")(x)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU()(x)
    x = L.Conv2D(32, 1, name="conv_b")(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    o = L.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(i, o, name="tiny")


@functools.lru_cache(maxsize=None)
def trained_tiny_path(directory: str) -> str:
    """Trains the tiny CNN once per session and saves it under `directory`."""
    from pathlib import Path

    from edgeprune.train import compile_classifier, fit

    ds = tiny_dataset()
    m = build_tiny()
    compile_classifier(m, 3e-3)
    fit(m, ds.x_train, ds.y_train, 4, 64, "tiny")
    path = Path(directory) / "tiny.keras"
    m.save(path)
    return str(path)


def load_trained(directory: str):
    from edgeprune._tf import keras

    return keras.models.load_model(trained_tiny_path(directory), compile=False)


def np_accuracy(probs, y):
    return float(np.mean(np.argmax(probs, -1) == y))
