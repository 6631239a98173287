"""Pictures of attributions (matplotlib, drawn off-screen): images, tables, tokens, curves.

Signed attributions use a diverging colormap centred on zero (red: raises the target's
score, blue: lowers it), clipped at a percentile of |values| so that one extreme pixel
does not wash out the rest: per example by default, or over all examples and methods
(`scale="shared"`) so that maps compare; `mode="absolute"` shows |values| on a
sequential colormap from 0 instead. Every heat-map has a colorbar, and a caption says
which colour is which sign and how the maps were scaled. Besides the PNG pictures,
`text_html` writes token highlighting as a standalone HTML page, `curves` draws
deletion / insertion curves and `convergence` the iso-convergence study of
benchmarks/iso_convergence.py.

Every picture function returns a `matplotlib.figure.Figure` when `path` is None (a
notebook shows it inline) and, given a `path`, writes the picture there and returns
`path`. The figures are not registered with pyplot: nothing needs closing, a loop of
calls leaks no figure, and a notebook shows a returned figure once. `show` wraps an
attribution in a `View` that Jupyter renders inline (`_repr_png_`, `_repr_html_`).
"""

from __future__ import annotations

import base64
import html
import io
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

MODES = ("signed", "absolute")
SCALES = ("per_example", "per_method", "shared")
_SIGNED_CMAP = "RdBu_r"
_ABSOLUTE_CMAP = "inferno"


def _figure(width: float, height: float):
    """A Figure outside pyplot's registry (garbage-collected; never shown twice) with
    constrained layout, which leaves room for colorbars and captions."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _finish(figure, path):
    """`figure` itself when `path` is None; else the figure written to `path` (a PNG at
    100 dpi unless the suffix says otherwise), and `path`."""
    if path is None:
        return figure
    figure.savefig(path, dpi=100)
    return path


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


def _check_scale(scale):
    """`scale` when it is one of SCALES or a positive finite number; else an error naming it."""
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(
                f"scale must be one of {', '.join(repr(s) for s in SCALES)} or a positive number, got {scale!r}"
            )
        return scale
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(
            f"scale must be one of {', '.join(repr(s) for s in SCALES)} or a positive number, "
            f"got {type(scale).__name__}"
        )
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    return float(scale)


def heat_limits(heats: Mapping[str, np.ndarray], scale="per_example", percentile: float = 99.0) -> dict:
    """The colour limit of every heat-map: {name: (n,) limits} for {name: (n, H, W) maps}.

    Args:
      heats: {method name: its n maps}; every method has the same n examples.
      scale: "per_example": each map clipped at the `percentile` of its own |values|;
        "per_method": one limit per method, over its n maps; "shared": one limit over
        every map of every method, so that colours compare across examples and methods;
        a positive number: that limit everywhere (to compare across figures).
      percentile: the clipping percentile of |values|.

    Returns:
      {name: float array (n,)}, every limit > 0.
    """
    scale, percentile = _check_scale(scale), _percentile(percentile)
    if not isinstance(scale, str):
        return {name: np.full(len(maps), scale) for name, maps in heats.items()}
    if scale == "shared":
        limit = clip_scale(np.concatenate([np.ravel(maps) for maps in heats.values()]), percentile)
        return {name: np.full(len(maps), limit) for name, maps in heats.items()}
    if scale == "per_method":
        return {name: np.full(len(maps), clip_scale(maps, percentile)) for name, maps in heats.items()}
    return {name: np.array([clip_scale(m, percentile) for m in maps]) for name, maps in heats.items()}


def _scale_words(scale, percentile: float) -> str:
    if not isinstance(scale, str):
        return f"one scale for all, clipped at {scale:.3g}"
    where = {
        "per_example": "each map on its own scale",
        "per_method": "one scale per method",
        "shared": "one scale for all maps",
    }[scale]
    return f"{where}, clipped at the {percentile:g}th percentile of |attribution|"


def _sign_words(mode: str) -> str:
    if mode == "signed":
        return "red: positive (raises the target's score), blue: negative (lowers it)"
    return "|attribution|: dark 0, bright large"


def _colorbar(figure, image, axes, mode: str, label: str | None = None):
    """A colorbar for `image` beside `axes` with ticks at its ends (and 0 when signed)."""
    bar = figure.colorbar(image, ax=axes, shrink=0.85, aspect=25)
    low, high = image.norm.vmin, image.norm.vmax
    ticks = [low, 0.0, high] if mode == "signed" else [0.0, high]
    bar.set_ticks(ticks)
    bar.set_ticklabels(
        [f"{t:+.2g}" if t else "0" for t in ticks] if mode == "signed" else ["0", f"{high:.2g}"]
    )
    bar.ax.tick_params(labelsize=6)
    if label is not None:
        bar.set_label(label, fontsize=7)
    return bar


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
    limit: float | None = None,
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
      limit: the colour limit, if already chosen (`heat_limits`); else the
        `percentile` of |heat|.

    Returns:
      The heat-map's `AxesImage` (its `norm` and `cmap` say how values were coloured).
    """
    mode = _check_mode(mode)
    heat = np.asarray(heat, np.float32)
    limit = clip_scale(heat, percentile) if limit is None else float(limit)
    if mode == "signed":
        cmap, low, high = _SIGNED_CMAP, -limit, limit
    else:
        heat = np.abs(heat)
        cmap, low, high = _ABSOLUTE_CMAP, 0.0, limit
    if overlay:
        _draw_input(ax, image)
    return ax.imshow(heat, cmap=cmap, vmin=low, vmax=high, alpha=alpha if overlay else None)


