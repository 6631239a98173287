"""jaxplain.viz: every picture renders off-screen, is not blank, and colours what it should."""

import base64
import doctest
import gc
import importlib.util
import io
import json
import pathlib
import re
import sys
import weakref

import matplotlib

matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from jaxplain import viz  # noqa: E402
from jaxplain.attribution import Attribution  # noqa: E402
from jaxplain.metrics import Curve  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
STUDY = ROOT / "benchmarks" / "results" / "iso_convergence.json"


def picture(path, min_height=50, min_width=50):
    """The PNG at `path` as an (h, w, 3) float array, checked to be a real, non-blank picture."""
    path = pathlib.Path(path)
    assert path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)[..., :3]
    height, width = pixels.shape[:2]
    assert height > min_height and width > min_width
    assert pixels.std() > 0.02
    assert len(np.unique(np.round(pixels.reshape(-1, 3), 2), axis=0)) > 8
    return pixels


@pytest.fixture
def images(rng):
    gray = rng.normal(size=(3, 8, 8, 1)).astype(np.float32)
    colour = rng.uniform(size=(3, 8, 8, 3)).astype(np.float32)
    return gray, colour


def test_clip_scale_ignores_one_outlier(rng):
    values = rng.uniform(-1, 1, size=1000)
    values[17] = 1e6
    scale = viz.clip_scale(values, 99.0)
    assert 0.9 < scale < 1.0  # the 99th percentile of |values|, far below the outlier
    assert viz.clip_scale(values, 100.0) == 1e6
    assert viz.clip_scale(np.zeros(5)) > 0  # never a zero colour range


@pytest.mark.parametrize(
    "kind, mode, overlay",
    [(0, "signed", False), (1, "signed", True), (0, "absolute", True), (1, "absolute", False)],
)
def test_image_attributions_renders(tmp_path, images, rng, kind, mode, overlay):
    inputs = images[kind]  # 0: grayscale, 1: RGB
    values = rng.normal(size=inputs.shape)
    path = str(tmp_path / "images.png")
    assert (
        viz.image_attributions(
            inputs, values, path, titles=["a", "b", "c"], columns=3, mode=mode, overlay=overlay, alpha=0.5
        )
        == path
    )
    picture(path)


def test_image_attributions_as_the_cli_calls_it(tmp_path, images, rng):
    gray, colour = images
    low_resolution = rng.normal(size=(3, 4, 4))  # a Grad-CAM-sized map, resized to 8 x 8
    path = viz.image_attributions(
        colour,
        viz.spatial_map(low_resolution, colour.shape[1:3]),
        str(tmp_path / "cli.png"),
        titles=["x", "y", "z"],
    )
    picture(path)
    picture(viz.image_attributions(gray, low_resolution, str(tmp_path / "resized.png")))


