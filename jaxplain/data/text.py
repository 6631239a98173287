"""A word vocabulary that turns text into fixed-length token ids for a model."""

from __future__ import annotations

import collections
import dataclasses
import functools
import re

import numpy as np

from jaxplain import _checks

PAD = 0
UNKNOWN = 1
_RESERVED = ("<pad>", "<unk>")
_WORD = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lowercase words of `text`: its runs of letters and digits (any script)."""
    return _WORD.findall(text.lower())


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Words and their ids; id 0 is padding and id 1 stands for any unknown word.

    Attributes:
      tokens: the token of each id, `tokens[0] == "<pad>"`, `tokens[1] == "<unk>"`.
    """

    tokens: tuple[str, ...]

    @classmethod
    def build(cls, texts, *, size: int, min_count: int = 1) -> Vocabulary:
        """The `size - 2` most frequent words of `texts`, after the two reserved ids.

        Words are lowercase runs of letters and digits; everything else separates them.
        Ties in frequency go to the alphabetically first word, so the same texts always
        give the same ids.

        Args:
          texts: a sequence of strings (a list, or a NumPy object array).
          size: number of ids, reserved ones included: the rows of an embedding table.
            At least 2; fewer ids come out when there are fewer distinct words.
          min_count: words seen fewer times are left out (they encode as unknown).

        Returns:
          A `Vocabulary`.
        """
        texts = _check_texts(texts)
        if _checks.positive_int("size", size) < len(_RESERVED):
            raise ValueError(f"size must be >= {len(_RESERVED)} (padding and unknown), got {size}")
        min_count = _checks.positive_int("min_count", min_count)
        counts = collections.Counter(word for text in texts for word in tokenize(text))
        ranked = sorted(counts, key=lambda word: (-counts[word], word))
        kept = [word for word in ranked if counts[word] >= min_count]
        return cls(_RESERVED + tuple(kept[: size - len(_RESERVED)]))

    @functools.cached_property
    def ids(self) -> dict[str, int]:
        """The id of each token."""
        return {token: index for index, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts, *, max_length: int) -> np.ndarray:
        """Token ids of `texts`, cut or padded with 0 to `max_length`.

        Args:
          texts: a sequence of strings.
          max_length: ids per text; longer texts keep their first `max_length` words.

        Returns:
          int32 `(len(texts), max_length)`.
        """
        texts = _check_texts(texts)
        max_length = _checks.positive_int("max_length", max_length)
        ids = np.full((len(texts), max_length), PAD, np.int32)
        for row, text in enumerate(texts):
            words = tokenize(text)[:max_length]
            ids[row, : len(words)] = [self.ids.get(word, UNKNOWN) for word in words]
        return ids

    def decode(self, ids):
        """Text of token ids, padding dropped: a str for `(length,)`, a list for `(n, length)`."""
        ids = np.asarray(ids)
        if ids.ndim == 2:
            return [self.decode(row) for row in ids]
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                f"ids must be integers of shape (length,) or (n, length), got {ids.dtype}{list(ids.shape)}"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"ids must lie in 0..{len(self) - 1}, got {ids.min()}..{ids.max()}")
        return " ".join(self.tokens[index] for index in ids if index != PAD)


def _check_texts(texts) -> list[str]:
    # One string is a sequence of characters: accepting it would encode each letter.
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of strings, got one string; wrap it in a list")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] must be a str, got {type(text).__name__}")
    return texts