def _draw_maps(figure, panels, *, mode, percentile, overlay, alpha, scale) -> None:
    """Heat-map panels with their colorbars and a caption saying sign and scale.

    Args:
      figure: the Figure the panels belong to.
      panels: (axes, input image, (H, W) map, colour limit, method name) per panel.
      mode, percentile, overlay, alpha: as in `image_attributions`.
      scale: as in `heat_limits`: a colorbar per panel ("per_example"), per method
        ("per_method") or one for the figure ("shared" or a number).
    """
    drawn = []
    for ax, image, heat, limit, method in panels:
        drawn.append((method, ax, _draw_heat(ax, image, heat, mode, percentile, overlay, alpha, limit)))
    if scale == "per_example":
        for _, ax, image in drawn:
            _colorbar(figure, image, ax, mode)
    elif scale == "per_method":
        for name in dict.fromkeys(method for method, _, _ in drawn):
            mine = [(ax, image) for method, ax, image in drawn if method == name]
            _colorbar(figure, mine[0][1], [ax for ax, _ in mine], mode)
    else:
        _colorbar(
            figure,
            drawn[0][2],
            [ax for _, ax, _ in drawn],
            mode,
            label="attribution" if mode == "signed" else "|attribution|",
        )
    figure.supxlabel(f"{_sign_words(mode)}\n{_scale_words(scale, percentile)}", fontsize=7)


def _image_arguments(inputs, mode, percentile, scale, alpha):
    """The checks `image_attributions` and `method_grid` share, before any drawing."""
    from jaxplain import _checks

    _check_mode(mode)
    _checks.number("alpha", alpha, high=1.0)
    return (
        _array("inputs", inputs, (3, 4), "(n, H, W) or (n, H, W, C) images"),
        _percentile(percentile),
        _check_scale(scale),
    )


