"""Pictures of attributions (matplotlib, drawn off-screen): images, tables, tokens, curves.

Signed attributions use a diverging colormap centred on zero (red: raises the target's
score, blue: lowers it), clipped at a percentile of |values| per example so that one
extreme pixel does not wash out the rest; `mode="absolute"` shows |values| on a
sequential colormap from 0 instead. Besides the PNG pictures, `text_html` writes token
highlighting as a standalone HTML page, `curves` draws deletion / insertion curves and
`convergence` the iso-convergence study of benchmarks/iso_convergence.py.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np

MODES = ("signed", "absolute")
_SIGNED_CMAP = "RdBu_r"
_ABSOLUTE_CMAP = "inferno"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _output(path) -> None:
    """The file to write, checked before drawing: an empty path would save a hidden ".png"
    in the current directory, a folder or a path below a file would fail after the work,
    and so would a missing folder (matplotlib and PIL do not create it)."""
    import os

    from jaxplain._store import output_path

    path = output_path("path", path, folder=False)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path: cannot write {path}: the folder {folder} does not exist; create it first")


def _array(name: str, value, ranks=None, expected: str = "", finite: bool = True) -> np.ndarray:
    """`value` as a float array to draw, checked before any drawing: an `Attribution`'s
    `.values` taken; refused when not numeric, of another rank than `ranks` (`expected`
    says what is wanted), empty, or holding NaN or infinity (drawn as a blank picture)."""
    from jaxplain.attribution import Attribution

    if isinstance(value, Attribution):
        value = value.values
    try:
        array = np.asarray(value, np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__}") from None
    if ranks is not None and array.ndim not in ranks:
        raise ValueError(f"{name} must be {expected}, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}): nothing to draw")
    if finite and not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _percentile(percentile) -> float:
    from jaxplain import _checks

    return _checks.number("percentile", percentile, high=100.0)


def _labels(name: str, labels, count: int, what: str) -> None:
    """Refuses `labels` (titles, names) unless there is one per `what` (IndexError later)."""
    if labels is not None and len(labels) != count:
        raise ValueError(f"{name} has {len(labels)} entries for {count} {what}")


def clip_scale(values: np.ndarray, percentile: float = 99.0) -> float:
    """The symmetric colour limit: the `percentile` of |values| (at least a tiny positive)."""
    values, percentile = _array("values", values), _percentile(percentile)
    scale = float(np.percentile(np.abs(values), percentile))
    return scale if scale > 0 else 1e-12


_MAPS = "(n, h, w) or (n, h, w, c) attributions"


def spatial_map(values: np.ndarray, size) -> np.ndarray:
    """(n, h, w) or (n, h, w, c) attributions as (n, H, W) maps at the input's size.

    Channels are summed; a map at another resolution (a conv layer's Grad-CAM, say) is
    resized bilinearly.
    """
    import jax

    values = _array("values", values, (3, 4), _MAPS)
    if not (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in size)
    ):
        raise TypeError(f"size must be (H, W), two ints, got {size!r}")
    if min(size) < 1:
        raise ValueError(f"size must be (H, W) with H, W >= 1, got {tuple(size)}")
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


def _check_mode(mode: str) -> str:
    """`mode` itself when it is one of MODES; else a ValueError naming the accepted ones."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    return mode


def _bare(ax) -> None:
    """No ticks and no frame, but room for a title and a y label (unlike `axis("off")`)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _draw_input(ax, image: np.ndarray) -> None:
    """An input example, scaled to [0, 1]: grayscale for one channel, else RGB."""
    image = _as_image(image)
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)


def _draw_heat(
    ax,
    image: np.ndarray | None,
    heat: np.ndarray,
    mode: str = "signed",
    percentile: float = 99.0,
    overlay: bool = False,
    alpha: float = 0.6,
):
    """One heat-map panel on `ax`: an (H, W) attribution map, alone or over its input.

    Args:
      ax: the matplotlib axes to draw on.
      image: the example, (H, W) or (H, W, C); only drawn when `overlay` is set.
      heat: the (H, W) map.
      mode: "signed": `heat` on "RdBu_r" from -limit to +limit, limit the `percentile`
        of |heat|; "absolute": |heat| on a sequential colormap from 0 to that limit.
      percentile: the colour clipping percentile of |heat|.
      overlay: draw the map with transparency `alpha` on top of the image.
      alpha: the map's opacity when overlaid.

    Returns:
      The heat-map's `AxesImage` (its `norm` and `cmap` say how values were coloured).
    """
    mode = _check_mode(mode)
    heat = np.asarray(heat, np.float32)
    if mode == "signed":
        limit = clip_scale(heat, percentile)
        cmap, low, high = _SIGNED_CMAP, -limit, limit
    else:
        heat = np.abs(heat)
        cmap, low, high = _ABSOLUTE_CMAP, 0.0, clip_scale(heat, percentile)
    if overlay:
        _draw_input(ax, image)
    return ax.imshow(heat, cmap=cmap, vmin=low, vmax=high, alpha=alpha if overlay else None)


def image_attributions(
    inputs: np.ndarray,
    values: np.ndarray,
    path: str,
    *,
    titles: Sequence[str] | None = None,
    percentile: float = 99.0,
    columns: int = 4,
    mode: str = "signed",
    overlay: bool = False,
    alpha: float = 0.6,
) -> str:
    """A grid of (input, heat-map) pairs for NHWC images; writes a PNG to `path`.

    Args:
      inputs: (n, H, W, C) or (n, H, W) images.
      values: attributions, (n, h, w, c) or (n, h, w): summed over channels and resized
        to H x W when at another resolution (`spatial_map`); an `Attribution` is taken
        as its `.values`.
      path: the PNG to write (its folder must exist).
      titles: one caption per example.
      percentile: colour clipping percentile of |attribution|, per example.
      columns: examples per row (each takes two panels).
      mode: "signed" (diverging "RdBu_r" centred on 0) or "absolute" (|attribution| on a
        sequential colormap from 0).
      overlay: draw each heat-map over its input, with transparency `alpha`.
      alpha: the heat-map's opacity when overlaid.

    Returns:
      `path`.
    """
    from jaxplain import _checks

    _output(path)
    _check_mode(mode)
    percentile = _percentile(percentile)
    columns = _checks.positive_int("columns", columns)
    inputs = _array("inputs", inputs, (3, 4), "(n, H, W) or (n, H, W, C) images")
    values = _array("values", values, (3, 4), _MAPS)
    n = len(inputs)
    if len(values) != n:
        raise ValueError(f"values holds attributions of {len(values)} examples for {n} inputs")
    _labels("titles", titles, n, "inputs")
    heats = spatial_map(values, inputs.shape[1:3])
    plt = _pyplot()
    rows = -(-n // columns)
    figure, axes = plt.subplots(rows, 2 * columns, figsize=(2.2 * columns * 2, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        row, col = divmod(i, columns)
        _draw_input(axes[row, 2 * col], inputs[i])
        _draw_heat(axes[row, 2 * col + 1], inputs[i], heats[i], mode, percentile, overlay, alpha)
        if titles is not None:
            axes[row, 2 * col].set_title(titles[i], fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def method_grid(
    inputs: np.ndarray,
    attributions: Mapping[str, np.ndarray],
    path: str,
    *,
    titles: Sequence[str] | None = None,
    mode: str = "signed",
    percentile: float = 99.0,
    overlay: bool = False,
    alpha: float = 0.6,
) -> str:
    """Several methods side by side: one row per example, one column per method; a PNG.

    The first column shows the input; every other column one method's heat-map, drawn
    as `image_attributions` draws its maps (each example clipped on its own).

    Args:
      inputs: (n, H, W, C) or (n, H, W) images.
      attributions: {method name: attributions of the n inputs}, each (n, h, w, c) or
        (n, h, w) at any resolution (summed over channels and resized, `spatial_map`).
      path: the PNG to write.
      titles: one label per example, written beside its row.
      mode: "signed" or "absolute", as in `image_attributions`.
      percentile: colour clipping percentile of |attribution|, per example and method.
      overlay: draw each heat-map over its input, with transparency `alpha`.
      alpha: the heat-map's opacity when overlaid.

    Returns:
      `path`.
    """
    _output(path)
    _check_mode(mode)
    percentile = _percentile(percentile)
    inputs = _array("inputs", inputs, (3, 4), "(n, H, W) or (n, H, W, C) images")
    n = len(inputs)
    if not attributions:
        raise ValueError("attributions is empty: pass {method name: attributions}")
    _labels("titles", titles, n, "inputs")
    heats = {}
    for name, values in attributions.items():
        values = _array(f"attributions of method {name!r}", values)
        if values.ndim not in (3, 4) or values.shape[0] != n:
            raise ValueError(
                f"attributions of method {name!r} have shape {tuple(values.shape)}; expected "
                f"({n}, h, w) or ({n}, h, w, c) for the {n} inputs"
            )
        heats[name] = spatial_map(values, inputs.shape[1:3])
    plt = _pyplot()
    columns = 1 + len(heats)
    figure, axes = plt.subplots(n, columns, figsize=(1.8 * columns + 0.4, 1.8 * n + 0.3), squeeze=False)
    for i in range(n):
        for ax in axes[i]:
            _bare(ax)
        _draw_input(axes[i, 0], inputs[i])
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=8)
        for j, (name, heat) in enumerate(heats.items(), start=1):
            _draw_heat(axes[i, j], inputs[i], heat[i], mode, percentile, overlay, alpha)
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
    axes[0, 0].set_title("input", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def tabular_attributions(
    values: np.ndarray,
    path: str,
    *,
    feature_names: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    percentile: float = 99.0,
) -> str:
    """A heat-map of (examples x features) signed attributions; writes a PNG to `path`."""
    _output(path)
    values = _array(
        "values",
        values,
        (2,),
        "(examples, features); for one example pass values[None], "
        "for images or sequences values.reshape(n, -1)",
    )
    n, d = values.shape
    _labels("feature_names", feature_names, d, "features")
    _labels("row_labels", row_labels, n, "examples")
    limit = clip_scale(values, percentile)
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(min(20, 2.5 + 0.35 * d), min(20, 2.8 + 0.3 * n)))
    image = ax.imshow(values, cmap=_SIGNED_CMAP, vmin=-limit, vmax=limit, aspect="auto")
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
    row_labels: Sequence[str] | None = None,
    percentile: float = 99.0,
) -> str:
    """Tokens written in cells coloured by their signed attribution; writes a PNG.

    Rows may be ragged as in `text_html`: row i shows its len(tokens[i]) tokens, the
    cells past them (padding) are left blank.
    """
    _output(path)
    rows = _token_rows(tokens, values)
    _labels("row_labels", row_labels, len(rows), "rows")
    limit = clip_scale(np.concatenate(rows), percentile)
    n, length = len(rows), max(len(row) for row in rows)
    cells = np.full((n, length), np.nan)  # NaN cells (padding) are drawn blank
    for i, row in enumerate(rows):
        cells[i, : len(row)] = row
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(min(24, 1.5 + 0.7 * length), 1 + 0.4 * n))
    ax.imshow(cells, cmap=_SIGNED_CMAP, vmin=-limit, vmax=limit, aspect="auto")
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            dark = abs(value) > 0.6 * limit  # light text on saturated cells
            ax.text(
                j,
                i,
                str(tokens[i][j]),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if dark else "black",
            )
    ax.set_xticks([])
    ax.set_yticks(range(n))
    ax.set_yticklabels(row_labels if row_labels is not None else range(n), fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _signed_colour(value: float, limit: float) -> str:
    """The "#rrggbb" of `value` on the diverging colormap clipped at +-limit."""
    import matplotlib
    import matplotlib.colors

    position = 0.5 + 0.5 * float(np.clip(value / limit, -1.0, 1.0))
    return matplotlib.colors.to_hex(matplotlib.colormaps[_SIGNED_CMAP](position))


def _token_rows(tokens: Sequence[Sequence[str]], values) -> list:
    """Per row, the first len(tokens[i]) values as a float array (rows may be ragged).

    Checked before anything is drawn: a row of tokens given as one string (its letters
    would be the tokens), a row of values that is not 1-D (an embedding axis not summed:
    flattened, the values would belong to other tokens), too few values, NaN or infinity
    in the values used, and no tokens at all.
    """
    from jaxplain.attribution import Attribution

    values = values.values if isinstance(values, Attribution) else values
    if isinstance(tokens, str) or any(isinstance(words, str) for words in tokens):
        raise TypeError(
            "tokens must hold one sequence of strings per row, e.g. [['the', 'film']], not strings"
        )
    if len(values) != len(tokens):
        raise ValueError(f"values has {len(values)} rows for {len(tokens)} rows of tokens")
    rows = []
    for i, (words, row) in enumerate(zip(tokens, values)):
        row = np.asarray(row, np.float64)
        if row.ndim != 1:
            raise ValueError(
                f"values row {i} has shape {row.shape}; expected one value per token (for attributions "
                "of embeddings, sum over the embedding axis first)"
            )
        if len(row) < len(words):
            raise ValueError(f"row {i} has {len(words)} tokens but only {len(row)} values")
        row = row[: len(words)]
        if not np.isfinite(row).all():
            raise ValueError(f"values row {i} contains NaN or infinite values")
        rows.append(row)
    if not any(len(row) for row in rows):
        raise ValueError("tokens holds no tokens: nothing to draw")
    return rows


def text_html(
    tokens: Sequence[Sequence[str]],
    values,
    path: str | None = None,
    *,
    row_labels: Sequence[str] | None = None,
    percentile: float = 99.0,
    title: str | None = None,
) -> str:
    """Text highlighting as a standalone HTML page: tokens on their attribution's colour.

    Each token is a `<span>` whose background comes from the diverging colormap (red:
    positive, blue: negative, white: 0), clipped at the `percentile` of |values| over
    all rows; its `title` attribute holds the value, shown when hovering. Tokens, labels
    and the title are HTML-escaped.

    Args:
      tokens: one sequence of strings per row; rows may differ in length.
      values: a 2-D array (n, max_len) or a list of 1-D arrays; only the first
        len(tokens[i]) values of row i are used (padding is ignored).
      path: when given, the HTML file to write.
      row_labels: one label per row, written before it.
      percentile: colour clipping percentile of |values|, over all rows.
      title: a heading for the page.

    Returns:
      The HTML document as a string.
    """
    if path is not None:
        _output(path)
    rows = _token_rows(tokens, values)
    _labels("row_labels", row_labels, len(rows), "rows")
    limit = clip_scale(np.concatenate(rows), percentile)
    heading = html.escape(title) if title is not None else "Attributions"

    def span(text: str, value: float, hover: str) -> str:
        dark = abs(value) > 0.6 * limit  # light text on saturated colours
        style = f"background-color:{_signed_colour(value, limit)};color:{'white' if dark else 'black'}"
        return f'<span class="token" style="{style}" title="{html.escape(hover)}">{text}</span>'

    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{heading}</title>",
        "<style>",
        "body { font-family: sans-serif; line-height: 2; }",
        ".row { margin: 0.3em 0; }",
        ".label { font-weight: bold; margin-right: 0.6em; }",
        ".token { padding: 0.1em 0.25em; margin: 0 0.05em; border-radius: 0.2em; white-space: pre; }",
        ".legend { font-size: 0.85em; color: #444; }",
        "</style>",
        "</head>",
        "<body>",
    ]
    if title is not None:
        lines.append(f"<h1>{heading}</h1>")
    lines.append(
        '<div class="legend">colour scale: '
        + span("negative", -limit, f"{-limit:.4g}")
        + " "
        + span("0", 0.0, "0")
        + " "
        + span("positive", limit, f"{limit:.4g}")
        + f" (clipped at &plusmn;{limit:.4g}, the {percentile:g}th percentile of |value|)</div>"
    )
    for i, (words, row) in enumerate(zip(tokens, rows)):
        cells = [
            span(html.escape(str(word)), float(value), f"{float(value):.4g}")
            for word, value in zip(words, row)
        ]
        label = (
            f'<span class="label">{html.escape(str(row_labels[i]))}</span>' if row_labels is not None else ""
        )
        lines.append(f'<div class="row">{label}{" ".join(cells)}</div>')
    lines += ["</body>", "</html>", ""]
    document = "\n".join(lines)
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(document)
    return document


def _area(fractions: np.ndarray, scores: np.ndarray) -> float:
    """The trapezoid-rule area under `scores` over `fractions`."""
    fractions, scores = np.asarray(fractions, np.float64), np.asarray(scores, np.float64)
    return float(((scores[1:] + scores[:-1]) * np.diff(fractions) / 2).sum())


def _curve_points(label: str, curve) -> tuple:
    """A curve's (fractions, scores), both (K,), from any form `curves` accepts."""
    if hasattr(curve, "fractions") and hasattr(curve, "scores"):  # a metrics.Curve
        fractions, scores = curve.fractions, curve.scores
    elif isinstance(curve, (tuple, list)) and len(curve) == 2 and all(np.ndim(part) >= 1 for part in curve):
        fractions, scores = curve
    else:
        fractions, scores = None, curve
    scores = np.asarray(scores, np.float64)
    if scores.ndim == 2:  # a batch of curves: their mean
        scores = scores.mean(axis=0)
    if scores.ndim != 1 or len(scores) < 2:
        raise ValueError(
            f"curve {label!r}: expected at least 2 scores in a 1-D array, got shape {scores.shape}"
        )
    fractions = np.linspace(0.0, 1.0, len(scores)) if fractions is None else np.asarray(fractions, np.float64)
    if fractions.shape != scores.shape:
        raise ValueError(
            f"curve {label!r}: {fractions.shape[0] if fractions.ndim else 0} fractions "
            f"for {len(scores)} scores"
        )
    return fractions, scores


def _draw_curves(ax, curves: Mapping[str, object], area: bool = True) -> list:
    """One line per curve on `ax`, with a legend; returns the legend's labels."""
    labels = []
    for label, curve in curves.items():
        fractions, scores = _curve_points(label, curve)
        text = f"{label} (area {_area(fractions, scores):.3f})" if area else str(label)
        ax.plot(fractions, scores, marker="." if len(scores) <= 30 else None, label=text)
        labels.append(text)
    ax.legend(fontsize=8)
    return labels


def curves(
    curves: Mapping[str, object],
    path: str,
    *,
    title: str | None = None,
    xlabel: str = "fraction of features removed",
    ylabel: str = "score",
    area: bool = True,
) -> str:
    """Deletion / insertion curves, one line per label; writes a PNG to `path`.

    A metric's output goes in as it is: `jaxplain.metrics.deletion`, `insertion`,
    `pixel_flipping` and `road` return a `Curve` (fractions (K,), scores (batch, K),
    auc (batch,)), so `curves({"IG": deletion(model, x, ig, target=t), ...}, path)`
    draws each method's mean curve over the batch; its area is then the mean of the
    Curve's `auc`. For one example, pass `(curve.fractions, curve.scores[i])`.

    Args:
      curves: {label: curve}; a curve is a 1-D array of scores (at evenly spaced
        fractions from 0 to 1), a 2-D (batch, K) array (drawn as its mean over the
        batch), a (fractions, scores) pair, or a `jaxplain.metrics.Curve`.
      path: the PNG to write.
      title: the plot's title.
      xlabel: the x axis label (e.g. "fraction of features inserted" for insertion).
      ylabel: the y axis label.
      area: write each curve's trapezoid area over its fractions in the legend.

    Returns:
      `path`.
    """
    _output(path)
    if not curves:
        raise ValueError("curves is empty: pass {label: scores}")
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(5.5, 4))
    try:
        _draw_curves(ax, curves, area)
    except ValueError:
        plt.close(figure)
        raise
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def convergence(
    curves_by_case: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
    path: str,
    *,
    tolerance: float = 0.01,
) -> str:
    """The iso-convergence study: median L2 error against gradient evaluations; a PNG.

    One log-log subplot per case (4 to a row), one line per integration schedule, and a
    dotted line at the tolerance. This is the plot of benchmarks/iso_convergence.py;
    its stored study draws with
    `convergence({c: r["curves"] for c, r in data["cases"].items()}, path)`.

    Args:
      curves_by_case: {case: {schedule: {"cost": [...], "median_l2": [...]}}}.
      path: the PNG to write.
      tolerance: the relative L2 error marked by the dotted line.

    Returns:
      `path`.
    """
    _output(path)
    if not isinstance(curves_by_case, Mapping):
        raise TypeError(
            f"curves_by_case must be a dict {{case: {{schedule: curve}}}}, got {type(curves_by_case).__name__}"
        )
    cases = list(curves_by_case)
    if not cases:
        raise ValueError("curves_by_case is empty")
    for case, schedules in curves_by_case.items():  # before drawing, naming the case at fault
        if not isinstance(schedules, Mapping) or not schedules:
            raise TypeError(
                f"curves_by_case[{case!r}] must be a non-empty dict {{schedule: {{'cost': [...], "
                f"'median_l2': [...]}}}}, got {schedules!r}"
            )
        for name, curve in schedules.items():
            where = f"curves_by_case[{case!r}][{name!r}]"
            if not isinstance(curve, Mapping) or not {"cost", "median_l2"} <= set(curve):
                raise TypeError(f"{where} must be a dict with 'cost' and 'median_l2' lists, got {curve!r}")
            # A study may record a diverged point as inf: the line leaves it out.
            cost = _array(f"{where}['cost']", curve["cost"], (1,), "a 1-D list", finite=False)
            error = _array(f"{where}['median_l2']", curve["median_l2"], (1,), "a 1-D list", finite=False)
            if cost.shape != error.shape:
                raise ValueError(f"{where}: {len(cost)} costs for {len(error)} errors")
    plt = _pyplot()
    columns = 4
    rows = -(-len(cases) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for axis, case in zip(axes.flat, cases):
        for name, curve in curves_by_case[case].items():
            axis.loglog(
                curve["cost"],
                curve["median_l2"],
                marker="." if name != "auto" else "o",
                label=name,
                linewidth=2 if name in ("auto", "pilot_gauss", "gauss_legendre") else 1,
            )
        axis.axhline(tolerance, color="gray", linestyle=":", linewidth=1)
        axis.set_title(case, fontsize=9)
        axis.set_xlabel("gradient evaluations per input")
        axis.set_ylabel("median relative L2 error")
    for axis in list(axes.flat)[len(cases) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
