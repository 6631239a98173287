"""jaxplain.data: fixed stratified splits, exact ground truth, and TFDS read offline.

No test here touches the network: the TFDS tests build tiny datasets into a temporary
data_dir, or build TFDS's own catalog builders (MNIST) as far as they go without a
download, and every connection attempt in them fails at once (`no_network`). The data
sources that `jaxplain.explain_dataset` reads are TFDS's and grain's own classes.
"""

import doctest
import functools
import itertools
import math
import socket
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.datasets
from conftest import mlp_model
from sklearn.linear_model import LogisticRegression

import jaxplain
import jaxplain.data
import jaxplain.data.loading
import jaxplain.data.synthetic
from jaxplain.data import Vocabulary, additive_logit, additive_shapley

REAL = {
    "digits": (sklearn.datasets.load_digits, (8, 8, 1), 10),
    "breast_cancer": (sklearn.datasets.load_breast_cancer, (30,), 2),
    "wine": (sklearn.datasets.load_wine, (13,), 3),
}


# Bundled datasets -------------------------------------------------------------------------


def test_names_are_the_bundled_datasets():
    assert (
        jaxplain.data.names()
        == list(jaxplain.data.BUNDLED)
        == ["digits", "breast_cancer", "wine", "synthetic_additive", "synthetic_text"]
    )


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_dataset_shapes_dtypes_and_classes(name):
    source, feature_shape, num_classes = REAL[name]
    dataset = jaxplain.data.load(name)
    total = len(source().target)
    assert dataset.x_train.shape[1:] == dataset.x_test.shape[1:] == feature_shape
    assert dataset.x_train.dtype == dataset.x_test.dtype == np.float32
    assert dataset.y_train.dtype == dataset.y_test.dtype == np.int32
    assert len(dataset.x_train) == len(dataset.y_train)
    assert len(dataset.x_test) + len(dataset.x_train) == total
    assert len(dataset.x_test) == pytest.approx(0.25 * total, abs=num_classes)
    assert dataset.num_classes == num_classes
    for labels in (dataset.y_train, dataset.y_test):
        assert set(labels.tolist()) == set(range(num_classes))


def test_digits_are_scaled_pixel_counts():
    dataset = jaxplain.data.load("digits")
    raw = sklearn.datasets.load_digits().images
    assert dataset.x_train.min() == 0.0 and dataset.x_train.max() == 1.0
    np.testing.assert_array_equal(dataset.x_test[..., 0] * 16, raw[dataset.extras["test_indices"]])
    assert dataset.feature_names is None


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_tabular_data_are_standardized_with_train_statistics(name):
    source, feature_shape, _ = REAL[name]
    dataset = jaxplain.data.load(name)
    np.testing.assert_allclose(dataset.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(dataset.x_train.std(axis=0), 1.0, atol=1e-5)
    assert np.abs(dataset.x_test.mean(axis=0)).max() > 1e-3  # test rows were not used
    raw = source().data
    mean, std = dataset.extras["mean"], dataset.extras["std"]
    np.testing.assert_allclose(mean, raw[dataset.extras["train_indices"]].mean(axis=0))
    np.testing.assert_allclose(
        dataset.x_test * std + mean, raw[dataset.extras["test_indices"]], rtol=1e-5, atol=1e-4
    )
    assert len(dataset.feature_names) == feature_shape[0]
    assert all(isinstance(feature, str) for feature in dataset.feature_names)


@pytest.mark.parametrize("name", jaxplain.data.BUNDLED)
def test_split_is_fixed_by_the_seed(name):
    first, again, other = (jaxplain.data.load(name, seed=seed) for seed in (0, 0, 1))
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    assert not np.array_equal(first.extras["test_indices"], other.extras["test_indices"])


@pytest.mark.parametrize("name", jaxplain.data.BUNDLED)
def test_train_and_test_share_no_rows(name):
    dataset = jaxplain.data.load(name)
    train, test = dataset.extras["train_indices"], dataset.extras["test_indices"]
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(len(train) + len(test)))
    seen = {row.tobytes() for row in dataset.x_train.reshape(len(train), -1)}
    assert not any(row.tobytes() in seen for row in dataset.x_test.reshape(len(test), -1))