def image_attributions(
    inputs: np.ndarray,
    values: np.ndarray,
    path: str | None = None,
    *,
    titles: Sequence[str] | None = None,
    percentile: float = 99.0,
    columns: int = 4,
    mode: str = "signed",
    overlay: bool = False,
    alpha: float = 0.6,
    scale="per_example",
):
    """A grid of (input, heat-map) pairs for NHWC images, with colorbars.

    Args:
      inputs: (n, H, W, C) or (n, H, W) images.
      values: attributions, (n, h, w, c) or (n, h, w): summed over channels and resized
        to H x W when at another resolution (`spatial_map`); an `Attribution` is taken
        as its `.values`.
      path: where to write the picture (its folder must exist); None returns the Figure.
      titles: one caption per example.
      percentile: colour clipping percentile of |attribution|.
      columns: examples per row (each takes two panels).
      mode: "signed" (diverging "RdBu_r" centred on 0) or "absolute" (|attribution| on a
        sequential colormap from 0).
      overlay: draw each heat-map over its input, with transparency `alpha`.
      alpha: the heat-map's opacity when overlaid.
      scale: "per_example" (each map clipped on its own, a colorbar beside each),
        "shared" (one limit over all maps and one colorbar, so that colours compare
        across examples) or a positive number (that limit; compares across figures).
        See `heat_limits`.

    Returns:
      The `matplotlib.figure.Figure` when `path` is None, else `path`.

    Example:
      >>> import numpy as np
      >>> from jaxplain import viz
      >>> x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1))
      >>> figure = viz.image_attributions(x, x - 0.5, scale="shared")
      >>> [ax.get_label() for ax in figure.axes].count("<colorbar>")
      1
    """
    from jaxplain import _checks

    if path is not None:
        _output(path)
    inputs, percentile, scale = _image_arguments(inputs, mode, percentile, scale, alpha)
    columns = _checks.positive_int("columns", columns)
    values = _array("values", values, (3, 4), _MAPS)
    n = len(inputs)
    if len(values) != n:
        raise ValueError(f"values holds attributions of {len(values)} examples for {n} inputs")
    _labels("titles", titles, n, "inputs")
    heats = spatial_map(values, inputs.shape[1:3])
    limits = heat_limits({"": heats}, scale, percentile)[""]
    columns = min(columns, n)
    rows = -(-n // columns)
    bars = 0.5 * columns if scale == "per_example" else 0.8
    figure = _figure(4.4 * columns + bars, 2.4 * rows + 0.5)
    axes = figure.subplots(rows, 2 * columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    panels = []
    for i in range(n):
        row, col = divmod(i, columns)
        _draw_input(axes[row, 2 * col], inputs[i])
        panels.append((axes[row, 2 * col + 1], inputs[i], heats[i], limits[i], ""))
        if titles is not None:
            axes[row, 2 * col].set_title(titles[i], fontsize=8)
    _draw_maps(figure, panels, mode=mode, percentile=percentile, overlay=overlay, alpha=alpha, scale=scale)
    return _finish(figure, path)


def method_grid(
    inputs: np.ndarray,
    attributions: Mapping[str, np.ndarray],
    path: str | None = None,
    *,
    titles: Sequence[str] | None = None,
    mode: str = "signed",
    percentile: float = 99.0,
    overlay: bool = False,
    alpha: float = 0.6,
    scale="per_example",
):
    """Several methods side by side: one row per example, one column per method.

    The first column shows the input; every other column one method's heat-maps, drawn
    as `image_attributions` draws its maps.

    Args:
      inputs: (n, H, W, C) or (n, H, W) images.
      attributions: {method name: attributions of the n inputs}, each (n, h, w, c) or
        (n, h, w) at any resolution (summed over channels and resized, `spatial_map`).
      path: where to write the picture; None returns the Figure.
      titles: one label per example, written beside its row.
      mode: "signed" or "absolute", as in `image_attributions`.
      percentile: colour clipping percentile of |attribution|.
      overlay: draw each heat-map over its input, with transparency `alpha`.
      alpha: the heat-map's opacity when overlaid.
      scale: "per_example" (each map on its own), "per_method" (one limit and colorbar
        per column: methods in other units, such as Grad-CAM beside IG, stay readable),
        "shared" (one limit over every example and method, one colorbar) or a positive
        number. See `heat_limits`.

    Returns:
      The `matplotlib.figure.Figure` when `path` is None, else `path`.
    """
    if path is not None:
        _output(path)
    inputs, percentile, scale = _image_arguments(inputs, mode, percentile, scale, alpha)
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
    limits = heat_limits(heats, scale, percentile)
    columns = 1 + len(heats)
    bars = 0.5 * len(heats) if scale in ("per_example", "per_method") else 0.8
    figure = _figure(1.8 * columns + 0.4 + bars, 1.8 * n + 0.8)
    axes = figure.subplots(n, columns, squeeze=False)
    panels = []
    for i in range(n):
        for ax in axes[i]:
            _bare(ax)
        _draw_input(axes[i, 0], inputs[i])
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=8)
        for j, (name, heat) in enumerate(heats.items(), start=1):
            panels.append((axes[i, j], inputs[i], heat[i], limits[name][i], name))
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
    axes[0, 0].set_title("input", fontsize=8)
    _draw_maps(figure, panels, mode=mode, percentile=percentile, overlay=overlay, alpha=alpha, scale=scale)
    return _finish(figure, path)


def tabular_attributions(
    values: np.ndarray,
    path: str | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    percentile: float = 99.0,
):
    """A heat-map of (examples x features) signed attributions, with a colorbar.

    Args:
      values: (examples, features) attributions (an `Attribution`'s `.values`).
      path: where to write the picture; None returns the Figure.
      feature_names: one name per feature, under its column.
      row_labels: one label per example.
      percentile: colour clipping percentile of |values|, over the whole table.

    Returns:
      The `matplotlib.figure.Figure` when `path` is None, else `path`.
    """
    if path is not None:
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
    figure = _figure(min(20, 3.0 + 0.35 * d), min(20, 2.8 + 0.3 * n))
    ax = figure.subplots()
    image = ax.imshow(values, cmap=_SIGNED_CMAP, vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(d))
    ax.set_xticklabels(feature_names if feature_names is not None else range(d), rotation=90, fontsize=7)
    ax.set_yticks(range(n))
    ax.set_yticklabels(row_labels if row_labels is not None else range(n), fontsize=7)
    _colorbar(figure, image, ax, "signed", label="red +, blue -")
    return _finish(figure, path)


def token_attributions(
    tokens: Sequence[Sequence[str]],
    values: np.ndarray,
    path: str | None = None,
    *,
    row_labels: Sequence[str] | None = None,
    percentile: float = 99.0,
):
    """Tokens written in cells coloured by their signed attribution, with a colorbar.

    Rows may be ragged as in `text_html`: row i shows its len(tokens[i]) tokens, the
    cells past them (padding) are left blank.

    Args:
      tokens: one sequence of strings per row.
      values: (n, max_len) or a list of 1-D arrays, as in `text_html`.
      path: where to write the picture; None returns the Figure.
      row_labels: one label per row.
      percentile: colour clipping percentile of |values|, over all rows.

    Returns:
      The `matplotlib.figure.Figure` when `path` is None, else `path`.
    """
    if path is not None:
        _output(path)
    rows = _token_rows(tokens, values)
    _labels("row_labels", row_labels, len(rows), "rows")
    limit = clip_scale(np.concatenate(rows), percentile)
    n, length = len(rows), max(len(row) for row in rows)
    cells = np.full((n, length), np.nan)  # NaN cells (padding) are drawn blank
    for i, row in enumerate(rows):
        cells[i, : len(row)] = row
    figure = _figure(min(24, 2.2 + 0.7 * length), 1.2 + 0.4 * n)
    ax = figure.subplots()
    image = ax.imshow(cells, cmap=_SIGNED_CMAP, vmin=-limit, vmax=limit, aspect="auto")
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
    _colorbar(figure, image, ax, "signed", label="red +, blue -")
    return _finish(figure, path)


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
    heading = html.escape(title) if title is not None else "Attributions"
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{heading}</title>",
        "</head>",
        "<body>",
    ]
    if title is not None:
        lines.append(f"<h1>{heading}</h1>")
    lines += _text_block(tokens, values, row_labels, percentile)
    lines += ["</body>", "</html>", ""]
    document = "\n".join(lines)
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(document)
    return document


