"""Datasets for attribution: small bundled ones, synthetic ones with known truth, and TFDS.

For language models, `copy_task` and `key_value_task` (jaxplain.data.sequences) make
prompts and answers whose every answer token comes from a known prompt position.

`load(name)` returns a `Dataset` with a fixed train/test split. The bundled datasets
(`names()`) load offline; any other name is read from TensorFlow Datasets.
"""

from jaxplain.data.dataset import Dataset
from jaxplain.data.loading import BUNDLED, load, names
from jaxplain.data.sequences import Sequences, copy_task, key_value_task
from jaxplain.data.synthetic import (
    ADDITIVE_TERMS,
    OBJECT_SHAPES,
    additive_logit,
    additive_shapley,
    additive_terms,
    object_templates,
    synthetic_objects,
)
from jaxplain.data.text import Vocabulary

__all__ = [
    "ADDITIVE_TERMS",
    "BUNDLED",
    "OBJECT_SHAPES",
    "Dataset",
    "Sequences",
    "Vocabulary",
    "additive_logit",
    "additive_shapley",
    "additive_terms",
    "copy_task",
    "key_value_task",
    "load",
    "names",
    "object_templates",
    "synthetic_objects",
]
