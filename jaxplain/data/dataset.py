"""The `Dataset` container and the fixed, stratified train/test split every loader shares."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset, split into train and test.

    Attributes:
      name: the name it was loaded under.
      x_train: inputs of the train split, `(n_train, ...)`.
      y_train: int32 class indices of the train split, `(n_train,)`.
      x_test: inputs of the test split, `(n_test, ...)`.
      y_test: int32 class indices of the test split, `(n_test,)`.
      num_classes: number of classes; labels lie in `0 .. num_classes - 1`.
      feature_names: one name per feature for tabular data, else None.
      extras: whatever else the dataset knows: the statistics used to standardize
        it, ground-truth attributions, class names, the rows each split took.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    feature_names: tuple[str, ...] | None = None
    extras: dict = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        # Arrays are shown by dtype and shape: printing MNIST is of no use to anyone.
        arrays = ", ".join(
            f"{field}={_describe(getattr(self, field))}"
            for field in ("x_train", "y_train", "x_test", "y_test")
        )
        names = None if self.feature_names is None else f"<{len(self.feature_names)} names>"
        return (
            f"Dataset(name={self.name!r}, {arrays}, num_classes={self.num_classes}, "
            f"feature_names={names}, extras={sorted(self.extras)})"
        )


def _describe(array) -> str:
    return f"{array.dtype}{list(array.shape)}"


def stratified_split(labels: np.ndarray, *, test_fraction: float, rng: np.random.Generator):
    """Row indices `(train, test)` of a split that puts every class in both parts.

    Each class, taken in sorted order, is permuted by `rng` and gives its first
    `round(test_fraction * size)` rows (at least one, at most all but one) to the
    test split; both splits are then permuted by `rng` so that classes are mixed.
    Only `rng.permutation` is drawn from, so the split depends on the seed alone,
    not on any library's own shuffling.

    Args:
      labels: class index per row, `(n,)`.
      test_fraction: share of each class that goes to the test split, in (0, 1).
      rng: the generator that fixes the split.

    Returns:
      `(train, test)`, two int arrays of row indices that together cover each row once.
    """
    train, test = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        if rows.size < 2:
            raise ValueError(
                f"class {label} has {rows.size} example; each class needs at least 2 to "
                "appear in both the train and the test split"
            )
        count = min(max(round(test_fraction * rows.size), 1), rows.size - 1)
        test.append(rows[:count])
        train.append(rows[count:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def split_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    rng: np.random.Generator,
    test_fraction: float,
    num_classes: int,
    feature_names: tuple[str, ...] | None = None,
    extras: dict | None = None,
) -> Dataset:
    """A `Dataset` made of `x` and `y` split by `stratified_split`.

    The row indices of each split are kept in `extras["train_indices"]` and
    `extras["test_indices"]`, so that anything else known per row can follow them.
    """
    train, test = stratified_split(y, test_fraction=test_fraction, rng=rng)
    y = np.asarray(y, np.int32)
    return Dataset(
        name=name,
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        num_classes=num_classes,
        feature_names=feature_names,
        extras={**(extras or {}), "train_indices": train, "test_indices": test},
    )
