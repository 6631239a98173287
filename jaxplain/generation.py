"""Attributions of generated text: every generated token's score, in one compiled program.

A causal language model maps token ids `(batch, T)` to next-token logits `(batch, T,
vocab)`. Given a prompt `(batch, P)` and the tokens generated after it `(batch, G)`,
the sequence is `concat(prompt, generated)` and generated token j (at position P + j)
has the score

    s_j = log p(generated_j | sequence[:P + j]) = log_softmax(logits[:, P + j - 1])[generated_j],

or, with a foil token c_j (`contrast=`), s_j = log p(generated_j) - log p(c_j). Every
s_j is attributed to the P + G source positions, so the result is a `(batch, G, P + G)`
matrix whose row j is zero at the sources P + j and after (they cannot change s_j).

How. The G scores are the outputs of one derived model, with as many "classes" as
generated tokens, and an existing jaxplain method explains all of them at once (target
= every class): the engine evaluates the G targets with one forward pass and a
backward pass vmapped over them, not one call per token as Captum's LLMAttribution
and Inseq do. Gradient methods differentiate the token embeddings (the output of the
embedding layer, with the ids held fixed, as `token_attributions` does); perturbation
methods replace token ids. The ids that are scored (the generated tokens and foils) are
read from an unperturbed copy, so occluding position P + j does not change which
token s_j is about.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, engine, schedules
from jaxplain.methods import layers
from jaxplain.methods.gradients import input_x_gradient, saliency
from jaxplain.methods.integrated import straight_path
from jaxplain.methods.perturbation import feature_ablation, occlusion
from jaxplain.methods.rules import ATTENTION_RULES, lrp
from jaxplain.model import Model, Output, _select

Array = jax.Array

# Each method and the options it takes (the others must be left unset).
METHOD_OPTIONS = {
    "saliency": ("prefix_groups",),
    "input_x_gradient": ("prefix_groups",),
    "integrated_gradients": ("baseline", "steps", "schedule", "chunk_size", "prefix_groups"),
    "lrp": ("rule", "epsilon", "gamma", "attention", "prefix_groups"),
    "occlusion": ("baseline", "window", "chunk_size"),
    "feature_ablation": ("baseline", "feature_mask", "chunk_size"),
}
METHODS = tuple(METHOD_OPTIONS)
_GRADIENT_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "lrp")
_DEFAULTS = {
    "steps": 50,
    "schedule": "gauss_legendre",
    "window": 1,
    "rule": "epsilon",
    "epsilon": 1e-9,
    "gamma": 0.25,
    "attention": "constant",
}
# The lrp rules that need no bounds on the input (z-box would need them for embeddings).
_LRP_RULES = ("epsilon", "gamma", "alpha1beta0")


@dataclasses.dataclass(frozen=True, eq=False)
class GenerationAttribution:
    """What `generation_attributions` returns.

    Attributes:
      values: `(batch, G, P + G)`: values[b, j, t] is source position t's share of
        generated token j's score; exactly 0 for t >= P + j (the causal mask).
      scores: `(batch, G)`: the explained scores s_j at the sequence (log-probability,
        minus the foil's with `contrast`; logits for "lrp").
      tokens: `(batch, P + G)` int ids: the prompt, then the generated tokens.
      prompt_length: P.
      method: the method's name.
      options: the method's settings as sorted (name, value) pairs.
      delta: `(batch, G)` completeness gap sum_t values - output_difference for
        "integrated_gradients" and "lrp"; None for the others.
      output_difference: `(batch, G)`: s_j(x) - s_j(baseline) for the methods with a
        baseline, s_j(x) for "lrp" (the relevance it distributes); None otherwise.
      contrast: `(batch, G)` foil ids, or None.
    """

    values: Array
    scores: Array
    tokens: Array
    prompt_length: int
    method: str
    options: tuple
    delta: Array | None = None
    output_difference: Array | None = None
    contrast: Array | None = None

    @property
    def generated(self) -> Array:
        """`(batch, G)`: the generated token ids."""
        return self.tokens[:, self.prompt_length :]

    def heatmap(self, tokens=None, path=None, *, example: int = 0, percentile: float = 99.0):
        """A generated x source heat-map of one example (`jaxplain.viz` conventions).

        Rows are the generated tokens, columns the sources (prompt, then generated); the
        cells the causal mask leaves out are grey, and a line separates prompt from
        generated sources. Saliency (non-negative) is drawn on a sequential colormap,
        the other methods on the diverging one clipped at `percentile` of |values|.

        Args:
          tokens: P + G strings for the example's positions; by default the ids.
          path: where to write the picture; None returns the Figure.
          example: which example of the batch.
          percentile: colour clipping percentile of |values|.

        Returns:
          A `matplotlib.figure.Figure` (not registered with pyplot), or `path`.
        """
        from jaxplain import viz

        if path is not None:
            viz._output(path)
        values, words = self._example(tokens, example)
        prompt, generated = self.prompt_length, values.shape[0]
        rows = np.arange(generated)[:, None]
        cells = np.where(np.arange(values.shape[1])[None] < prompt + rows, values, np.nan)
        limit = viz.clip_scale(values[~np.isnan(cells)], viz._percentile(percentile))
        mode = "absolute" if self.method == "saliency" else "signed"
        figure = viz._figure(min(24.0, 2.5 + 0.45 * len(words)), min(24.0, 1.6 + 0.4 * generated))
        ax = figure.subplots()
        if mode == "signed":
            image = ax.imshow(cells, cmap=viz._SIGNED_CMAP, vmin=-limit, vmax=limit, aspect="auto")
        else:
            image = ax.imshow(cells, cmap=viz._ABSOLUTE_CMAP, vmin=0.0, vmax=limit, aspect="auto")
        ax.set_facecolor("#d0d0d0")  # the masked cells: sources the token cannot see
        ax.axvline(prompt - 0.5, color="black", linewidth=0.8)
        ax.set_xticks(range(len(words)))
        ax.set_xticklabels(words, rotation=90, fontsize=7)
        ax.set_yticks(range(generated))
        ax.set_yticklabels(words[prompt:], fontsize=7)
        ax.set_xlabel("source token (prompt | generated)", fontsize=8)
        ax.set_ylabel("generated token", fontsize=8)
        ax.set_title(self.method, fontsize=9)
        viz._colorbar(figure, image, ax, mode)
        return viz._finish(figure, path)

    def html(self, tokens=None, path=None, *, example: int = 0, percentile: float = 99.0) -> str:
        """Each generated token with its sources highlighted, as a standalone HTML page.

        Row j is labelled with generated token j and shows the P + j tokens before it,
        coloured by their attribution (`jaxplain.viz.text_html`).

        Args:
          tokens: P + G strings for the example's positions; by default the ids.
          path: when given, the HTML file to write.
          example: which example of the batch.
          percentile: colour clipping percentile of |values|, over all rows.

        Returns:
          The HTML document as a string.
        """
        from jaxplain import viz

        values, words = self._example(tokens, example)
        prompt = self.prompt_length
        rows = [words[: prompt + j] for j in range(values.shape[0])]
        labels = [f"{words[prompt + j]} \u2190" for j in range(values.shape[0])]
        title = f"{self.method}: generated tokens and their sources"
        return viz.text_html(rows, values, path, row_labels=labels, percentile=percentile, title=title)

    def _example(self, tokens, example: int) -> tuple[np.ndarray, list[str]]:
        batch, length = self.tokens.shape
        if (
            isinstance(example, bool)
            or not isinstance(example, (int, np.integer))
            or not 0 <= example < batch
        ):
            raise ValueError(f"example must be an int in 0..{batch - 1}, got {example!r}")
        if tokens is None:
            words = [str(int(i)) for i in np.asarray(self.tokens[example])]
        elif isinstance(tokens, str) or len(tokens) != length:
            raise ValueError(
                f"tokens must be {length} strings, one per position of the example (prompt, then generated)"
            )
        else:
            words = [str(word) for word in tokens]
        return np.asarray(self.values[example], np.float64), words


jax.tree_util.register_dataclass(
    GenerationAttribution,
    data_fields=["values", "scores", "tokens", "delta", "output_difference", "contrast"],
    meta_fields=["prompt_length", "method", "options"],
)


# --- the derived model: the G scores of the generated tokens -----------------------------


@dataclasses.dataclass(frozen=True)
class _Scores:
    """`apply_fn(params, inputs) -> (rows, G)`: the scores of the generated tokens.

    Token ids travel as a block `(rows, n, T)`: row 0 is the sequence the model reads
    (perturbed by perturbation methods), row 1 the unperturbed sequence whose tokens
    P.. are scored, row 2 (with a contrast) the foils at columns P... The inputs are:

    * "ids": `inputs` is the block, `params` the model's;
    * "embeddings": `inputs` are the token embeddings `(rows, T, D)` that replace
      `layer`'s output, and `params` = (the model's params, block);
    * "embeddings_and_ids": `inputs` = (embeddings, block), `params` the model's (the
      block is a per-row context of a path method).
    """

    apply: Any
    select: Any
    prompt_length: int
    inputs: str
    layer: str | None = None
    logits: bool = False  # score the logits instead of the log-probabilities (LRP)

    def __call__(self, params, inputs):
        embeddings = None
        if self.inputs == "ids":
            variables, block = params, inputs
        elif self.inputs == "embeddings":
            (variables, block), embeddings = params, inputs
        else:
            variables, (embeddings, block) = params, inputs
        sequence = block[:, 0]
        if embeddings is None:
            returned = self.apply(variables, sequence)
        else:
            returned = layers._run(self.apply, variables, sequence, self.layer, replacement=embeddings)[0]
        # The logits that predict positions P..T-1: those of positions P-1..T-2.
        logits = _select(returned, self.select)[:, self.prompt_length - 1 : -1]
        scores = logits if self.logits else jax.nn.log_softmax(logits, axis=-1)

        def pick(ids):
            return jnp.take_along_axis(scores, ids[:, self.prompt_length :, None], axis=-1)[..., 0]

        chosen = pick(block[:, 1])
        return chosen - pick(block[:, 2]) if block.shape[1] == 3 else chosen


def _causal(prompt_length: int, length: int) -> np.ndarray:
    """(G, T) bool: source t can change generated token j's score iff t < P + j."""
    generated = length - prompt_length
    return np.arange(length)[None] < prompt_length + np.arange(generated)[:, None]


