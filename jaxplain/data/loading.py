"""`load`: one entry point for the bundled, synthetic and TensorFlow Datasets data."""

from __future__ import annotations

import numbers
import os

import numpy as np

from jaxplain import _checks
from jaxplain.data import bundled, synthetic, tfds_loader
from jaxplain.data.dataset import Dataset

_LOADERS = {
    "digits": bundled.digits,
    "breast_cancer": bundled.breast_cancer,
    "wine": bundled.wine,
    "synthetic_additive": synthetic.synthetic_additive,
    "synthetic_text": synthetic.synthetic_text,
}
BUNDLED = tuple(_LOADERS)
_TFDS_PREFIX = "tfds:"


def names() -> list[str]:
    """The bundled datasets: they load offline, with no extra dependency."""
    return list(BUNDLED)


def load(
    name: str,
    *,
    data_dir: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.25,
    max_examples: int | None = None,
    download: bool = True,
) -> Dataset:
    """Loads a classification dataset, split into train and test.

    Bundled datasets (`names()`) need no network and no extra package:

    - "digits": 1,797 8x8 handwritten digits, x float32 `(n, 8, 8, 1)` in [0, 1]
      (pixel counts / 16), 10 classes.
    - "breast_cancer": x float32 `(n, 30)`, 2 classes; "wine": x float32 `(n, 13)`,
      3 classes. Both are standardized with the train split's mean and std, kept in
      `extras["mean"]` and `extras["std"]`, and have `feature_names`.
    - "synthetic_additive": 2,000 examples in all, x float32 `(n, 8)`, 2 classes,
      with exactly known Shapley values; see `additive_logit` and `additive_shapley`.
    - "synthetic_text": 2,000 examples in all, x int32 token ids `(n, 16)`, 2
      classes, the label carried only by planted trigger tokens whose positions are
      in `extras`.

    Their split is stratified: every class appears in both parts, in proportion
    `test_fraction`. It is fixed by `seed` alone (only `numpy.random.default_rng(seed)`
    draws it, as do the synthetic data), so the same call gives the same arrays on any
    machine. The rows each split took are in `extras["train_indices"]` and
    `extras["test_indices"]`.

    Any other name is a TensorFlow Datasets name, with or without a "tfds:" prefix:
    "mnist", "tfds:cifar10", "imdb_reviews". It needs `pip install "jaxplain[data]"`
    but not TensorFlow: the data are read from TFDS's array_record files. They are
    downloaded and prepared into `data_dir` on first use when `download` is True, by
    TFDS's own code for the dataset, which for many datasets (MNIST and most image
    datasets: it reads their files with `tf.io.gfile` and encodes PNGs with TensorFlow)
    needs TensorFlow; without it the call says so after the download, which is kept.
    Such data are best prepared once where TensorFlow is installed, and the folder
    passed as `data_dir` anywhere else. The dataset's own "train" and "test"
    splits are used when it has both; otherwise all its splits are pooled and split as
    above. Images come as float32 NHWC in [0, 1] (integers over their dtype's range),
    text as a NumPy object array of str (see `jaxplain.data.Vocabulary`), labels as
    int32 from the dataset's `supervised_keys`.

    Args:
      name: a bundled name or a TFDS name. A misspelt bundled name is looked up in
        TFDS too, which fails at once (no download) when no such dataset exists.
      data_dir: where TFDS data live; None means TFDS's default
        (~/tensorflow_datasets, or $TFDS_DATA_DIR). Ignored by bundled datasets.
      seed: fixes the split and the synthetic data; an int >= 0.
      test_fraction: share of each class in the test split, in (0, 1). Unused where a
        TFDS dataset brings its own test split.
      max_examples: for TFDS data, read at most this many examples (the first ones)
        of each TFDS split; None reads all. Bundled data always load whole.
      download: for TFDS data not yet prepared in `data_dir`, whether to download and
        prepare it. With False such data raise at once; use it on machines without
        network, where a download would only fail after minutes of retries.

    Returns:
      A `jaxplain.data.Dataset`.

    Raises:
      ImportError: a TFDS name without tensorflow-datasets (or its undeclared
        dependency importlib_resources) installed.
      RuntimeError: TFDS data that are not prepared in `data_dir` and cannot be
        downloaded (no network, or `download=False`), or whose preparation needs
        TensorFlow, which is not installed. The data must then be prepared beforehand
        on a machine with network (and TensorFlow).

    Example:
      >>> import jaxplain.data
      >>> digits = jaxplain.data.load("digits", seed=0)
      >>> digits.x_train.shape, digits.x_test.shape, digits.num_classes
      ((1347, 8, 8, 1), (450, 8, 8, 1), 10)
    """
    _check_arguments(name, data_dir, seed, test_fraction, max_examples, download)
    rng = np.random.default_rng(seed)
    if name in _LOADERS:
        if max_examples is not None:
            raise ValueError(
                f"max_examples applies to TFDS datasets only; the bundled {name!r} always loads whole"
            )
        return _LOADERS[name](rng=rng, test_fraction=test_fraction)
    return tfds_loader.load(
        name.removeprefix(_TFDS_PREFIX),
        data_dir=None if data_dir is None else os.fspath(data_dir),
        rng=rng,
        test_fraction=test_fraction,
        max_examples=max_examples,
        download=download,
    )


def _check_arguments(name, data_dir, seed, test_fraction, max_examples, download) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not name.removeprefix(_TFDS_PREFIX):
        raise ValueError(f"name must name a dataset, got {name!r}")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a str, a path or None, got {type(data_dir).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(f"test_fraction must be a number, got {type(test_fraction).__name__}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if max_examples is not None:
        _checks.positive_int("max_examples", max_examples)
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