@pytest.mark.parametrize("test_fraction", [0.1, 0.5, 0.9])
def test_test_fraction_sets_each_class_share(test_fraction):
    dataset = jaxplain.data.load("wine", test_fraction=test_fraction)
    for label in range(3):
        in_test = (dataset.y_test == label).sum()
        in_class = in_test + (dataset.y_train == label).sum()
        assert abs(in_test - test_fraction * in_class) <= 0.5


def test_split_is_the_same_on_every_machine():
    # Pinned values: a NumPy or scikit-learn change that moved them would break the
    # promise that a (name, seed) pair names the same split everywhere.
    assert jaxplain.data.load("digits").extras["test_indices"][:6].tolist() == [
        677,
        1421,
        817,
        850,
        1405,
        215,
    ]
    assert jaxplain.data.load("wine", seed=0).extras["test_indices"][:6].tolist() == [
        8,
        151,
        124,
        27,
        64,
        173,
    ]
    np.testing.assert_allclose(
        jaxplain.data.load("synthetic_additive").x_train[0, :3],
        [1.195176, 0.616149, 0.744981],
        atol=1e-6,
    )
    assert jaxplain.data.load("synthetic_text").x_train[0].tolist() == [
        62,
        40,
        36,
        14,
        11,
        62,
        5,
        57,
        62,
        42,
        10,
        20,
        14,
        50,
        26,
        8,
    ]


def test_repr_shows_shapes_not_data():
    text = repr(jaxplain.data.load("digits"))
    assert "x_train=float32[1347, 8, 8, 1]" in text and "y_test=int32[450]" in text
    assert len(text) < 300


# synthetic_additive -----------------------------------------------------------------------


def brute_force_shapley(function, x, baseline):
    """Shapley values of `function` at `x` against `baseline` from all 2^d coalitions."""
    d = x.shape[-1]
    coalitions = np.array(list(itertools.product([False, True], repeat=d)))
    values = np.asarray(function(np.where(coalitions, x, baseline)))
    index = {tuple(row): k for k, row in enumerate(coalitions)}
    phi = np.zeros(d)
    for row, members in enumerate(coalitions):
        size = members.sum()
        for i in np.flatnonzero(~members):
            joined = members.copy()
            joined[i] = True
            weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
            phi[i] += weight * (values[index[tuple(joined)]] - values[row])
    return phi


def test_additive_shapley_matches_the_shapley_definition(rng):
    x, baseline = rng.standard_normal((2, 8))
    np.testing.assert_allclose(
        additive_shapley(x, baseline), brute_force_shapley(additive_logit, x, baseline), atol=1e-12
    )


def test_additive_shapley_is_efficient_and_zero_for_unused_features(rng):
    x = rng.standard_normal((100, 8))
    for baseline in (np.zeros(8), rng.standard_normal(8), rng.standard_normal((100, 8))):
        phi = additive_shapley(x, baseline)
        assert phi.shape == (100, 8)
        np.testing.assert_allclose(phi.sum(-1), additive_logit(x) - additive_logit(baseline))
        np.testing.assert_array_equal(phi[:, list(jaxplain.data.synthetic.ZERO_EFFECT)], 0.0)


def test_additive_shapley_against_the_data_distribution(rng):
    x = rng.standard_normal((50, 8))
    phi = additive_shapley(x)
    expected_logit = sum(term.mean for term in jaxplain.data.ADDITIVE_TERMS)
    np.testing.assert_allclose(phi.sum(-1), additive_logit(x) - expected_logit)
    np.testing.assert_array_equal(phi[:, list(jaxplain.data.synthetic.ZERO_EFFECT)], 0.0)
    # The closed-form means against a large Monte Carlo sample of X ~ N(0, I).
    sample = rng.standard_normal((400_000, 8))
    assert additive_logit(sample).mean() == pytest.approx(expected_logit, abs=0.02)
    np.testing.assert_allclose(
        jaxplain.data.additive_terms(sample).mean(0),
        [term.mean for term in jaxplain.data.ADDITIVE_TERMS],
        atol=0.01,
    )