# Scoped to the text's own <div>: a notebook shows the same block inside its page.
_TEXT_STYLE = """<style>
.jaxplain-text { font-family: sans-serif; line-height: 2; }
.jaxplain-text .row { margin: 0.3em 0; }
.jaxplain-text .label { font-weight: bold; margin-right: 0.6em; }
.jaxplain-text .token { padding: 0.1em 0.25em; margin: 0 0.05em; border-radius: 0.2em; white-space: pre; }
.jaxplain-text .legend { font-size: 0.85em; color: #444; }
</style>"""


def _text_block(tokens, values, row_labels, percentile) -> list[str]:
    """The highlighted text as one styled `<div>`, for a page or a notebook cell."""
    return [
        _TEXT_STYLE,
        '<div class="jaxplain-text">',
        *_text_lines(tokens, values, row_labels, percentile),
        "</div>",
    ]


def _text_lines(tokens, values, row_labels, percentile) -> list[str]:
    """The legend and the rows of highlighted tokens as HTML `<div>` lines (checked first)."""
    rows = _token_rows(tokens, values)
    _labels("row_labels", row_labels, len(rows), "rows")
    percentile = _percentile(percentile)
    limit = clip_scale(np.concatenate(rows), percentile)

    def span(text: str, value: float, hover: str) -> str:
        dark = abs(value) > 0.6 * limit  # light text on saturated colours
        style = f"background-color:{_signed_colour(value, limit)};color:{'white' if dark else 'black'}"
        return f'<span class="token" style="{style}" title="{html.escape(hover)}">{text}</span>'

    lines = [
        '<div class="legend">colour scale: '
        + span("negative", -limit, f"{-limit:.4g}")
        + " "
        + span("0", 0.0, "0")
        + " "
        + span("positive", limit, f"{limit:.4g}")
        + f" (clipped at &plusmn;{limit:.4g}, the {percentile:g}th percentile of |value|)</div>"
    ]
    for i, (words, row) in enumerate(zip(tokens, rows)):
        cells = [
            span(html.escape(str(word)), float(value), f"{float(value):.4g}")
            for word, value in zip(words, row)
        ]
        label = (
            f'<span class="label">{html.escape(str(row_labels[i]))}</span>' if row_labels is not None else ""
        )
        lines.append(f'<div class="row">{label}{" ".join(cells)}</div>')
    return lines


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
    path: str | None = None,
    *,
    title: str | None = None,
    xlabel: str = "fraction of features removed",
    ylabel: str = "score",
    area: bool = True,
):
    """Deletion / insertion curves, one line per label, with their areas.

    A metric's output goes in as it is: `jaxplain.metrics.deletion`, `insertion`,
    `pixel_flipping` and `road` return a `Curve` (fractions (K,), scores (batch, K),
    auc (batch,)), so `curves({"IG": deletion(model, x, ig, target=t), ...}, path)`
    draws each method's mean curve over the batch; its area is then the mean of the
    Curve's `auc`. For one example, pass `(curve.fractions, curve.scores[i])`.

    Args:
      curves: {label: curve}; a curve is a 1-D array of scores (at evenly spaced
        fractions from 0 to 1), a 2-D (batch, K) array (drawn as its mean over the
        batch), a (fractions, scores) pair, or a `jaxplain.metrics.Curve`.
      path: where to write the picture; None returns the Figure.
      title: the plot's title.
      xlabel: the x axis label (e.g. "fraction of features inserted" for insertion).
      ylabel: the y axis label.
      area: write each curve's trapezoid area over its fractions in the legend.

    Returns:
      The `matplotlib.figure.Figure` when `path` is None, else `path`.
    """
    if path is not None:
        _output(path)
    if not curves:
        raise ValueError("curves is empty: pass {label: scores}")
    figure = _figure(5.5, 4)
    ax = figure.subplots()
    _draw_curves(ax, curves, area)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    return _finish(figure, path)


