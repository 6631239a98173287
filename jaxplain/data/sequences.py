"""Synthetic generation tasks whose every answer token depends on known prompt positions.

A causal language model trained on one of these tasks generates tokens whose source in the
prompt is known exactly, so an attribution of a generated token can be checked against
it: a faithful method puts its mass on `sources`.

* `copy_task`: the prompt is `length` random content tokens and a separator; the
  generation repeats them. Generated token j is prompt token j (`sources[:, j] = j`).
* `key_value_task`: the prompt lists `pairs` (key, value) pairs with distinct keys, a
  separator and one of the keys; the generation is that key's value, found at
  `sources[:, 0]`, the position right after the queried key's earlier occurrence.

Token ids: 0 is never used (free for padding), 1 is the copy task's separator, 2 the key-
value task's, content tokens are `FIRST_CONTENT` .. `vocab_size - 1`.

References:
  Olsson, Elhage, Nanda, Joseph, DasSarma, Henighan, Mann, Askell, Bai, Chen, et al.
  In-context Learning and Induction Heads. arXiv:2209.11895, 2022.
  Ba, Hinton, Mnih, Leibo, Ionescu. Using Fast Weights to Attend to the Recent Past.
  arXiv:1610.06258, 2016 (associative recall).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

COPY_SEPARATOR = 1
KEY_VALUE_SEPARATOR = 2
FIRST_CONTENT = 3


class Sequences(NamedTuple):
    """Prompts, the generations that answer them, and where each answer token comes from.

    Attributes:
      prompts: int32 `(n, prompt_length)` token ids.
      generated: int32 `(n, generated_length)`: the correct continuation of each prompt.
      sources: int32 `(n, generated_length)`: the prompt position that generated token j
        of example i is a copy of (`prompts[i, sources[i, j]] == generated[i, j]`); the
        other prompt tokens do not determine it (for `key_value_task`, apart from the
        queried key, which selects it).
    """

    prompts: np.ndarray
    generated: np.ndarray
    sources: np.ndarray

    def sequences(self) -> np.ndarray:
        """Prompts followed by their generations, int32 `(n, prompt_length + generated_length)`."""
        return np.concatenate([self.prompts, self.generated], axis=1)


def _check(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def copy_task(n: int, *, length: int = 8, vocab_size: int = 16, seed: int = 0) -> Sequences:
    """Prompts of random content tokens and a separator; the answer copies the content.

    Args:
      n: the number of examples.
      length: the number of content tokens to copy (the prompt has `length + 1` tokens).
      vocab_size: the number of token ids; content tokens are drawn uniformly from
        `FIRST_CONTENT .. vocab_size - 1`.
      seed: the NumPy seed of the draws; the same seed gives the same examples.

    Returns:
      `Sequences` with prompts `(n, length + 1)` ending in `COPY_SEPARATOR`, generated
      `(n, length)` equal to the prompts' first `length` tokens, and `sources[:, j] = j`.

    Example:
      >>> task = copy_task(2, length=3, seed=0)
      >>> bool((task.generated == task.prompts[:, :3]).all()), task.sources[0].tolist()
      (True, [0, 1, 2])
    """
    n, length = _check("n", n, 1), _check("length", length, 1)
    vocab_size = _check("vocab_size", vocab_size, FIRST_CONTENT + 1)
    content = np.random.default_rng(seed).integers(FIRST_CONTENT, vocab_size, (n, length))
    prompts = np.concatenate([content, np.full((n, 1), COPY_SEPARATOR)], axis=1).astype(np.int32)
    sources = np.broadcast_to(np.arange(length, dtype=np.int32), (n, length)).copy()
    return Sequences(prompts, content.astype(np.int32), sources)


def key_value_task(n: int, *, pairs: int = 4, vocab_size: int = 16, seed: int = 0) -> Sequences:
    """Prompts listing (key, value) pairs, a separator and a key; the answer is its value.

    The prompt is `k_0 v_0 k_1 v_1 ... k_{p-1} v_{p-1} SEP k_q` with distinct keys; the
    one generated token is `v_q`, at prompt position `2 q + 1`.

    Args:
      n: the number of examples.
      pairs: the number of (key, value) pairs; at most the number of content tokens.
      vocab_size: the number of token ids; keys and values are content tokens
        (`FIRST_CONTENT .. vocab_size - 1`), keys drawn without replacement.
      seed: the NumPy seed of the draws.

    Returns:
      `Sequences` with prompts `(n, 2 pairs + 2)`, generated `(n, 1)` and sources
      `(n, 1)` holding `2 q + 1`.

    Example:
      >>> task = key_value_task(1, pairs=2, seed=0)
      >>> int(task.prompts[0, task.sources[0, 0]]) == int(task.generated[0, 0])
      True
    """
    n, pairs = _check("n", n, 1), _check("pairs", pairs, 1)
    vocab_size = _check("vocab_size", vocab_size, FIRST_CONTENT + 1)
    symbols = vocab_size - FIRST_CONTENT
    if pairs > symbols:
        raise ValueError(
            f"pairs ({pairs}) must be at most the {symbols} content tokens of vocab_size {vocab_size}"
        )
    rng = np.random.default_rng(seed)
    keys = np.argsort(rng.random((n, symbols)), axis=1)[:, :pairs] + FIRST_CONTENT
    values = rng.integers(FIRST_CONTENT, vocab_size, (n, pairs))
    query = rng.integers(0, pairs, n)
    rows = np.arange(n)
    prompts = np.stack([keys, values], axis=2).reshape(n, 2 * pairs)
    prompts = np.concatenate(
        [prompts, np.full((n, 1), KEY_VALUE_SEPARATOR), keys[rows, query][:, None]], axis=1
    )
    generated = values[rows, query][:, None]
    return Sequences(
        prompts.astype(np.int32), generated.astype(np.int32), (2 * query + 1)[:, None].astype(np.int32)
    )