def test_additive_truth_runs_under_jit_and_grad(rng):
    x = rng.standard_normal((4, 8)).astype(np.float32)
    jitted = jax.jit(additive_logit)(jnp.asarray(x))
    np.testing.assert_allclose(jitted, additive_logit(x), rtol=1e-5)
    gradient = jax.grad(lambda v: additive_logit(v).sum())(jnp.asarray(x))
    expected = np.zeros_like(x)
    expected[:, 0], expected[:, 1] = 2.0, -1.0
    expected[:, 2], expected[:, 3] = 2 * x[:, 2], 3 * np.cos(2 * x[:, 3])
    np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-6)


def test_additive_labels_are_balanced_and_learnable():
    dataset = jaxplain.data.load("synthetic_additive")
    assert dataset.x_train.shape == (1500, 8) and dataset.x_test.shape == (500, 8)
    assert dataset.x_train.dtype == np.float32 and dataset.y_train.dtype == np.int32
    assert 0.4 < dataset.y_train.mean() < 0.6
    logit = dataset.extras["logit"](dataset.x_test) - dataset.extras["threshold"]
    assert ((logit > 0) == dataset.y_test).mean() > 0.75  # the Bayes rule: about 0.83
    model = LogisticRegression().fit(dataset.x_train, dataset.y_train)
    assert model.score(dataset.x_test, dataset.y_test) > 0.65


def test_additive_functions_check_the_feature_axis():
    with pytest.raises(ValueError, match="x must have 8 features"):
        additive_logit(np.zeros((3, 7)))
    with pytest.raises(ValueError, match="baseline must have 8 features"):
        additive_shapley(np.zeros(8), np.zeros(3))


# synthetic_text ---------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["train", "test"])
def test_text_triggers_sit_exactly_at_the_planted_positions(part):
    dataset = jaxplain.data.load("synthetic_text")
    tokens, labels = getattr(dataset, f"x_{part}"), getattr(dataset, f"y_{part}")
    planted = dataset.extras[f"planted_{part}"]
    triggers = dataset.extras["triggers"]
    assert tokens.shape == planted.shape == (len(labels), 16)
    assert tokens.dtype == labels.dtype == np.int32 and planted.dtype == bool
    assert dataset.extras["vocab_size"] == 64 and dataset.extras["max_length"] == 16
    assert tokens.min() >= 1 and tokens.max() < 64  # padding (0) never appears
    assert set(planted.sum(axis=1).tolist()) == {1, 2}
    np.testing.assert_array_equal(np.isin(tokens, triggers), planted)
    own_trigger = (tokens[:, :, None] == triggers[labels][:, None, :]).any(axis=-1)
    np.testing.assert_array_equal(own_trigger, planted)
    assert set(labels.tolist()) == {0, 1}


# TensorFlow Datasets, offline -------------------------------------------------------------


