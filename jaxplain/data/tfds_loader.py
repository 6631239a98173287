"""TensorFlow Datasets read without TensorFlow: array_record files and `as_data_source`."""

from __future__ import annotations

import numpy as np

from jaxplain.data.dataset import Dataset, split_dataset


def load(
    name: str,
    *,
    data_dir: str | None,
    rng: np.random.Generator,
    test_fraction: float,
    max_examples: int | None,
    download: bool,
) -> Dataset:
    """The TFDS dataset `name` as a `Dataset`; see `jaxplain.data.load` for the contract."""
    tfds = _import_tfds(name)
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.DatasetNotFoundError as error:
        raise ValueError(
            f"name {name!r} is neither a bundled dataset nor a TFDS dataset (see "
            "jaxplain.data.names() and the TFDS catalog)"
        ) from error
    if not builder.is_prepared():
        _prepare(builder, name, data_dir, download=download)

    input_key, label_key = _supervised_keys(builder, name)
    features = builder.info.features
    splits = builder.info.splits

    def read(split: str):
        source = builder.as_data_source(split=split)
        count = len(source) if max_examples is None else min(len(source), max_examples)
        records = source.__getitems__(list(range(count)))
        inputs = _stack_inputs([record[input_key] for record in records], features[input_key], tfds)
        return inputs, np.asarray([record[label_key] for record in records], np.int32)

    label_feature = features[label_key]
    extras = {"data_dir": str(builder.data_dir)}
    if hasattr(label_feature, "names"):
        extras["class_names"] = tuple(label_feature.names)
    if "train" in splits and "test" in splits:
        (x_train, y_train), (x_test, y_test) = read("train"), read("test")
        return Dataset(
            name=name,
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
            num_classes=_num_classes(label_feature, y_train, y_test),
            extras=extras,
        )
    parts = [read(split) for split in sorted(splits)]
    x, y = np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
    return split_dataset(
        name,
        x,
        y,
        rng=rng,
        test_fraction=test_fraction,
        num_classes=_num_classes(label_feature, y),
        extras=extras,
    )


def _import_tfds(name: str):
    try:
        # TFDS imports importlib_resources lazily, when it first prepares a dataset of its
        # catalog, but does not require it on Python >= 3.9 (4.9.10): checked here so that
        # a missing one fails now, by name, rather than after a download.
        import importlib_resources  # noqa: F401
        import tensorflow_datasets as tfds
    except ImportError as error:
        missing = error.name or "tensorflow-datasets"
        raise ImportError(
            f'loading the TFDS dataset {name!r} needs {missing}, which is missing: pip install "jaxplain[data]"'
        ) from error
    return tfds


def _prepare(builder, name: str, data_dir, *, download: bool) -> None:
    """Downloads and prepares `builder`'s data, turning a failed download into advice."""
    command = (
        f'tensorflow_datasets.builder({name!r}, data_dir=DIR, file_format="array_record")'
        ".download_and_prepare()"
    )
    advice = (
        f"the data must be prepared beforehand on a machine with network, with {command}, "
        "and DIR copied here and passed as data_dir"
    )
    where = f"data_dir {data_dir!r} (dataset folder {builder.data_dir})"
    if not download:
        raise RuntimeError(f"TFDS dataset {name!r} is not prepared in {where}; {advice}")
    try:
        builder.download_and_prepare(file_format="array_record")
    except Exception as error:
        # Raised `from None`: the message says all a user can act on, and TFDS's own
        # traceback (dozens of frames) stays in `__context__` for whoever debugs TFDS.
        if _is_network_error(error):
            raise RuntimeError(
                f"TFDS dataset {name!r} could not be downloaded into {where} "
                f"({type(error).__name__}: {error}); without network access {advice}"
            ) from None
        if _missing_module(error) == "tensorflow":
            raise RuntimeError(
                f"TFDS needs TensorFlow to prepare the dataset {name!r} in {where}: its code for "
                "this dataset reads the source files or encodes the images with TensorFlow (jaxplain "
                "reads the prepared files without it). pip install tensorflow and call again (what "
                f"was downloaded is kept), or run {command} where TensorFlow is installed and pass "
                "DIR as data_dir"
            ) from None
        raise


def _is_network_error(error: BaseException | None) -> bool:
    # A download that cannot connect fails with an OSError (requests' ConnectionError
    # and urllib's URLError are ones), which TFDS may re-raise wrapped.
    while error is not None:
        if isinstance(error, OSError):
            return True
        error = error.__cause__ or error.__context__
    return False


def _missing_module(error: BaseException | None) -> str | None:
    """The top-level name of the module whose import failed in `error`'s chain, if any."""
    while error is not None:
        if isinstance(error, ImportError) and error.name:
            return error.name.split(".")[0]
        error = error.__cause__ or error.__context__
    return None


def _supervised_keys(builder, name: str) -> tuple[str, str]:
    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(key, str) for key in keys):
        raise ValueError(
            f"TFDS dataset {name!r} has supervised_keys {keys!r}; jaxplain.data.load needs "
            "one (input, label) pair of feature names"
        )
    return keys


def _stack_inputs(values: list, feature, tfds) -> np.ndarray:
    """Images as float32 NHWC in [0, 1], text as an object array of str, others stacked."""
    if isinstance(feature, tfds.features.Text):
        texts = np.empty(len(values), dtype=object)
        texts[:] = [value.decode("utf-8") if isinstance(value, bytes) else value for value in values]
        return texts
    stacked = np.stack(values)
    if isinstance(feature, tfds.features.Image) and np.issubdtype(stacked.dtype, np.integer):
        # Divide by the dtype's full range: 255 for uint8, 65535 for uint16 images.
        return (stacked / np.iinfo(stacked.dtype).max).astype(np.float32)
    return stacked


def _num_classes(label_feature, *labels: np.ndarray) -> int:
    if hasattr(label_feature, "num_classes"):
        return int(label_feature.num_classes)
    return int(max(y.max(initial=-1) for y in labels)) + 1