def convergence(
    curves_by_case: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
    path: str | None = None,
    *,
    tolerance: float = 0.01,
):
    """The iso-convergence study: median L2 error against gradient evaluations.

    One log-log subplot per case (4 to a row), one line per integration schedule, and a
    dotted line at the tolerance. This is the plot of benchmarks/iso_convergence.py;
    its stored study draws with
    `convergence({c: r["curves"] for c, r in data["cases"].items()}, path)`.

    Args:
      curves_by_case: {case: {schedule: {"cost": [...], "median_l2": [...]}}}.
      path: where to write the picture; None returns the Figure.
      tolerance: the relative L2 error marked by the dotted line.

    Returns:
      The `matplotlib.figure.Figure` when `path` is None, else `path`.
    """
    if path is not None:
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
    columns = 4
    rows = -(-len(cases) // columns)
    figure = _figure(4 * columns, 3.2 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
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
    return _finish(figure, path)


class View:
    """A drawn attribution that Jupyter shows inline: PNG, or HTML for highlighted text.

    Made by `show`. A notebook cell that ends with a View displays it (IPython calls
    `_repr_html_`, or `_repr_png_` where HTML is not shown); `figure` is the matplotlib
    Figure itself and `save(path)` writes it.

    Attributes:
      figure: the `matplotlib.figure.Figure`.
      html: the highlighted text as an HTML block, for token attributions; else None.
    """

    def __init__(self, figure, html: str | None = None):
        self.figure = figure
        self.html = html
        self._png: bytes | None = None

    def png(self) -> bytes:
        """The figure as PNG bytes (drawn once, then kept)."""
        if self._png is None:
            buffer = io.BytesIO()
            self.figure.savefig(buffer, format="png", dpi=100)
            self._png = buffer.getvalue()
        return self._png

    def save(self, path):
        """Writes the picture to `path` (PNG unless its suffix names another format); returns `path`."""
        _output(path)
        return _finish(self.figure, path)

    def _repr_png_(self) -> bytes:
        return self.png()

    def _repr_html_(self) -> str:
        if self.html is not None:
            return self.html
        encoded = base64.b64encode(self.png()).decode("ascii")
        return f'<img src="data:image/png;base64,{encoded}" alt="attributions">'


def show(values, x=None, *, tokens=None, feature_names=None, **options) -> View:
    """An attribution as a `View`: shown inline when it ends a notebook cell.

    The picture follows the data: with `tokens`, highlighted text (`text_html` as HTML,
    `token_attributions` as PNG); with image inputs `x` (n, H, W[, C]) and maps
    (n, h, w[, c]), `image_attributions`; with (n, features) values, a table
    (`tabular_attributions`). Everything is checked and drawn now, so a mistake raises
    here rather than inside the notebook's display.

    Args:
      values: an `Attribution` or its values.
      x: the explained inputs, needed for image heat-maps.
      tokens: one sequence of strings per example, for token attributions.
      feature_names: one name per feature, for a table.
      **options: passed to the drawing function (`scale="shared"`, `mode`, `titles`,
        `row_labels`, `percentile`, ...).

    Returns:
      A `View`.

    Example:
      >>> import numpy as np
      >>> from jaxplain import viz
      >>> view = viz.show(np.array([[0.5, -1.0, 2.0]]), feature_names=["a", "b", "c"])
      >>> view._repr_png_()[:4]
      b'\\x89PNG'
    """
    from jaxplain.attribution import Attribution

    if isinstance(values, Attribution):
        values = values.values
    if tokens is not None:
        block = "\n".join(
            _text_block(tokens, values, options.get("row_labels"), options.get("percentile", 99.0))
        )
        return View(token_attributions(tokens, values, **options), html=block)
    rank = np.ndim(values)
    if rank == 2:
        return View(tabular_attributions(values, feature_names=feature_names, **options))
    if rank in (3, 4):
        if x is None:
            raise ValueError(
                f"x: image attributions of shape {np.shape(values)} are drawn beside their inputs; pass x"
            )
        return View(image_attributions(x, values, **options))
    raise ValueError(
        f"values must be (n, features), (n, h, w) or (n, h, w, c) attributions, or token attributions "
        f"with tokens=; got shape {np.shape(values)}"
    )