@functools.cache
def tiny_builders():
    """Four tiny TFDS builders, defined once: TFDS registers each class by its name."""
    tfds = pytest.importorskip("tensorflow_datasets")
    image_module = pytest.importorskip("PIL.Image")

    class JaxplainTinyImages(tfds.core.GeneratorBasedBuilder):
        """4x4x1 images filled with one value v; label (v // 20) % 3. 12 train, 6 test."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(4, 4, 1)),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            )
            return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(12, 0), "test": self._generate_examples(6, 10)}

        def _generate_examples(self, count, offset):
            for i in range(count):
                value = 20 * i + offset
                # A PIL image: TFDS would encode a NumPy image with TensorFlow.
                pixels = np.full((4, 4), value, np.uint8)
                yield i, {"image": image_module.fromarray(pixels), "label": (value // 20) % 3}

    class JaxplainTinyText(tfds.core.GeneratorBasedBuilder):
        """20 one-line reviews, "good ..." for label 1 and "bad ..." for 0; a train split only."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["neg", "pos"]),
                }
            )
            return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("text", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(20):
                word = "Good" if i % 2 else "bad"
                yield i, {"text": f"{word} movie, number {i}!", "label": i % 2}

    class JaxplainTinyRemote(JaxplainTinyImages):
        """Like JaxplainTinyImages, but its files must first be downloaded."""

        def _split_generators(self, dl_manager):
            dl_manager.download("https://data.invalid/jaxplain_tiny_remote.npz")
            return super()._split_generators(dl_manager)

    class JaxplainTinyTable(tfds.core.GeneratorBasedBuilder):
        """10 rows of 5 float32 features, row i = i / 10 * linspace(-1, 1, 5); label i % 3."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(5,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            )
            return tfds.core.DatasetInfo(
                builder=self, features=features, supervised_keys=("features", "label")
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(10):
                yield i, {"features": np.linspace(-1, 1, 5, dtype=np.float32) * i / 10, "label": i % 3}

    tfds.disable_progress_bar()
    return JaxplainTinyImages, JaxplainTinyText, JaxplainTinyRemote, JaxplainTinyTable


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt fails at once, as it does on a machine without network."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    requests = pytest.importorskip("requests")

    def refuse_request(*args, **kwargs):
        raise requests.exceptions.ConnectionError("network disabled in this test")

    # requests retries a refused connection with growing pauses for minutes; failing
    # above its retry loop keeps the test fast and the failure the same.
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", refuse_request)


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    """A data_dir holding the tiny image, text and table datasets, prepared as array_record."""
    tfds = pytest.importorskip("tensorflow_datasets")
    data_dir = tmp_path_factory.mktemp("tfds")
    images, text, _, table = tiny_builders()
    for builder_class in (images, text, table):
        tfds.builder(
            builder_class.name, data_dir=str(data_dir), file_format="array_record"
        ).download_and_prepare()
    return data_dir


@pytest.mark.parametrize("name", ["tfds:jaxplain_tiny_images", "jaxplain_tiny_images"])
def test_tfds_images_load_as_float_nhwc(name, prepared_dir, no_network):
    dataset = jaxplain.data.load(name, data_dir=str(prepared_dir))
    assert dataset.name == "jaxplain_tiny_images"
    assert dataset.x_train.shape == (12, 4, 4, 1) and dataset.x_test.shape == (6, 4, 4, 1)
    assert dataset.x_train.dtype == dataset.x_test.dtype == np.float32
    assert dataset.y_train.dtype == np.int32 and dataset.num_classes == 3
    parts = ((dataset.x_train, dataset.y_train, 0), (dataset.x_test, dataset.y_test, 10))
    for x, y, offset in parts:
        assert 0.0 <= x.min() and x.max() <= 1.0
        values = np.round(x * 255).astype(int)
        assert (values == values[:, :1, :1]).all()  # each image is still one value
        np.testing.assert_array_equal(y, (values[:, 0, 0, 0] // 20) % 3)  # paired with its label
        assert sorted(values[:, 0, 0, 0].tolist()) == list(range(offset, 20 * len(x) + offset, 20))
    assert dataset.extras["data_dir"].startswith(str(prepared_dir))


def test_tfds_max_examples_caps_each_split(prepared_dir, no_network):
    dataset = jaxplain.data.load("jaxplain_tiny_images", data_dir=prepared_dir, max_examples=5)
    assert len(dataset.x_train) == len(dataset.y_train) == len(dataset.x_test) == 5


def test_tfds_text_gets_a_fixed_split_and_a_vocabulary(prepared_dir, no_network):
    dataset = jaxplain.data.load("tfds:jaxplain_tiny_text", data_dir=str(prepared_dir), seed=3)
    assert dataset.x_train.dtype == object and dataset.x_train.shape == (16,)
    assert dataset.x_test.shape == (4,) and set(dataset.y_test.tolist()) == {0, 1}
    assert all(isinstance(text, str) for text in dataset.x_train)
    assert dataset.extras["class_names"] == ("neg", "pos")
    for text, label in zip(dataset.x_train, dataset.y_train):
        assert text.startswith("Good" if label else "bad")
    again = jaxplain.data.load("jaxplain_tiny_text", data_dir=str(prepared_dir), seed=3)
    np.testing.assert_array_equal(again.x_test, dataset.x_test)

    vocabulary = Vocabulary.build(dataset.x_train, size=6)
    assert vocabulary.tokens[:4] == ("<pad>", "<unk>", "movie", "number")
    ids = vocabulary.encode(dataset.x_test, max_length=5)
    assert ids.shape == (4, 5) and ids.dtype == np.int32
    assert (ids[:, 2] == vocabulary.ids["number"]).all() and (ids[:, 4] == 0).all()
    assert ids[0, 0] == vocabulary.ids["good" if dataset.y_test[0] else "bad"]


def test_tfds_data_dir_is_honoured_and_unprepared_data_fail_at_once(prepared_dir, tmp_path, no_network):
    found = jaxplain.data.load("jaxplain_tiny_images", data_dir=prepared_dir, download=False)
    assert len(found.x_train) == 12
    empty = tmp_path / "empty"
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="prepared beforehand on a machine with network") as info:
        jaxplain.data.load("jaxplain_tiny_images", data_dir=str(empty), download=False)
    assert "'jaxplain_tiny_images'" in str(info.value) and str(empty) in str(info.value)
    assert time.monotonic() - start < 5
    assert not (empty / "jaxplain_tiny_images").exists()


def test_tfds_download_without_network_raises_a_clear_error(tmp_path, no_network):
    tiny_builders()
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="could not be downloaded") as info:
        jaxplain.data.load("jaxplain_tiny_remote", data_dir=str(tmp_path))
    message = str(info.value)
    assert "'jaxplain_tiny_remote'" in message and str(tmp_path) in message
    assert "prepared beforehand on a machine with network" in message
    assert network_failure(info.value)
    assert time.monotonic() - start < 10


def network_failure(error):
    """jaxplain's error says it all: TFDS's traceback is kept, but not printed (not the cause)."""
    assert error.__cause__ is None and error.__suppress_context__
    context = error.__context__
    while context is not None and not isinstance(context, OSError):
        context = context.__cause__ or context.__context__
    return isinstance(context, OSError)


# TFDS's own catalog builders, as far as they go without a download: MNIST's builder is
# TFDS's code, and preparing it is where tensorflow-datasets 4.9.10 without TensorFlow
# failed with "No module named 'importlib_resources'" (missing from its requirements).


def test_tfds_catalog_builder_builds_offline(tmp_path, no_network):
    tfds = pytest.importorskip("tensorflow_datasets")
    builder = tfds.builder("mnist", data_dir=str(tmp_path), file_format="array_record")
    features = builder.info.features
    assert builder.info.supervised_keys == ("image", "label")
    assert features["image"].shape == (28, 28, 1) and features["label"].num_classes == 10
    assert not builder.is_prepared()
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="TFDS dataset 'mnist' is not prepared") as info:
        jaxplain.data.load("mnist", data_dir=tmp_path, download=False)
    assert str(tmp_path) in str(info.value) and time.monotonic() - start < 5
    assert not (tmp_path / "downloads").exists()


def test_tfds_catalog_download_without_network_is_one_clear_error(tmp_path, no_network):
    pytest.importorskip("tensorflow_datasets")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="TFDS dataset 'mnist' could not be downloaded") as info:
        jaxplain.data.load("mnist", data_dir=str(tmp_path))
    assert "storage.googleapis.com" in str(info.value) or "network disabled" in str(info.value)
    assert network_failure(info.value)
    assert time.monotonic() - start < 10


def test_tfds_catalog_preparation_without_tensorflow_is_one_clear_error(tmp_path, monkeypatch, no_network):
    tfds = pytest.importorskip("tensorflow_datasets")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorFlow is installed: TFDS would prepare MNIST from the (missing) files")
    downloads = []

    def downloaded(self, urls):  # MNIST's four files, as if downloaded: the run goes on to prepare
        downloads.extend(urls)
        return {key: str(tmp_path / key) for key in urls}

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", downloaded)
    with pytest.raises(RuntimeError, match="TFDS needs TensorFlow to prepare the dataset 'mnist'") as info:
        jaxplain.data.load("mnist", data_dir=str(tmp_path))
    assert "pip install tensorflow" in str(info.value) and str(tmp_path) in str(info.value)
    assert info.value.__cause__ is None and isinstance(info.value.__context__, ImportError)
    assert sorted(downloads) == ["test_data", "test_labels", "train_data", "train_labels"]


def test_tfds_without_importlib_resources_names_it(monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setitem(sys.modules, "importlib_resources", None)
    with pytest.raises(ImportError, match=r'needs importlib_resources.*pip install "jaxplain\[data\]"'):
        jaxplain.data.load("mnist", download=False)


# explain_dataset on TFDS and grain data sources (their real classes) ------------------------


def _table_source(data_dir):
    tfds = pytest.importorskip("tensorflow_datasets")
    builder = tfds.builder("jaxplain_tiny_table", data_dir=str(data_dir), file_format="array_record")
    return builder, builder.as_data_source(split="train")


def _grain():
    return pytest.importorskip("grain")


def _array_record_parsed(builder, source):
    """grain reading TFDS's array_record files itself, records parsed with TFDS's features."""
    grain = _grain()
    files = sorted(str(path) for path in builder.data_path.glob("*.array_record-*"))
    records = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(files))
    return records.map(builder.info.features.deserialize_example_np)


TABLE_SOURCES = {
    "tfds as_data_source": lambda builder, source: source,
    "tfds.data_source": lambda builder, source: sys.modules["tensorflow_datasets"].data_source(
        "jaxplain_tiny_table", data_dir=str(builder.data_dir_root), split="train"
    ),
    "grain MapDataset": lambda builder, source: _grain().MapDataset.source(source),
    "grain batched IterDataset": lambda builder, source: (
        _grain().MapDataset.source(source).batch(3).to_iter_dataset()
    ),
    "grain DataLoader": lambda builder, source: _grain().DataLoader(
        data_source=source,
        sampler=_grain().samplers.IndexSampler(len(source), shuffle=False, num_epochs=1),
        operations=[_grain().transforms.Batch(4)],
        worker_count=0,
    ),
    "grain ArrayRecordDataSource": _array_record_parsed,
}


@pytest.mark.parametrize("kind", list(TABLE_SOURCES))
def test_explain_dataset_reads_tfds_and_grain_sources(kind, prepared_dir, tmp_path, no_network):
    builder, source = _table_source(prepared_dir)
    data = TABLE_SOURCES[kind](builder, source)
    x = np.stack([record["features"] for record in source])  # the source's own order
    y = np.array([record["label"] for record in source])
    assert sorted(np.round(x[:, -1] * 10).astype(int).tolist()) == list(range(10))
    model = mlp_model(features=5)
    summary = jaxplain.explain_dataset(
        "saliency",
        model,
        data,
        out=str(tmp_path / "out"),
        target="label",
        batch_size=4,
        input_key="features",
        progress=False,
    )
    assert summary.examples == 10 and summary.batches == 3
    found = jaxplain.load_attributions(str(tmp_path / "out"), require_complete=True)
    np.testing.assert_array_equal(found.labels, y)
    np.testing.assert_array_equal(found.target, y)
    expected = jaxplain.saliency(model, x, target=y).values
    np.testing.assert_allclose(found.values, expected, rtol=1e-6, atol=1e-7)


def test_explain_dataset_reads_a_grain_pipeline_over_tfds_images(prepared_dir, tmp_path, no_network):
    tfds = pytest.importorskip("tensorflow_datasets")
    grain = _grain()
    source = tfds.data_source("jaxplain_tiny_images", data_dir=str(prepared_dir), split="test")
    # TFDS gives uint8 images, which cannot be differentiated: the pipeline makes them floats.
    scaled = grain.MapDataset.source(source).map(
        lambda record: {"image": record["image"].astype(np.float32) / 255, "label": record["label"]}
    )
    x = np.stack([record["image"] for record in scaled])
    model = mlp_model(features=16, num_classes=3)
    jaxplain.explain_dataset(
        "saliency", model, scaled, out=str(tmp_path / "out"), batch_size=4, progress=False
    )
    found = jaxplain.load_attributions(str(tmp_path / "out"), require_complete=True)
    assert x.shape == (6, 4, 4, 1) and found.values.shape == x.shape
    np.testing.assert_array_equal(found.labels, (np.round(x[:, 0, 0, 0] * 255).astype(int) // 20) % 3)
    expected = jaxplain.saliency(model, x, target="predicted")
    np.testing.assert_array_equal(found.target, expected.target)
    np.testing.assert_allclose(found.values, expected.values, rtol=1e-6, atol=1e-7)


def test_unknown_name_is_looked_up_in_tfds_without_network(tmp_path, no_network):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match="name 'digts' is neither a bundled dataset nor a TFDS"):
        jaxplain.data.load("digts", data_dir=str(tmp_path))


def test_tfds_names_without_tfds_installed_ask_for_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r'pip install "jaxplain\[data\]"'):
        jaxplain.data.load("mnist")


# Vocabulary -------------------------------------------------------------------------------


def test_vocabulary_ranks_words_and_reserves_padding_and_unknown():
    texts = ["The cat sat; the DOG sat.", "the_end 42", "Été, été"]
    vocabulary = Vocabulary.build(texts, size=5)
    assert vocabulary.tokens == ("<pad>", "<unk>", "the", "sat", "été")
    assert len(vocabulary) == 5
    ids = vocabulary.encode(["the dog sat", "été"], max_length=4)
    np.testing.assert_array_equal(ids, [[2, 1, 3, 0], [4, 0, 0, 0]])
    assert vocabulary.decode(ids) == ["the <unk> sat", "été"]
    assert vocabulary.decode(ids[1]) == "été"
    assert Vocabulary.build(texts, size=100, min_count=2).tokens == ("<pad>", "<unk>", "the", "sat", "été")
    assert "end" in Vocabulary.build(texts, size=100).tokens  # "_" separates words


@pytest.mark.parametrize(
    "error, match, call",
    [
        (TypeError, "got one string", lambda v: Vocabulary.build("a b", size=4)),
        (TypeError, r"texts\[1\] must be a str", lambda v: v.encode(["a", 3], max_length=2)),
        (ValueError, "size must be >= 2", lambda v: Vocabulary.build(["a"], size=1)),
        (ValueError, "min_count must be >= 1", lambda v: Vocabulary.build([], size=2, min_count=0)),
        (TypeError, "max_length must be an int", lambda v: v.encode(["a"], max_length=2.0)),
        (ValueError, r"ids must lie in 0..2", lambda v: v.decode([5])),
        (ValueError, "ids must be integers", lambda v: v.decode(np.zeros((1, 1, 1), int))),
    ],
)
def test_vocabulary_bad_arguments(error, match, call):
    with pytest.raises(error, match=match):
        call(Vocabulary.build(["a"], size=4))


# Bad arguments to load --------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, match, kwargs",
    [
        (TypeError, "name must be a str, got int", {"name": 3}),
        (ValueError, "name must name a dataset", {"name": "tfds:"}),
        (TypeError, "seed must be an int, got float", {"seed": 1.5}),
        (TypeError, "seed must be an int, got bool", {"seed": True}),
        (ValueError, "seed must be >= 0", {"seed": -1}),
        (TypeError, "test_fraction must be a number", {"test_fraction": "0.2"}),
        (ValueError, r"test_fraction must be in \(0, 1\), got 0", {"test_fraction": 0}),
        (ValueError, r"test_fraction must be in \(0, 1\), got 1.0", {"test_fraction": 1.0}),
        (ValueError, r"test_fraction must be in \(0, 1\), got nan", {"test_fraction": np.nan}),
        (TypeError, "data_dir must be a str", {"data_dir": 3}),
        (ValueError, "max_examples applies to TFDS datasets only", {"max_examples": 10}),
        (ValueError, "max_examples must be >= 1", {"name": "mnist", "max_examples": 0}),
        (TypeError, "download must be a bool", {"name": "mnist", "download": "yes"}),
    ],
)
def test_load_bad_arguments_name_the_argument(error, match, kwargs, no_network):
    kwargs = {"name": "digits", **kwargs}
    with pytest.raises(error, match=match):
        jaxplain.data.load(kwargs.pop("name"), **kwargs)


@pytest.mark.parametrize("module", [jaxplain.data.loading, jaxplain.data.synthetic])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