def rendered(figure):
    """The figure drawn as an (h, w, 3) float array in [0, 1], as savefig would draw it."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3] / 255.0


def panel(figure, pixels, ax, inset=3):
    """The pixels inside `ax` (image rows run top down, display y bottom up)."""
    box = ax.get_window_extent()
    height = pixels.shape[0]
    top, bottom = int(height - box.y1) + inset, int(height - box.y0) - inset
    return pixels[top:bottom, int(box.x0) + inset : int(box.x1) - inset]


def heat_axes(figure):
    """The axes holding a heat-map (their last image is on a signed or absolute colormap)."""
    return [
        ax
        for ax in figure.axes
        if ax.images and ax.images[-1].cmap.name in ("RdBu_r", "inferno") and ax.get_label() != "<colorbar>"
    ]


def colorbars(figure):
    return [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]


def test_signed_positive_map_uses_only_red(tmp_path, rng):
    inputs = rng.normal(size=(1, 8, 8, 1))
    heat = rng.uniform(0.1, 1.0, size=(1, 8, 8))
    picture(viz.image_attributions(inputs, heat, str(tmp_path / "red.png"), columns=1))
    figure = viz.image_attributions(inputs, heat, columns=1)
    pixels = rendered(figure)
    (ax,) = heat_axes(figure)
    inside = panel(figure, pixels, ax)
    red, blue = inside[..., 0], inside[..., 2]
    assert inside.shape[0] > 50 and inside.shape[1] > 50
    assert not np.any(blue > red + 0.05)
    assert np.sum(red > blue + 0.2) > 0.5 * red.size  # and most of it is clearly red
    # its colorbar runs from blue (-limit) to red (+limit)
    (bar,) = colorbars(figure)
    strip = panel(figure, pixels, bar, inset=2)
    top, bottom = strip[: len(strip) // 10].mean((0, 1)), strip[-len(strip) // 10 :].mean((0, 1))
    assert top[0] > top[2] + 0.3 and bottom[2] > bottom[0] + 0.3


def test_draw_heat_norms():
    figure = Figure()
    axes = figure.subplots(1, 3)
    heat = np.linspace(-2.0, 1.0, 64).reshape(8, 8)
    image = np.ones((8, 8, 3))
    signed = viz._draw_heat(axes[0], image, heat, "signed", 100.0, False, 0.6)
    assert signed.norm.vmin == -signed.norm.vmax == pytest.approx(-2.0)
    assert signed.cmap.name == "RdBu_r"
    absolute = viz._draw_heat(axes[1], image, heat, "absolute", 100.0, False, 0.6)
    assert absolute.norm.vmin == 0 and absolute.norm.vmax == pytest.approx(2.0)
    assert absolute.cmap.name != "RdBu_r"
    assert np.all(absolute.get_array() >= 0)
    over = viz._draw_heat(axes[2], image, heat, "signed", 99.0, True, 0.4)
    assert len(axes[2].images) == 2 and over.get_alpha() == 0.4  # the map on top of the input
    assert len(axes[0].images) == 1
    fixed = viz._draw_heat(axes[0], image, heat, "absolute", 99.0, False, 0.6, limit=0.5)
    assert (fixed.norm.vmin, fixed.norm.vmax) == (0.0, 0.5)


def test_bad_mode_is_refused(tmp_path, images, rng):
    gray, _ = images
    with pytest.raises(ValueError, match="mode.*'signed'.*'absolute'"):
        viz.image_attributions(gray, rng.normal(size=gray.shape), str(tmp_path / "x.png"), mode="log")
    with pytest.raises(ValueError, match="mode"):
        viz.method_grid(gray, {"a": gray}, str(tmp_path / "y.png"), mode="magnitude")
    assert not list(tmp_path.iterdir())


def test_method_grid_renders_and_widens_with_methods(tmp_path, images, rng):
    gray, colour = images
    methods = {
        "saliency": rng.normal(size=colour.shape),
        "gradcam": rng.normal(size=(3, 4, 4)),
        "ig": rng.normal(size=(3, 8, 8)),
        "shap": rng.normal(size=(3, 8, 8, 1)),
    }
    two = picture(
        viz.method_grid(
            colour, dict(list(methods.items())[:2]), str(tmp_path / "two.png"), titles=["a", "b", "c"]
        )
    )
    four = picture(
        viz.method_grid(
            colour, methods, str(tmp_path / "four.png"), titles=["a", "b", "c"], mode="absolute", overlay=True
        )
    )
    assert four.shape[1] > two.shape[1] + 100
    assert four.shape[0] == two.shape[0]  # one row per example either way
    picture(viz.method_grid(gray, {"ig": rng.normal(size=gray.shape)}, str(tmp_path / "gray.png")))


def test_method_grid_validates(tmp_path, images, rng):
    gray, _ = images
    with pytest.raises(ValueError, match="empty"):
        viz.method_grid(gray, {}, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="'occlusion'"):
        viz.method_grid(
            gray,
            {"ig": rng.normal(size=gray.shape), "occlusion": rng.normal(size=(2, 8, 8))},
            str(tmp_path / "x.png"),
        )
    assert not list(tmp_path.iterdir())


def test_tabular_attributions_renders(tmp_path, rng):
    path = viz.tabular_attributions(
        rng.normal(size=(4, 6)),
        str(tmp_path / "table.png"),
        feature_names=[f"f{i}" for i in range(6)],
        row_labels=list("abcd"),
    )
    picture(path)


def test_token_attributions_renders(tmp_path, rng):
    words = [["the", "film", "was", "good"], ["not", "bad", "at", "all"]]
    path = viz.token_attributions(
        words, rng.normal(size=(2, 4)), str(tmp_path / "tokens.png"), row_labels=["one", "two"]
    )
    picture(path)


def background(document, token):
    """The (r, g, b) in [0, 255] behind the first span whose text is `token` (as escaped)."""
    found = re.search(
        r'background-color:#([0-9a-f]{6});[^"]*" title="([^"]*)">' + re.escape(token) + "</span>", document
    )
    assert found, token
    code = found.group(1)
    return tuple(int(code[i : i + 2], 16) for i in (0, 2, 4)), float(found.group(2))


def test_text_html(tmp_path):
    tokens = [["good", "<script>", "bad"], ["fine", "&"]]
    values = np.array([[2.0, 0.0, -1.5], [0.5, 1.0, 99.0]])  # 99 pads the short row: never used
    path = tmp_path / "text.html"
    document = viz.text_html(tokens, values, str(path), row_labels=["<b>first</b>", "second"], title="A & B")
    assert path.read_text(encoding="utf-8") == document
    assert document.startswith("<!DOCTYPE html>") and document.rstrip().endswith("</html>")
    assert "<script>" not in document and "&lt;script&gt;" in document
    assert "<b>first</b>" not in document and "&lt;b&gt;first&lt;/b&gt;" in document
    assert "A &amp; B" in document
    (r, g, b), value = background(document, "good")
    assert r > b + 50 and value == 2.0  # positive: red, hovering shows the value
    (r, g, b), value = background(document, "bad")
    assert b > r + 50 and value == -1.5  # negative: blue
    (r, g, b), _ = background(document, "&lt;script&gt;")
    assert min(r, g, b) > 230  # zero: (near) white
    assert 'title="99"' not in document  # the padding of the ragged row is not shown
    # clipping over the used values only: 99 would have washed "good" out to near white
    assert background(document, "good")[0][1] < 100
    assert "negative" in document and "positive" in document  # the legend

    ragged = viz.text_html(tokens, [np.array([2.0, 0.0, -1.5]), np.array([0.5, 1.0])])
    assert ragged == viz.text_html(tokens, values)  # a list of 1-D arrays: the same page
    with pytest.raises(ValueError, match="row 1"):
        viz.text_html(tokens, [np.ones(3), np.ones(1)])


def test_curves_area_in_legend():
    ax = Figure().subplots()
    scores = np.array([1.0, 0.7, 0.4, 0.3, 0.1])
    fractions = np.array([0.0, 0.1, 0.3, 0.6, 1.0])
    batch = np.array([[1.0, 0.5, 0.0], [0.8, 0.6, 0.2]])
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    labels = viz._draw_curves(ax, {"even": scores, "pair": (fractions, scores), "batch": batch})
    assert [t.get_text() for t in ax.get_legend().get_texts()] == labels
    assert labels[0] == f"even (area {trapezoid(scores, np.linspace(0, 1, 5)):.3f})"
    assert labels[1] == f"pair (area {trapezoid(scores, fractions):.3f})"
    assert labels[2] == f"batch (area {trapezoid(batch.mean(0), np.linspace(0, 1, 3)):.3f})"
    assert viz._area(fractions, scores) == pytest.approx(trapezoid(scores, fractions))


def test_curves_renders_metric_curves(tmp_path, rng):
    fractions = np.linspace(0, 1, 11)
    scores = np.cumsum(rng.uniform(size=(3, 11)), axis=1)[:, ::-1]
    auc = ((scores[:, 1:] + scores[:, :-1]) * np.diff(fractions) / 2).sum(-1)
    metric = Curve(fractions, scores, auc)  # as jaxplain.metrics.deletion returns it
    (label,) = viz._draw_curves(Figure().subplots(), {"ig": metric})
    assert label == f"ig (area {auc.mean():.3f})"  # the mean curve's area: the mean AUC
    path = viz.curves(
        {"ig": metric, "random": rng.uniform(size=11), "one": (fractions, scores[0])},
        str(tmp_path / "curves.png"),
        title="deletion",
    )
    picture(path)
    picture(viz.curves({"x": [0.0, 1.0, 0.5]}, str(tmp_path / "plain.png"), area=False))
    with pytest.raises(ValueError, match="'bad'"):
        viz.curves({"bad": (np.linspace(0, 1, 4), np.ones(5))}, str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="empty"):
        viz.curves({}, str(tmp_path / "empty.png"))


@pytest.mark.slow  # draws the whole stored study
def test_convergence_draws_the_stored_study(tmp_path):
    data = json.loads(STUDY.read_text())
    curves_by_case = {case: result["curves"] for case, result in data["cases"].items()}
    pixels = picture(viz.convergence(curves_by_case, str(tmp_path / "convergence.png")), 300, 1000)
    rows = -(-len(curves_by_case) // 4)
    assert pixels.shape[0] > 250 * rows  # a row of subplots per 4 cases
    one = picture(
        viz.convergence(
            {"a": curves_by_case[next(iter(curves_by_case))]}, str(tmp_path / "one.png"), tolerance=0.05
        )
    )
    assert one.shape[0] < pixels.shape[0]


def test_benchmark_plot_draws_with_viz(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts benchmarks/ on the path
    had_common = "_common" in sys.modules
    spec = importlib.util.spec_from_file_location(
        "_iso_convergence", ROOT / "benchmarks" / "iso_convergence.py"
    )
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        if not had_common:
            sys.modules.pop("_common", None)
    data = json.loads(STUDY.read_text())
    case = next(iter(data["cases"]))
    path = str(tmp_path / "plot.png")
    assert module.plot({case: data["cases"][case]["curves"]}, path) == path
    picture(path)


def test_heat_limits_closed_forms(rng):
    heats = {"a": rng.normal(size=(3, 4, 4)), "b": 10 * rng.normal(size=(3, 4, 4))}
    q = lambda v: np.percentile(np.abs(v), 90.0)
    per_example = viz.heat_limits(heats, "per_example", 90.0)
    for name, maps in heats.items():
        np.testing.assert_allclose(per_example[name], [q(m) for m in maps], rtol=1e-6)
    per_method = viz.heat_limits(heats, "per_method", 90.0)
    np.testing.assert_allclose(per_method["a"], np.full(3, q(heats["a"])), rtol=1e-6)
    np.testing.assert_allclose(per_method["b"], np.full(3, q(heats["b"])), rtol=1e-6)
    shared = viz.heat_limits(heats, "shared", 90.0)
    expected = q(np.concatenate([heats["a"], heats["b"]]))
    for limits in shared.values():
        np.testing.assert_allclose(limits, np.full(3, expected), rtol=1e-6)
    assert all(np.all(limits == 0.25) for limits in viz.heat_limits(heats, 0.25).values())


def test_image_attributions_scales_and_colorbars(rng):
    inputs = rng.uniform(size=(3, 6, 6, 1))
    values = rng.normal(size=(3, 6, 6)) * np.array([1.0, 10.0, 100.0])[:, None, None]
    limit = lambda v: np.percentile(np.abs(v), 99.0)

    own = viz.image_attributions(inputs, values, columns=2)
    assert isinstance(own, Figure)
    maps = heat_axes(own)
    np.testing.assert_allclose(
        [ax.images[-1].norm.vmax for ax in maps], [limit(v) for v in values], rtol=1e-5
    )
    assert len(colorbars(own)) == 3  # one beside each map, each on its own scale
    assert "each map on its own scale" in own.get_supxlabel()

    shared = viz.image_attributions(inputs, values, columns=2, scale="shared")
    norms = [ax.images[-1].norm for ax in heat_axes(shared)]
    assert [(n.vmin, n.vmax) for n in norms] == [pytest.approx((-limit(values), limit(values)))] * 3
    (bar,) = colorbars(shared)
    assert bar.get_ylim() == pytest.approx((-limit(values), limit(values)))
    labels = [t.get_text() for t in bar.get_yticklabels()]
    assert labels[0].startswith(("-", "\N{MINUS SIGN}")) and labels[1] == "0" and labels[2].startswith("+")
    assert "red: positive" in shared.get_supxlabel() and "blue: negative" in shared.get_supxlabel()
    assert "one scale for all maps" in shared.get_supxlabel()

    fixed = viz.image_attributions(inputs, values, scale=2.0, mode="absolute")
    assert {(ax.images[-1].norm.vmin, ax.images[-1].norm.vmax) for ax in heat_axes(fixed)} == {(0.0, 2.0)}
    assert "|attribution|" in fixed.get_supxlabel()


def test_method_grid_scales_across_methods(rng):
    inputs = rng.uniform(size=(2, 6, 6, 3))
    methods = {"ig": rng.normal(size=(2, 6, 6, 3)), "gradcam": 50 * rng.normal(size=(2, 3, 3))}
    maps = {name: viz.spatial_map(v, (6, 6)) for name, v in methods.items()}
    per_method = viz.method_grid(inputs, methods, scale="per_method")
    assert len(colorbars(per_method)) == 2  # one per column
    limits = [ax.images[-1].norm.vmax for ax in heat_axes(per_method)]  # row by row
    expected = [viz.clip_scale(maps[name]) for name in methods]
    np.testing.assert_allclose(limits, expected * 2, rtol=1e-5)
    shared = viz.method_grid(inputs, methods, scale="shared")
    assert len(colorbars(shared)) == 1
    both = np.concatenate([maps["ig"], maps["gradcam"]])
    shared_limits = [ax.images[-1].norm.vmax for ax in heat_axes(shared)]
    np.testing.assert_allclose(shared_limits, [viz.clip_scale(both)] * 4, rtol=1e-6)
    assert len(colorbars(viz.method_grid(inputs, methods))) == 4  # per example: one per map


@pytest.mark.parametrize("scale, error", [("global", ValueError), (-1.0, ValueError), (True, TypeError)])
def test_bad_scale_is_refused(tmp_path, images, scale, error):
    gray, _ = images
    with pytest.raises(error, match="scale must be"):
        viz.image_attributions(gray, gray, str(tmp_path / "x.png"), scale=scale)
    with pytest.raises(error, match="scale must be"):
        viz.method_grid(gray, {"a": gray}, str(tmp_path / "y.png"), scale=scale)
    assert not list(tmp_path.iterdir())


def test_pictures_return_figures_outside_pyplot(rng):
    """path=None returns the Figure (the tests above save with a path); pyplot holds none."""
    images = rng.uniform(size=(2, 4, 4, 1))
    table = rng.normal(size=(2, 3))
    fractions = np.linspace(0, 1, 4)
    study = {"case": {"gl": {"cost": [1, 2, 4], "median_l2": [0.1, 0.01, 0.001]}}}
    before = plt.get_fignums()
    figures = {
        "image_attributions": viz.image_attributions(images, images),
        "method_grid": viz.method_grid(images, {"a": images}),
        "tabular_attributions": viz.tabular_attributions(table),
        "token_attributions": viz.token_attributions([["a", "b", "c"]], table[:1]),
        "curves": viz.curves({"a": (fractions, 1 - fractions)}),
        "convergence": viz.convergence(study),
    }
    for name, figure in figures.items():
        assert isinstance(figure, Figure) and figure.axes, name
        assert figure.canvas.manager is None, name  # not a pyplot figure: never shown twice
    assert plt.get_fignums() == before
    freed = [weakref.ref(figure) for figure in figures.values()]
    del figure, figures
    gc.collect()
    assert all(ref() is None for ref in freed)  # nothing to close: no one else holds them


def test_view_renders_inline(rng):
    images = rng.uniform(size=(2, 5, 5, 1))
    attribution = Attribution(values=rng.normal(size=(2, 5, 5, 1)), target=np.zeros(2, np.int32))
    view = viz.show(attribution, images, scale="shared")
    assert isinstance(view.figure, Figure) and len(colorbars(view.figure)) == 1
    png = view._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(io.BytesIO(png))
    width, height = view.figure.get_size_inches() * 100
    assert pixels.shape[:2] == (round(height), round(width))
    page = view._repr_html_()
    found = re.fullmatch(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="attributions">', page)
    assert found and base64.b64decode(found.group(1)) == png

    table = viz.show(rng.normal(size=(2, 3)), feature_names=["a", "b", "c"])
    assert [t.get_text() for t in table.figure.axes[0].get_xticklabels()] == ["a", "b", "c"]
    assert table._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"

    words = [["good", "<b>"], ["bad"]]
    text = viz.show(np.array([[1.0, 0.0], [-1.0, 9.0]]), tokens=words, row_labels=["x", "y"])
    block = text._repr_html_()
    assert "<!DOCTYPE" not in block and "<body" not in block and "body {" not in block
    assert "&lt;b&gt;" in block and "<b>" not in block
    assert block.count('class="row"') == 2
    assert re.search(r"background-color:#([0-9a-f]{6});[^\"]*\" title=\"1\">good</span>", block)
    assert block in viz.text_html(words, np.array([[1.0, 0.0], [-1.0, 9.0]]), row_labels=["x", "y"])
    assert text._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_refuses_what_it_cannot_draw(rng):
    with pytest.raises(ValueError, match="x: image attributions"):
        viz.show(rng.normal(size=(2, 4, 4)))
    with pytest.raises(ValueError, match="values must be"):
        viz.show(rng.normal(size=5))
    with pytest.raises(ValueError, match="row 0"):
        viz.show(np.ones((1, 1)), tokens=[["a", "b"]])


def test_view_saves(tmp_path, rng):
    view = viz.show(rng.normal(size=(2, 3)))
    path = tmp_path / "table.png"
    assert view.save(path) == path
    saved, inline = matplotlib.image.imread(path), matplotlib.image.imread(io.BytesIO(view.png()))
    # the file holds the picture the notebook shows (a second layout pass may move a pixel)
    assert saved.shape == inline.shape and np.abs(saved - inline).mean() < 1e-3
    with pytest.raises(ValueError, match="path"):
        view.save(tmp_path / "missing" / "x.png")


def test_docstring_examples():
    result = doctest.testmod(viz, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
