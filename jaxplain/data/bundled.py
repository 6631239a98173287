"""Small real datasets shipped inside scikit-learn: they load offline, in milliseconds."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxplain.data.dataset import Dataset, split_dataset


def _sklearn_datasets():
    # Imported on first use: scikit-learn takes ~2 s to import, and `import jaxplain`
    # should not pay that when no bundled dataset is loaded.
    import sklearn.datasets

    return sklearn.datasets


def digits(*, rng: np.random.Generator, test_fraction: float) -> Dataset:
    """1,797 handwritten digits as 8x8 grey images, 10 classes.

    `x` is float32 `(n, 8, 8, 1)` (NHWC, one channel) in [0, 1]: the 0..16 pixel
    counts divided by 16.

    References:
      Alpaydin, Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine
      Learning Repository (1998).
      https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits
    """
    bunch = _sklearn_datasets().load_digits()
    x = (bunch.images[..., None] / 16.0).astype(np.float32)
    return split_dataset(
        "digits",
        x,
        bunch.target,
        rng=rng,
        test_fraction=test_fraction,
        num_classes=10,
        extras={"class_names": tuple(str(name) for name in bunch.target_names)},
    )


def breast_cancer(*, rng: np.random.Generator, test_fraction: float) -> Dataset:
    """569 breast masses, 30 features of their cell nuclei; malignant (0) or benign (1).

    `x` is float32 `(n, 30)`, standardized with the train split's statistics (see
    `standardize`).

    References:
      Street, Wolberg, Mangasarian, "Nuclear feature extraction for breast tumor
      diagnosis", IS&T/SPIE Symposium on Electronic Imaging, volume 1905, pages
      861-870 (1993).
    """
    bunch = _sklearn_datasets().load_breast_cancer()
    return standardize(_tabular("breast_cancer", bunch, rng, test_fraction))


def wine(*, rng: np.random.Generator, test_fraction: float) -> Dataset:
    """178 wines from three cultivars, 13 chemical measurements, 3 classes.

    `x` is float32 `(n, 13)`, standardized with the train split's statistics (see
    `standardize`).

    References:
      Aeberhard, Forina, "Wine", UCI Machine Learning Repository (1991).
      https://doi.org/10.24432/C5PC7J
    """
    bunch = _sklearn_datasets().load_wine()
    return standardize(_tabular("wine", bunch, rng, test_fraction))


def _tabular(name: str, bunch, rng: np.random.Generator, test_fraction: float) -> Dataset:
    return split_dataset(
        name,
        bunch.data,
        bunch.target,
        rng=rng,
        test_fraction=test_fraction,
        num_classes=len(bunch.target_names),
        feature_names=tuple(str(feature) for feature in bunch.feature_names),
        extras={"class_names": tuple(str(name) for name in bunch.target_names)},
    )


def standardize(dataset: Dataset) -> Dataset:
    """`dataset` with each feature shifted and scaled by the train split's mean and std.

    Only train statistics are used, so nothing about the test split leaks into the
    inputs. They are kept as float64 in `extras["mean"]` and `extras["std"]`: the
    original value of a feature is `x * std + mean`. A constant feature keeps a
    scale of 1 rather than dividing by zero.
    """
    mean = dataset.x_train.mean(axis=0)
    std = dataset.x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return dataclasses.replace(
        dataset,
        x_train=((dataset.x_train - mean) / std).astype(np.float32),
        x_test=((dataset.x_test - mean) / std).astype(np.float32),
        extras={**dataset.extras, "mean": mean, "std": std},
    )