@engine.program(static_argnames=("method", "prompt_length", "layer", "settings"))
def _attribute(model: Model, block, baseline, *, method, prompt_length, layer, settings):
    """`(values (B, G, T), scores (B, G), delta, output_difference)` of one method."""
    options = dict(settings)
    _, rows, length = block.shape
    target = np.arange(length - prompt_length)[None]  # every generated token: (1, G)
    select = model.output.select if isinstance(model.output, Output) else ()

    def scores_model(inputs: str, params, *, logits=False) -> Model:
        return Model(_Scores(model.apply_fn, select, prompt_length, inputs, layer, logits), params)

    scores = scores_model("ids", model.params)(block)
    delta = difference = None
    if method in ("occlusion", "feature_ablation"):
        on_ids = scores_model("ids", model.params)
        if method == "occlusion":
            # The window slides along the sequence row only: a stride of `rows` on the
            # block's first axis leaves one start, row 0.
            result = occlusion(
                on_ids,
                block,
                target=target,
                window=(1, options["window"]),
                stride=(rows, 1),
                baseline=block.at[:, 0].set(
                    jnp.broadcast_to(baseline, block[:, 0].shape).astype(block.dtype)
                ),
                chunk_size=options["chunk_size"],
            )
        else:
            # Rows 1.. are in group 0 with a baseline equal to themselves: never changed.
            mask = np.zeros((rows, length), np.int32)
            mask[0] = options["feature_mask"]
            result = feature_ablation(
                on_ids,
                block,
                target=target,
                baseline=block.at[:, 0].set(
                    jnp.broadcast_to(baseline, block[:, 0].shape).astype(block.dtype)
                ),
                feature_mask=mask,
                chunk_size=options["chunk_size"],
            )
        values, difference = result.values[:, :, 0], result.output_difference
    else:
        parts = [
            _gradient_part(
                model,
                block[:, :, : prompt_length + end],
                baseline,
                np.arange(start, end)[None],
                method,
                prompt_length,
                layer,
                options,
                scores_model,
            )
            for start, end in _buckets(length - prompt_length, options["prefix_groups"])
        ]
        values = jnp.concatenate(
            [jnp.pad(v, ((0, 0), (0, 0), (0, length - v.shape[-1]))) for v, _ in parts], axis=1
        )
        if parts[0][1] is not None:
            difference = jnp.concatenate([d for _, d in parts], axis=1)
        if method == "lrp":
            scores = difference
    values = jnp.where(_causal(prompt_length, length), values, 0.0)
    if method in ("integrated_gradients", "lrp"):
        delta = values.sum(axis=-1) - difference
    return values, scores, delta, difference


