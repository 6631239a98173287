"""Pictures of attributions (matplotlib, drawn off-screen): images, tables, tokens.

Signed attributions use a diverging colormap centred on zero (red: raises the target's
score, blue: lowers it), clipped at a percentile of |values| per example so that one
extreme pixel does not wash out the rest.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def clip_scale(values: np.ndarray, percentile: float = 99.0) -> float:
    """The symmetric colour limit: the `percentile` of |values| (at least a tiny positive)."""
    scale = float(np.percentile(np.abs(values), percentile)) if np.size(values) else 0.0
    return scale if scale > 0 else 1e-12


def spatial_map(values: np.ndarray, size) -> np.ndarray:
    """(n, h, w) or (n, h, w, c) attributions as (n, H, W) maps at the input's size.

    Channels are summed; a map at another resolution (a conv layer's Grad-CAM, say) is
    resized bilinearly.
    """
    import jax

    values = np.asarray(values, np.float32)
    if values.ndim == 4:
        values = values.sum(axis=-1)
    if tuple(values.shape[1:3]) != tuple(size):
        values = np.asarray(jax.image.resize(values, (values.shape[0], *size), "bilinear"))
    return values


def _as_image(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    low, high = float(x.min()), float(x.max())
    return (x - low) / (high - low) if high > low else np.zeros_like(x)


def image_attributions(
    inputs: np.ndarray,
    values: np.ndarray,
    path: str,
    *,
    titles: Optional[Sequence[str]] = None,
    percentile: float = 99.0,
    columns: int = 4,
) -> str:
    """A grid of (input, signed heat-map) pairs for NHWC images; writes a PNG to `path`.

    Args:
      inputs: (n, H, W, C) images.
      values: attributions of the same shape (summed over channels for the map).
      path: the PNG to write.
      titles: one caption per example.
      percentile: colour clipping percentile of |attribution|, per example.
      columns: examples per row (each takes two panels).

    Returns:
      `path`.
    """
    plt = _pyplot()
    inputs, values = np.asarray(inputs), np.asarray(values)
    n = len(inputs)
    rows = -(-n // columns)
    figure, axes = plt.subplots(rows, 2 * columns, figsize=(2.2 * columns * 2, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        row, col = divmod(i, columns)
        image = _as_image(inputs[i])
        heat = values[i].sum(axis=-1) if values[i].ndim == 3 else values[i]
        limit = clip_scale(heat, percentile)
        axes[row, 2 * col].imshow(image, cmap="gray" if image.ndim == 2 else None)
        axes[row, 2 * col + 1].imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit)
        if titles is not None:
            axes[row, 2 * col].set_title(titles[i], fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def tabular_attributions(
    values: np.ndarray,
    path: str,
    *,
    feature_names: Optional[Sequence[str]] = None,
    row_labels: Optional[Sequence[str]] = None,
    percentile: float = 99.0,
) -> str:
    """A heat-map of (examples x features) signed attributions; writes a PNG to `path`."""
    plt = _pyplot()
    values = np.asarray(values, np.float32)
    n, d = values.shape
    limit = clip_scale(values, percentile)
    figure, ax = plt.subplots(figsize=(min(20, 1.5 + 0.35 * d), min(20, 1.5 + 0.3 * n)))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(d))
    ax.set_xticklabels(feature_names if feature_names is not None else range(d), rotation=90, fontsize=7)
    ax.set_yticks(range(n))
    ax.set_yticklabels(row_labels if row_labels is not None else range(n), fontsize=7)
    figure.colorbar(image, ax=ax, fraction=0.03)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def token_attributions(
    tokens: Sequence[Sequence[str]],
    values: np.ndarray,
    path: str,
    *,
    row_labels: Optional[Sequence[str]] = None,
    percentile: float = 99.0,
) -> str:
    """Tokens written in cells coloured by their signed attribution; writes a PNG."""
    plt = _pyplot()
    values = np.asarray(values, np.float32)
    n, length = values.shape
    limit = clip_scale(values, percentile)
    figure, ax = plt.subplots(figsize=(min(24, 1.5 + 0.7 * length), 1 + 0.4 * n))
    ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(n):
        for j in range(length):
            dark = abs(values[i, j]) > 0.6 * limit  # light text on saturated cells
            ax.text(j, i, str(tokens[i][j]), ha="center", va="center", fontsize=6,
                    color="white" if dark else "black")
    ax.set_xticks([])
    ax.set_yticks(range(n))
    ax.set_yticklabels(row_labels if row_labels is not None else range(n), fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