# The gradient methods attribute the generated tokens in groups of consecutive positions,
# each group on the prefix it can see (a causal model's scores do not depend on later
# positions): with G tokens in enough groups they process about sum_j (P + j) positions
# instead of G (P + G), as a per-token loop does, in one program. By default one group per
# TOKENS_PER_GROUP tokens, at most PREFIX_GROUPS (each group is its own part of the program).
PREFIX_GROUPS = 8
TOKENS_PER_GROUP = 4


def _buckets(generated: int, groups: int | None) -> list[tuple[int, int]]:
    """[start, end) ranges of generated positions: `groups` of them (by default one per
    TOKENS_PER_GROUP tokens, at most PREFIX_GROUPS)."""
    if groups is None:
        groups = min(PREFIX_GROUPS, -(-generated // TOKENS_PER_GROUP))
    edges = np.unique(np.linspace(0, generated, min(generated, groups) + 1).round().astype(int))
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def _gradient_part(model, block, baseline, target, method, prompt_length, layer, options, scores_model):
    """(values (B, k, T'), output difference (B, k) or None) of the gradient methods for the
    k generated positions `target` on the prefix `block` (B, rows, T')."""
    _, embeddings = layers._run(model.apply_fn, model.params, block[:, 0], layer)
    on_embeddings = scores_model("embeddings", (model.params, block), logits=method == "lrp")
    if method == "saliency":
        return jnp.linalg.norm(saliency(on_embeddings, embeddings, target=target).values, axis=-1), None
    if method == "input_x_gradient":
        return input_x_gradient(on_embeddings, embeddings, target=target).values.sum(axis=-1), None
    if method == "lrp":
        result = lrp(
            on_embeddings,
            embeddings,
            target=target,
            rule=options["rule"],
            epsilon=options["epsilon"],
            gamma=options["gamma"],
            attention=options["attention"],
        )
        return result.values.sum(axis=-1), result.output_difference
    if options["zero_baseline"]:
        reference = jnp.zeros_like(embeddings)
    else:
        ids = jnp.broadcast_to(
            baseline, (block.shape[0], baseline.shape[-1] if baseline.ndim else block.shape[-1])
        )
        ids = ids[:, : block.shape[-1]].astype(block.dtype)
        reference = layers._run(model.apply_fn, model.params, ids, layer)[1]
    return _integrated(
        scores_model("embeddings_and_ids", model.params), embeddings, reference, block, target, options
    )


def _integrated(on_both: Model, embeddings, baseline, block, target, options):
    """IG on the embeddings, from the baseline's embeddings, of all G scores at once."""
    batch = embeddings.shape[0]
    baseline = jnp.broadcast_to(baseline, embeddings.shape).astype(embeddings.dtype)
    ends = on_both((jnp.concatenate([embeddings, baseline]), jnp.concatenate([block, block])))
    acc_dtype = engine.accumulation_dtype(embeddings)
    at_x, at_baseline = ends[:batch].astype(acc_dtype), ends[batch:].astype(acc_dtype)
    chosen = jnp.broadcast_to(jnp.asarray(target, jnp.int32), (batch, np.shape(target)[-1]))
    values = straight_path(  # the path waits for the endpoint pass (`engine.tie`)
        on_both,
        engine.tie(embeddings, at_x),
        baseline,
        chosen,
        steps=options["steps"],
        schedule=options["schedule"],
        chunk_size=options["chunk_size"],
        context=block,
    )
    return values.sum(axis=-1), jnp.take_along_axis(at_x - at_baseline, chosen, axis=1)


# --- the public function ----------------------------------------------------------------


def _ids(name: str, value, rank: int = 2) -> np.ndarray:
    if _checks.is_traced(value):
        raise TypeError(f"{name} must be concrete token ids, not a traced value")
    try:
        ids = np.asarray(value)
    except Exception as error:
        raise TypeError(f"{name} must be an int array of token ids, got {type(value).__name__}") from error
    if ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.ndim != rank:
        raise ValueError(f"{name} must be token ids of shape (batch, length), got shape {ids.shape}")
    return ids.astype(np.int32)


def _vocabulary(model: Model, sequence: np.ndarray) -> int:
    """The model's vocabulary size, checking that it maps ids (B, T) to logits (B, T, V)."""
    transform = model.output.transform if isinstance(model.output, Output) else model.output
    if transform not in ("logits", "log_probs") or getattr(model.output, "region", None) is not None:
        raise ValueError(
            f"model: generated text is scored by log-probabilities computed from the model's logits; "
            f"got output={model.output!r}. Use model.with_output('logits')"
        )
    try:
        out = engine.output_struct(model, sequence)  # cached: traced once per shape
    except Exception as error:
        raise ValueError(
            f"model cannot be applied to the sequence (prompt, then generated) of shape {sequence.shape}: "
            f"{type(error).__name__}: {error}"
        ) from error
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 3 or tuple(shape[:2]) != sequence.shape:
        raise ValueError(
            f"model must map token ids (batch, length) to next-token logits (batch, length, vocab); for "
            f"ids of shape {sequence.shape} it returned {shape if shape is not None else type(out).__name__}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"model must return floating-point logits, got dtype {out.dtype}")
    return int(shape[2])


def _check_range(name: str, ids: np.ndarray, size: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        raise ValueError(
            f"{name} holds token ids {ids.min()}..{ids.max()}, outside the vocabulary 0..{size - 1}"
        )


def _settings(method: str, given: dict, length: int) -> dict:
    """The method's options, defaults filled in; an option another method takes is refused."""
    for name, value in given.items():
        if value is not None and name not in METHOD_OPTIONS[method]:
            users = [m for m, names in METHOD_OPTIONS.items() if name in names]
            raise ValueError(f"{name} is an option of {', '.join(users)}, not of method={method!r}")
    options = {name: given.get(name) for name in METHOD_OPTIONS[method] if name != "baseline"}
    for name in options:
        if options[name] is None and name in _DEFAULTS:
            options[name] = _DEFAULTS[name]
    if "steps" in options:
        options["steps"] = _checks.positive_int("steps", options["steps"])
        options["schedule"] = _checks.schedule(options["schedule"])
        schedules.check_steps(options["schedule"], options["steps"])
    if "chunk_size" in options:
        options["chunk_size"] = _checks.chunk_size(options["chunk_size"])
    if "window" in options:
        window = _checks.positive_int("window", options["window"])
        if window > length:
            raise ValueError(f"window must be at most the sequence's {length} tokens, got {window}")
        options["window"] = window
    if "rule" in options:
        options["rule"] = _checks.choice("rule", options["rule"], _LRP_RULES)
        options["epsilon"] = _checks.number("epsilon", options["epsilon"])
        options["gamma"] = _checks.number("gamma", options["gamma"])
        options["attention"] = _checks.choice("attention", options["attention"], ATTENTION_RULES)
    if options.get("prefix_groups") is not None:
        options["prefix_groups"] = _checks.positive_int("prefix_groups", options["prefix_groups"])
    if "feature_mask" in options:
        groups = np.arange(length) if options["feature_mask"] is None else options["feature_mask"]
        mask, _ = _checks.feature_mask(np.asarray(groups), np.zeros((1, length), np.int32))
        options["feature_mask"] = tuple(int(g) for g in mask)
    return options


def generation_attributions(
    model: Model,
    prompt,
    generated,
    *,
    method: str = "integrated_gradients",
    contrast=None,
    layer: str | None = None,
    baseline=None,
    steps: int | None = None,
    schedule: str | None = None,
    chunk_size: int | None = None,
    window: int | None = None,
    feature_mask=None,
    rule: str | None = None,
    epsilon: float | None = None,
    gamma: float | None = None,
    attention: str | None = None,
    prefix_groups: int | None = None,
) -> GenerationAttribution:
    """Attributes every generated token's score to the prompt and the tokens before it.

    With the sequence x = concat(prompt, generated) of length T = P + G, generated token
    j is scored by

    .. math::

        s_j(x) = \\log p(x_{P+j} \\mid x_{<P+j})
               \\;\\big[- \\log p(c_j \\mid x_{<P+j})\\big]

    (the bracket with `contrast` c), and the method explains all G scores in one
    compiled program: they are the G outputs of one derived model, explained together
    (one forward pass, the backward pass vmapped over the G targets; perturbation
    methods take all G scores from each perturbed forward pass). values[b, j, t] is
    source t's share of s_j; sources t >= P + j are set to exactly 0 (for a causal
    model they cannot change s_j, and the methods give 0 there anyway).

    Methods, with e_t the token embedding of position t (the output of the embedding
    layer; positions, masks and everything else still come from the ids):

    * "saliency": ||ds_j / de_t||_2, the gradient's Euclidean norm over the embedding
      dimensions (non-negative; as Inseq's saliency).
    * "input_x_gradient": sum_d e_td ds_j / de_td.
    * "integrated_gradients": IG on the embeddings from the baseline embeddings (the
      `baseline` token's embedding at every position, by default the model's `pad_id`
      or id 0; `baseline="zero"` for zero vectors), summed over the dimensions: sum_t
      values = s_j(x) - s_j(baseline) up to the quadrature gap `delta`.
    * "lrp": `jaxplain.lrp` on the embeddings, of the generated token's LOGIT (LRP is
      defined for logits, not for a log-softmax; with `contrast` the score is
      logit(token) - logit(foil), which equals the log-probability difference). It
      needs the rules through the model's layers (LayerNorm, attention, GELU) that
      `jaxplain.lrp` supports.
    * "occlusion": s_j(x) - s_j(x with a window of `window` tokens replaced by the
      `baseline` id), averaged over the windows covering each token (Captum's
      Occlusion with stride 1); one forward pass per window position.
    * "feature_ablation": s_j(x) - s_j(x with token group g replaced by the baseline
      id), one forward pass per group (`feature_mask`: a group id per position; each
      position its own group by default).

    The scored tokens (generated and foils) are never perturbed: occluding position
    P + j changes the context of later tokens, not which token s_j is about.

    Args:
      model: a `jaxplain.Model` of a causal LM: int ids `(batch, T)` in, next-token
        logits `(batch, T, vocab)` out (`output="logits"` or `jaxplain.select(...)` of
        them). Gradient methods need a Linen or NNX model (`Model.from_linen`,
        `Model.from_nnx`) with an embedding layer.
      prompt: int ids `(batch, P)`, P >= 1.
      generated: int ids `(batch, G)`, the tokens that followed the prompt.
      method: one of `METHODS`.
      contrast: int foil ids `(batch, G)`, or None.
      layer: the embedding layer's name (gradient methods); by default the model's only
        `nn.Embed` / `nnx.Embed`. Any layer with one vector per position, `(batch,
        P + G, features)`, may be named (e.g. a block: its outputs per position are
        attributed instead of the token embeddings).
      baseline: the id that replaces tokens (IG's baseline embeddings, occlusion,
        ablation); by default the model's `pad_id` or 0. IG also takes "zero". Or ids
        per position `(P + G,)` or per example `(batch, P + G)`: a position whose
        baseline id is its own token is never changed and gets 0 from IG, occlusion and
        ablation; e.g. the prompt's positions set to the pad id and the generated ones
        to the generated tokens attribute to the prompt only, as Captum's
        LLMGradientAttribution and Inseq do.
      steps, schedule, chunk_size: IG's (defaults 50, "gauss_legendre"); chunk_size
        also for the perturbation methods.
      window: occlusion's window, in tokens (default 1).
      feature_mask: feature_ablation's group id per position `(P + G,)`, 0..n-1.
      rule, epsilon, gamma, attention: lrp's ("epsilon", "gamma" or "alpha1beta0"; 1e-9;
        0.25; "constant", the attention weights held, or "attnlrp").
      prefix_groups: the gradient methods run the generated tokens in this many groups of
        consecutive positions, each on the prefix its last token sees (fewer positions
        processed, more parts in the program); by default one per 4 tokens, at most 8.
        The values do not depend on it.

    Returns:
      A `GenerationAttribution`: `values (batch, G, P + G)`, `scores (batch, G)`,
      `tokens`, and `delta` / `output_difference` where the method has them; its
      `heatmap()` and `html()` draw it.

    Example:
      A bigram model (the logits at position t depend on token t only), occlusion by id 0:

      >>> import jax.numpy as jnp, numpy as np, jaxplain
      >>> p = jnp.array([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5], [0.1, 0.1, 0.8]])
      >>> bigram = jaxplain.Model(lambda table, ids: table[ids], jnp.log(p))
      >>> a = jaxplain.generation_attributions(
      ...     bigram, jnp.array([[0, 1]]), jnp.array([[2, 2]]), method="occlusion", baseline=0
      ... )
      >>> np.asarray(a.values, np.float64).round(3).tolist()  # log(0.5 / 0.25), log(0.8 / 0.25)
      [[[0.0, 0.693, 0.0, 0.0], [0.0, 0.0, 1.163, 0.0]]]

    References:
      Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks.
      arXiv:1703.01365, 2017.
      Yin, Neubig. Interpreting Language Models with Contrastive Explanations.
      arXiv:2202.10419, 2022.
      Sarti, Feldhus, Sickert, van der Wal, Nissim, Bisazza. Inseq: An
      Interpretability Toolkit for Sequence Generation Models. arXiv:2302.13942, 2023.
    """
    _checks.check_model(model)
    method = _checks.choice("method", method, METHODS)
    prompt, generated = _ids("prompt", prompt), _ids("generated", generated)
    if prompt.shape[1] < 1:
        raise ValueError("prompt must hold at least one token per example: the first score reads its logits")
    if generated.shape[1] < 1:
        raise ValueError("generated must hold at least one token per example")
    if generated.shape[0] != prompt.shape[0]:
        raise ValueError(
            f"generated has {generated.shape[0]} examples but prompt has {prompt.shape[0]}; pass one row each"
        )
    sequence = np.concatenate([prompt, generated], axis=1)
    rows = [sequence, sequence]
    if contrast is not None:
        foils = _ids("contrast", contrast)
        if foils.shape != generated.shape:
            raise ValueError(
                f"contrast must hold one foil id per generated token, shape {generated.shape}, got {foils.shape}"
            )
        rows.append(np.concatenate([np.zeros_like(prompt), foils], axis=1))
    vocabulary = _vocabulary(model, sequence)
    _check_range("prompt", prompt, vocabulary)
    _check_range("generated", generated, vocabulary)
    if contrast is not None:
        _check_range("contrast", foils, vocabulary)
    length = sequence.shape[1]
    options = _settings(
        method,
        {
            "baseline": baseline,
            "steps": steps,
            "schedule": schedule,
            "chunk_size": chunk_size,
            "window": window,
            "feature_mask": feature_mask,
            "rule": rule,
            "epsilon": epsilon,
            "gamma": gamma,
            "attention": attention,
            "prefix_groups": prefix_groups,
        },
        length,
    )
    if method in _GRADIENT_METHODS:
        layers._check_named(model)
        layer = _embedding_layer(model, sequence) if layer is None else layer
        shape = tuple(layers._check_layer(model, sequence, layer).output.shape)
        if len(shape) != 3 or shape[:2] != sequence.shape:
            raise ValueError(
                f"layer {layer!r} outputs shape {shape}; generation attributions need one vector per "
                f"position, (batch, length, features) = {sequence.shape + ('D',)}, e.g. the token embeddings"
            )
        layers._check_ids(model, sequence, layer, ("prompt", prompt), ("generated", generated))
    elif layer is not None:
        raise ValueError(
            f"layer is used by the gradient methods {_GRADIENT_METHODS}, not by method={method!r}"
        )
    zero = isinstance(baseline, str) and baseline == "zero"
    if (
        "baseline" in METHOD_OPTIONS[method]
        and isinstance(baseline, str)
        and not (zero and method == "integrated_gradients")
    ):
        raise ValueError(
            f"baseline must be a token id (or 'zero' for integrated_gradients), got {baseline!r}"
        )
    baseline_id = 0 if zero else _baseline_id(model, baseline, vocabulary, sequence.shape)
    if method == "integrated_gradients":
        options["zero_baseline"] = zero
        if not zero:
            layers._check_ids(model, sequence, layer, ("baseline", np.reshape(baseline_id, (1, -1))))
    values, scores, delta, difference = _attribute(
        model,
        jnp.asarray(np.stack(rows, axis=1)),
        jnp.asarray(baseline_id, jnp.int32),
        method=method,
        prompt_length=prompt.shape[1],
        layer=layer,
        settings=tuple(sorted(options.items())),
    )
    if "baseline" in METHOD_OPTIONS[method]:
        options["baseline"] = "zero" if zero else _static(baseline_id)
    return GenerationAttribution(
        values=values,
        scores=scores,
        tokens=jnp.asarray(sequence),
        prompt_length=prompt.shape[1],
        method=method,
        options=tuple(sorted(options.items())),
        delta=delta,
        output_difference=difference,
        contrast=None if contrast is None else jnp.asarray(rows[2][:, prompt.shape[1] :]),
    )


def _embedding_layer(model: Model, sequence: np.ndarray) -> str:
    """The model's only embedding layer, as `layers.embedding_layer` finds it (which
    also checks for a classifier's (batch, classes) output)."""
    found = [
        path
        for path, call in layers._layers(model, sequence).items()
        if issubclass(call.module_type, layers._EMBEDDINGS)
    ]
    if len(found) != 1:
        raise ValueError(
            f"layer=None needs exactly one embedding layer (nn.Embed or nnx.Embed), this model has "
            f"{found or 'none'}; pass layer= one of: {layers._describe(layers._layers(model, sequence))}"
        )
    return found[0]


def _static(ids):
    """A baseline as the options record it: an int, or nested tuples of ids."""
    ids = np.asarray(ids)
    return int(ids) if ids.ndim == 0 else tuple(_static(row) for row in ids)


def _baseline_id(model: Model, baseline, vocabulary: int, shape: tuple[int, int]):
    """The baseline token id(s): the given id, or ids per position `(P + G,)` or per
    example and position `(batch, P + G)`; else the model's `pad_id`, else 0."""
    if baseline is None:
        try:
            layers._check_named(model)
        except TypeError:
            return 0  # no Linen or NNX root to read a pad_id from
        baseline = layers._root_attribute(model, "pad_id", 0)
    if not isinstance(baseline, (bool, int, np.integer)) and np.ndim(baseline) >= 1:
        ids = np.asarray(baseline)
        if not np.issubdtype(ids.dtype, np.integer) or ids.shape not in ((shape[1],), shape):
            raise ValueError(
                f"baseline must be one token id, ids per position {(shape[1],)} or per example and "
                f"position {shape}, got {ids.dtype} {ids.shape}"
            )
        _check_range("baseline", ids, vocabulary)
        return ids.astype(np.int32)
    if isinstance(baseline, bool) or not isinstance(baseline, (int, np.integer)):
        raise TypeError(f"baseline must be one token id (an int), got {type(baseline).__name__} {baseline!r}")
    _check_range("baseline", np.asarray([baseline]), vocabulary)
    return int(baseline)


__all__ = ["METHODS", "GenerationAttribution", "generation_attributions"]
