"""Modified backward rules: guided backprop, deconvnet, DeepLIFT and LRP.

These methods are gradients of the model with some derivatives replaced. jaxplain replaces
them in the model's *function*, not in its modules: the apply function is traced to a jaxpr
and evaluated by a small interpreter that

* recurses into nested functions (`jit`, `custom_jvp_call` such as `jax.nn.relu`,
  `custom_vjp_call`, `checkpoint`), so a model that calls `jax.nn.relu` or `flax.linen.relu`
  directly is explained as well as one with an `activation` field;
* tracks which values depend on the input x (parameters and constants do not);
* replaces the operations on x-dependent values that a method redefines with
  `jax.custom_vjp` functions, and raises a `ValueError` naming the primitive and the line
  it comes from for an operation the method has no rule for.

The backward pass is then an ordinary `jax.vjp` through `engine.gradients` or
`engine.path_gradients`: one compiled program, batched, with several targets sharing one
forward pass.

What each method does with each kind of x-dependent operation (z is the operation's input,
g the incoming gradient, z' the reference's value of z in DeepLIFT):

| operation on x-dependent values | guided_backprop / deconvnet | deeplift / deeplift_shap | lrp |
|---|---|---|---|
| ReLU: `max(z, c)`, c independent of x (`jax.nn.relu`, `nn.relu`, `jnp.maximum(z, 0)`, also inside `relu6` and `jnp.clip`) | g * (z > c) * (g > 0) / relu(g) | Rescale: (f(z) - f(z')) / (z - z') | relevance passes: f(z) / z |
| other activations: `tanh`, `logistic`, `min(z, c)`, any `jit`, `custom_jvp` or `custom_vjp` function that is elementwise in one x-dependent array (`jax.nn.leaky_relu`, `elu`, `selu`, `silu`, `softplus`, `mish`, ...), and any elementwise function of one x-dependent value written out in primitives (`jax.nn.gelu`, both forms, `x * jax.nn.sigmoid(x)`, `x * x`, `exp`) | gradient | Rescale of the whole function | relevance passes |
| `dot_general` / `conv_general_dilated` whose other operand does not depend on x (dense and convolution layers) | gradient | gradient | the layer rule (below) |
| other linear operations: add / sub, mul / div by x-independent values (biases, eval-mode BatchNorm), residual adds, reshape, transpose, broadcast, slice, concatenate, pad, gather at x-independent indices, select with an x-independent condition, reduce_sum, mean, average pooling (`reduce_window_sum`), cumsum, stop_gradient | gradient | gradient | gradient (LRP-0: relevance split in proportion to the contributions) |
| normalisation: `rsqrt` / `sqrt` of an x-dependent value and everything that feeds only into it (LayerNorm, RMSNorm, GroupNorm, train-mode BatchNorm, L2 normalisation) | gradient | exact: the square and the rsqrt by their secants, (z - mean) * r by the product split (nothing held) | the factor r held (a constant) |
| softmax (`jax.nn.softmax`, or exp(z - stop_gradient(max z)) / sum written out), e.g. attention weights | gradient | exact multipliers (below) | attention="constant": the weights held, and what feeds only into them; "attnlrp": the softmax's gradient |
| products of two x-dependent values: `mul`, `dot_general` (q.k and weights.v in attention, gated units, LSTM gates) | gradient | the exact split f(a - a', b̄) + f(ā, b - b') | half of each term's relevance to each factor (AttnLRP's uniform rule) |
| max pooling (`reduce_window_max`) | gradient | Captum's max-pool rule (below) | winner takes all (gradient) |
| `lax.scan` (RNNs, `nn.scan`, `nn.RNN`) | ReLUs inside: ValueError | the body interpreted, unrolled | the body interpreted, unrolled |
| anything else: quotients of two x-dependent values outside a softmax, `reduce_max`, `argmax`, comparisons and selects on x outside an elementwise function, `sort`, `while` / `cond` | gradient | ValueError | ValueError |

Guided backprop and deconvnet only change ReLUs and take the plain gradient through
everything else. Every `max(z, c)` with c independent of x counts as a ReLU. ReLUs inside
`scan`, `while` or `cond` bodies are not reached by guided backprop and deconvnet and
raise an error; DeepLIFT and LRP unroll a `scan` (a fixed number of steps: the program
grows with it) and refuse `while` and `cond`. A custom `jvp` or `vjp` of the user's own is
ignored wherever the interpreter recurses into a function (it evaluates the function's
primal computation).

Transformers. The rules for normalisation and attention follow Ali et al. 2022
(arXiv:2202.07304): a LayerNorm y = (z - mean z) * r, r = 1 / sqrt(var z + eps), is linear
in z once r is held constant (their LN rule), and attention out = A v is linear in v once
the weights A are held (their AH rule). jaxplain finds these factors in the function, not
in modules: a *held* value is the output of an `rsqrt` or `sqrt` of an x-dependent value
(and under LRP with attention="constant", of a softmax), together with every x-dependent
value that feeds only into held values (the variance; the queries, keys and their
product). Held values are evaluated and then stop-gradiented; only LRP holds values.
DeepLIFT needs no such rule: every operation inside a LayerNorm or an attention head has
an exact difference rule, so it carries them exactly. With attention="attnlrp",
LRP follows Achtibat et al. 2024 (AttnLRP, arXiv:2402.05602) instead: relevance flows into
the softmax's logits by its own gradient (their softmax rule, R = z * dF/dz, which does not
conserve: it leaves a bias-like term), and every product of two x-dependent values gives
each factor half of each term's relevance (their uniform rule for q.k and A.v). GELU and
SiLU pass relevance (the identity rule both papers use).

What is conserved, tested in tests/test_transformer_rules.py:
* DeepLIFT: sum(values) = F(x) - F(x') exactly on any model these rules reach, with biases,
  class tokens and position embeddings: the secant of an activation, the split of a
  product f(a, b) - f(a', b') = f(a - a', (b + b') / 2) + f((a + a') / 2, b - b') and the
  softmax's multipliers (exp by its secant, then the quotient
  e / S - e' / S' = (e - e') (S + S') / (2 S S') - (S - S') (e + e') / (2 S S')) each carry
  the difference exactly; a LayerNorm is its square and rsqrt (secants), sums and the
  product (z - mean) * r (the split), so it is carried exactly too. DeepLIFT has one
  attention rule: exact. (Holding r and assigning z * r - z' * r' to z - z' would
  conserve as well, but its multiplier grows without bound where z is close to z' while
  r is not, and in float32 it lost up to 22% of the output difference on the shipped
  ViT; the exact rules lose 0.05%.)
* LRP-epsilon with attention="constant", epsilon -> 0: sum(values) = F(x) when the model
  has no constant terms (biases, LayerNorm offsets, a non-zero class token, position
  embeddings); otherwise `delta` is the relevance those terms absorb. It equals gradient x
  input of the model with the held values stop-gradiented and every activation f(z)
  written as z * stop_gradient(f(z) / z).
* LRP with attention="attnlrp": equals gradient x input of the same model with, in
  addition, every product u * v of two x-dependent values written
  (u * sg(v) + sg(u) * v) / 2; it does not sum to F(x) (the softmax rule's term).

DeepLIFT (Rescale) is computed as a modified gradient times (x - x') (Ancona et al.
2018): the model is evaluated on x and on the reference x' side by side, every activation's
derivative is replaced by its secant (f(z) - f(z')) / (z - z'), falling back to f'(z) where
|z - z'| <= sqrt(machine epsilon) * max(|z|, |z'|), and linear operations keep their
gradients. Max pooling follows Captum's `DeepLift` handler for `MaxPool2d`: with
m = max(pool(z), pool(z')) per window, the window's output difference is split as
g * (m - pool(z')) sent to the argmax of z plus g * (pool(z) - m) sent to the argmax of z',
and each input's multiplier is that sum divided by (z - z') (the plain max-pool gradient
where z = z'). The two parts add up to g * (pool(z) - pool(z')), so summation-to-delta
holds through max pooling; ties go to the first maximum in both libraries. (Captum itself
applies that rule only when no hooked module feeds the MaxPool2d directly: in
`ReLU() -> MaxPool2d()` the ReLU's hook and the pool's hook sit on the same tensor, the
ReLU reads the pool's unmodified gradient, and Captum's result equals the plain max-pool
gradient, with a nonzero summation-to-delta gap. jaxplain agrees with Captum to float
rounding where Captum's rule takes effect, e.g. `ReLU() -> clone -> MaxPool2d()`.)

LRP is computed as a modified gradient too: the cotangent G at a value v carries the
relevance R = v * G, and the attribution is x * G at the input (plus the bound terms of
z-box). Relevance passes unchanged through activations (their derivative becomes f(z) / z,
f'(z) at z = 0, so only functions with f(0) = 0, such as ReLU, tanh, leaky ReLU, ELU or
SiLU, conserve it; logistic and softplus do not) and through max pooling; every other
linear operation keeps its gradient, which is LRP-0. A *layer* is a `dot_general` or
`conv_general_dilated` whose other operand (the weights W) does not depend on x, together
with the chain of elementwise affine operations with x-independent operands that follows
it while each intermediate value has no other use: the bias add, and eval-mode BatchNorm
((z - mean) * scale / sqrt(var + eps) + bias). So BatchNorm is folded into the preceding
layer (as Montavon et al. 2019 recommend), giving y = s * (W a) + t, with effective weights
W' = s * W and bias t. With R_y = y * G_y the relevance at the layer's output and
stab(z) = z + eps * sign(z) (sign(0) = 1), the layer rules are,
with a_i the layer's inputs, w'_ij its effective weights and y_j its outputs:

* "epsilon": R_i = sum_j a_i w'_ij / stab(y_j) R_j, with `epsilon` as eps.
* "gamma": R_i = sum_j a_i (w'_ij + gamma w'+_ij) / stab(sum_i a_i (w'_ij + gamma w'+_ij)
  + t_j + gamma t+_j) R_j. (Captum leaves the bias unchanged; this follows Montavon et
  al. 2019.)
* "alpha1beta0" (z+): R_i = sum_j (a_i w'_ij)+ / stab(sum_i (a_i w'_ij)+ + t+_j) R_j,
  only positive contributions (Bach et al. 2015 with alpha = 1, beta = 0; the z+ rule of
  deep Taylor decomposition for a >= 0).
* "zbox" (first layers only): R_i = sum_j (a_i w'_ij - l_i w'+_ij - h_i w'-_ij) /
  stab(sum_i (a_i w'_ij - l_i w'+_ij - h_i w'-_ij)) R_j for inputs bounded by
  l <= a <= h; the bias is left out, so a first layer conserves relevance exactly.

The rules other than epsilon use eps = 1e-9 (as Captum). A layer reading x through
reshapes, transposes, broadcasts, slices, pads and elementwise affine operations is a
*first* layer: the bounds `low` and `high` are carried to it through the same operations.
`rule="zbox"` is z-box on first layers and epsilon elsewhere; `rule="composite"` is
z-box on first layers, gamma on the other convolutions and epsilon on dense layers (the
composite of Kohlbrenner et al. 2020). With epsilon -> 0 on a ReLU network, LRP-epsilon is
gradient x input (Ancona et al. 2018), biases or not. Captum's LRP with EpsilonRule gives the
same numbers on networks without BatchNorm (Captum treats BatchNorm as its own layer).

Rules and composites. Each layer rule is a small frozen dataclass (`Epsilon`, `Gamma`,
`AlphaBeta`, `ZBox`, or a user's subclass of `Rule`) whose `forward(layer, a)` is the
modified forward pass z(a) of the rules above: the layer's backward pass is
R_a = a * J_z^T (R_y / stab(z)), with the rule's stabiliser, so a new rule is a few lines
(see `Rule`). A `Composite` picks each layer's rule (Zennit's name-map and type-map
composites): by the layer's name, the path of its weights in the parameters ("Conv_0",
"Block_0/Dense_1" for Linen, "layers/0" for NNX; `lrp_layers` lists them), then by
whether it is a first layer, then by its kind ("conv" or "dense"), then a default. The
weights are named by following the parameter leaf through dtype conversions, reshapes,
transposes and broadcasts; a layer whose weights are computed otherwise is named by the
scope JAX recorded (Linen's module path), or "conv_3" / "dense_3" by its position.
The rule strings are composites: the results are the same numbers as when they were
branches.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, _jaxpr, engine
from jaxplain.attribution import Attribution
from jaxplain.methods.registry import register
from jaxplain.model import Model, Targets

LRP_RULES = ("epsilon", "gamma", "alpha1beta0", "zbox", "composite")
ATTENTION_RULES = ("constant", "attnlrp")

# The stabiliser of the LRP rules other than epsilon (Captum's default).
_STABILIZER = 1e-9

_CALLS = _jaxpr.CALLS

# Primitives that act element by element (with size-1 broadcasting of their operands).
_ELEMENTWISE = frozenset(
    {
        "abs",
        "acos",
        "acosh",
        "add",
        "and",
        "asin",
        "asinh",
        "atan",
        "atan2",
        "atanh",
        "cbrt",
        "ceil",
        "clamp",
        "convert_element_type",
        "copy",
        "copy_p",
        "cos",
        "cosh",
        "div",
        "eq",
        "erf",
        "erf_inv",
        "erfc",
        "exp",
        "exp2",
        "expm1",
        "floor",
        "ge",
        "gt",
        "integer_pow",
        "is_finite",
        "le",
        "log",
        "log1p",
        "logistic",
        "lt",
        "max",
        "min",
        "mul",
        "ne",
        "neg",
        "nextafter",
        "not",
        "or",
        "pow",
        "reduce_precision",
        "rem",
        "round",
        "rsqrt",
        "select_n",
        "sign",
        "sin",
        "sinh",
        "sqrt",
        "square",
        "stop_gradient",
        "sub",
        "tan",
        "tanh",
        "xor",
    }
)

# Elementwise primitives that DeepLIFT and LRP treat as activation functions when called on
# one x-dependent operand (with clamp, the middle one).
_ACTIVATIONS = frozenset({"max", "min", "tanh", "logistic", "clamp"})

# Linear operations of the x-dependent operands: name -> which operand positions may
# depend on x (None: any). mul and dot_general are bilinear: at most one operand may.
_ANY = None
_LINEAR = {
    "add": _ANY,
    "add_any": _ANY,
    "sub": _ANY,
    "neg": _ANY,
    "mul": _ANY,
    "dot_general": _ANY,
    "div": (0,),
    "conv_general_dilated": (0,),
    "reshape": _ANY,
    "broadcast_in_dim": (0,),
    "transpose": _ANY,
    "squeeze": _ANY,
    "expand_dims": _ANY,
    "slice": _ANY,
    "dynamic_slice": (0,),
    "gather": (0,),
    "dynamic_update_slice": (0, 1),
    "scatter-add": (0, 2),
    "scatter_add": (0, 2),
    "concatenate": _ANY,
    "pad": _ANY,
    "rev": _ANY,
    "split": _ANY,
    "select_n": "not_first",
    "convert_element_type": _ANY,
    "copy": _ANY,
    "copy_p": _ANY,
    "reduce_precision": _ANY,
    "sharding_constraint": _ANY,
    "reduce_sum": _ANY,
    "reduce_window_sum": _ANY,
    "cumsum": _ANY,
    "stop_gradient": _ANY,
}
_BILINEAR = frozenset({"mul", "dot_general"})

# Operations through which z-box bounds are carried (one x-dependent operand): data
# movement, and elementwise affine maps whose sign flips the layer undoes with min / max.
_CARRY_BOUNDS = frozenset(
    {
        "reshape",
        "broadcast_in_dim",
        "transpose",
        "squeeze",
        "expand_dims",
        "slice",
        "dynamic_slice",
        "gather",
        "concatenate",
        "pad",
        "rev",
        "convert_element_type",
        "copy",
        "copy_p",
        "reduce_precision",
        "sharding_constraint",
        "add",
        "sub",
        "mul",
        "div",
        "neg",
    }
)

# Elementwise affine maps with an x-independent operand, folded into the preceding layer.
_FOLDABLE = frozenset({"add", "sub", "mul", "div", "neg"})

_LAYERS = frozenset({"dot_general", "conv_general_dilated"})


@dataclasses.dataclass(frozen=True)
class _Rules:
    """What the interpreter replaces: static configuration, hashable."""

    method: str  # "guided_backprop", "deconvnet", "deeplift" or "lrp"
    composite: Composite | None = None  # LRP's layer rules (bounds of z-box taken out)
    product_epsilon: float = _STABILIZER  # the stabiliser of LRP's products of two x-dependent values
    attention: str = "constant"  # LRP's softmax rule: "constant" (held) or "attnlrp"
    rule_name: str = ""  # the rule as the user named it, for error messages

    @property
    def rectifiers_only(self) -> bool:
        return self.method in ("guided_backprop", "deconvnet")


class _Dependent:
    """An x-dependent value, with companions evaluated by the same operations.

    The companions are the reference's values for DeepLIFT, and for LRP's z-box the lower
    and upper bounds of the value until they reach the first layer.
    """

    def __init__(self, value, companions=(), first=False):
        self.value = value
        self.companions = tuple(companions)
        self.first = first  # LRP: x itself, or x through operations that carry bounds


class _Detached:
    """An x-dependent value that the rules hold constant: a normalising factor (the
    output of `rsqrt` or `sqrt` and what feeds only into it), or LRP's attention weights
    under attention="constant". Only LRP holds values; no gradient flows through them."""

    def __init__(self, value):
        self.value = jax.lax.stop_gradient(value)


@dataclasses.dataclass
class _Layer:
    """An LRP layer y = scale * linear(a) + shift, still open to fold affine maps into."""

    eqn: Any
    position: int  # which operand of `eqn` is the x-dependent input
    source: _Dependent
    weight: Any
    scale: Any
    shift: Any
    name: str = ""

    def fold(self, name: str, position: int, other) -> _Layer:
        scale, shift = self.scale, self.shift
        if name == "add":
            shift = shift + other
        elif name == "sub" and position == 0:
            shift = shift - other
        elif name == "sub":
            scale, shift = -scale, other - shift
        elif name == "mul":
            scale, shift = scale * other, shift * other
        elif name == "div":
            scale, shift = scale / other, shift / other
        else:  # neg
            scale, shift = -scale, -shift
        return dataclasses.replace(self, scale=scale, shift=shift)


class _State:
    """Mutable bookkeeping of one interpretation."""

    def __init__(self, rules: _Rules):
        self.rules = rules
        self.first_layers = 0  # layers given a rule that reads the bounds
        self.names = {}  # the current jaxpr's variables -> the parameter path they hold
        self.layers = []  # LayerInfo of every layer, in the order the model computes them


# ---------------------------------------------------------------------------------------
# LRP layer rules and composites


class LayerInfo(NamedTuple):
    """A layer as LRP sees it (see `lrp_layers`).

    name: the path of its weights in the model's parameters without the leaf's own key and
      without Linen's "params" collection: "Conv_0", "Block_0/Dense_1" (Linen), "conv",
      "layers/1" (NNX attribute paths), "w1" (a dict of arrays); the weights' scope in
      the traced program where they are computed rather than read.
    kind: "conv" (`conv_general_dilated`) or "dense" (`dot_general`).
    first: whether it reads x through reshapes and affine maps only (z-box's layers).
    """

    name: str
    kind: str
    first: bool


@dataclasses.dataclass(frozen=True)
class LayerView:
    """What a rule sees of a layer y = scale * op(a, W) + shift (bias and eval-mode
    BatchNorm folded in): W' = scale * W are its effective weights.

    Attributes:
      operation: op(v, w), the layer's dot_general or convolution.
      weight, scale, shift: W, and scale and shift broadcastable to y.
    """

    operation: Callable
    weight: Any
    scale: Any
    shift: Any

    def linear(self, v, weight=None):
        """scale * op(v, weight), by default W' v."""
        return self.scale * self.operation(v, self.weight if weight is None else weight)

    def positive(self, v):
        """W'+ v, the positive part of the effective weights."""
        plus, minus = jnp.maximum(self.weight, 0), jnp.minimum(self.weight, 0)
        return jnp.maximum(self.scale, 0) * self.operation(v, plus) + jnp.minimum(
            self.scale, 0
        ) * self.operation(v, minus)

    def negative(self, v):
        """W'- v, the negative part of the effective weights."""
        plus, minus = jnp.maximum(self.weight, 0), jnp.minimum(self.weight, 0)
        return jnp.maximum(self.scale, 0) * self.operation(v, minus) + jnp.minimum(
            self.scale, 0
        ) * self.operation(v, plus)


class Rule:
    """An LRP layer rule: a modified forward pass z(a) whose gradient carries relevance.

    With R_y the relevance of the layer's outputs, a rule's relevance of the inputs is

    .. math::

        R_a = a \\odot J_z(a)^\\top \\big(R_y / \\mathrm{stab}(z(a))\\big),
        \\quad \\mathrm{stab}(z) = z + \\varepsilon\\,\\mathrm{sign}(z)

    (sign(0) = 1, `stabilizer` as epsilon). `forward` may return a tuple of such z's,
    normalised one by one, whose relevances add with the weights `coefficients()`
    (alpha-beta). A rule with `uses_bounds = True` (z-box) is called as
    `forward(layer, a, low, high)` on first layers only, and the relevance of the bound
    terms low * J_low^T (...) and high * J_high^T (...) is added to the attribution. A rule
    is a frozen dataclass: composites and compiled programs hash it.

    Only relevance of the form a * (...) can be expressed: rules whose z does not depend
    on a (flat, w^2) are beyond this protocol.

    Example (LRP-0 with the bias left out, which conserves relevance exactly):
      >>> import dataclasses
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.methods import rules
      >>> @dataclasses.dataclass(frozen=True)
      ... class NoBias(rules.Rule):
      ...     def forward(self, layer, a):
      ...         return layer.linear(a)
      >>> model = jaxplain.Model(lambda p, x: x @ p["w"] + 1.0, {"w": jnp.array([[1.0], [3.0]])})
      >>> rules.lrp(model, jnp.array([[1.0, 1.0]]), target=0, rule=NoBias()).values
      Array([[1.25, 3.75]], dtype=float32)
    """

    stabilizer = _STABILIZER
    uses_bounds = False

    def forward(self, layer: LayerView, a, *bounds):
        raise NotImplementedError(f"{type(self).__name__} must define forward(layer, a)")

    def coefficients(self) -> tuple[float, ...]:
        return ()


@dataclasses.dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon: z = W' a + t, stabilised by epsilon (epsilon -> 0 is LRP-0)."""

    epsilon: float = 1e-9

    def __post_init__(self):
        object.__setattr__(self, "epsilon", _checks.number("epsilon", self.epsilon))

    @property
    def stabilizer(self) -> float:
        return self.epsilon

    def forward(self, layer, a):
        return layer.linear(a) + layer.shift


@dataclasses.dataclass(frozen=True)
class Gamma(Rule):
    """LRP-gamma: z = (W' + gamma W'+) a + t + gamma t+ (Montavon et al. 2019)."""

    gamma: float = 0.25

    def __post_init__(self):
        object.__setattr__(self, "gamma", _checks.number("gamma", self.gamma))

    def forward(self, layer, a):
        gamma = self.gamma
        return layer.linear(a) + gamma * layer.positive(a) + layer.shift + gamma * jnp.maximum(layer.shift, 0)


@dataclasses.dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015): R = alpha R+ - beta R-, with R+ from the positive
    contributions z+ = W'+ a+ + W'- a- + t+ and R- from the negative ones
    z- = W'- a+ + W'+ a- + t-, each normalised by itself. AlphaBeta(1, 0) is z+."""

    alpha: float = 1.0
    beta: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "alpha", _checks.number("alpha", self.alpha))
        object.__setattr__(self, "beta", _checks.number("beta", self.beta))

    def forward(self, layer, a):
        a_plus, a_minus = jnp.where(a > 0, a, 0), jnp.where(a > 0, 0, a)
        z_plus = layer.positive(a_plus) + layer.negative(a_minus) + jnp.maximum(layer.shift, 0)
        if self.beta == 0:
            return (z_plus,)
        z_minus = layer.negative(a_plus) + layer.positive(a_minus) + jnp.minimum(layer.shift, 0)
        return z_plus, z_minus

    def coefficients(self):
        return (self.alpha,) if self.beta == 0 else (self.alpha, -self.beta)


@dataclasses.dataclass(frozen=True)
class ZBox(Rule):
    """z-box for a first layer with inputs low <= a <= high (Montavon et al. 2017):
    z = W' a - W'+ low - W'- high, bias left out; the bound terms' relevance is part of
    the attribution. low and high: scalars, one example or one per example; they bound x
    (every z-box layer of a composite shares them) and do not take part in comparisons."""

    low: Any = dataclasses.field(default=None, compare=False)
    high: Any = dataclasses.field(default=None, compare=False)
    uses_bounds = True

    def forward(self, layer, a, low, high):
        return layer.linear(a) - layer.positive(low) - layer.negative(high)


_KINDS = {"conv_general_dilated": "conv", "dot_general": "dense"}


def _layer_kind(key) -> str:
    """A type map's key as the primitive's kind: "conv", "dense" or a Flax layer class."""
    if isinstance(key, str):
        if key not in ("conv", "dense"):
            raise ValueError(f'type_map keys must be "conv", "dense" or Flax layer classes, got {key!r}')
        return key
    if isinstance(key, type):
        import flax.linen as nn
        from flax import nnx

        kinds = {
            "conv": (nn.Conv, nn.ConvTranspose, nnx.Conv, nnx.ConvTranspose),
            "dense": (nn.Dense, nn.DenseGeneral, nn.Einsum, nnx.Linear, nnx.LinearGeneral, nnx.Einsum),
        }
        for kind, classes in kinds.items():
            if issubclass(key, classes):
                return kind
    raise ValueError(
        'type_map keys must be "conv", "dense" or Flax layer classes (nn.Conv, nn.Dense, nnx.Conv, '
        f"nnx.Linear, ...), got {key!r}"
    )


def _check_rule(name: str, rule) -> Rule:
    if not isinstance(rule, Rule):
        raise TypeError(f"{name} must be an LRP Rule (Epsilon(), Gamma(), ...), got {type(rule).__name__}")
    try:
        hash(rule)
    except TypeError:
        raise TypeError(
            f"{name} must be hashable: define {type(rule).__name__} as a frozen dataclass"
        ) from None
    return rule


def _pairs(name: str, mapping) -> tuple:
    if isinstance(mapping, tuple):
        return mapping
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(mapping).__name__}")
    return tuple(mapping.items())


@dataclasses.dataclass(frozen=True)
class Composite:
    """Rules per layer (Zennit's name-map and type-map composites, Anders et al. 2021).

    A layer's rule is, in this order: the first entry of `name_map` whose glob pattern
    (`fnmatch`, e.g. "Conv_0", "Block_*/Dense_1", "layers/0"; a leading "params/" is
    ignored) matches its name (see `lrp_layers`); `first` on layers that read x through
    reshapes and affine maps only; its kind's rule in `type_map`; `default`. A pattern that
    matches no layer is an error that lists the model's layer names. Products of two
    x-dependent values (attention) are stabilised by `default`'s stabiliser.

    Args:
      name_map: {pattern: Rule}.
      type_map: {kind: Rule}, kind "conv", "dense" or a Flax class standing for its
        primitive (nn.Conv, nnx.Conv -> convolutions; nn.Dense, nn.DenseGeneral,
        nn.Einsum, nnx.Linear, ... -> every dot_general with weights).
      first: the rule of first layers, or None.
      default: the rule of all other layers.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.methods import rules
      >>> model = jaxplain.Model(lambda p, x: x @ p["w"], {"w": jnp.array([[1.0], [-2.0]])})
      >>> composite = rules.Composite(name_map={"w": rules.AlphaBeta(1, 0)})
      >>> rules.lrp(model, jnp.array([[1.0, 1.0]]), target=0, rule=composite).values
      Array([[-1.,  0.]], dtype=float32)
    """

    name_map: Any = ()
    type_map: Any = ()
    first: Rule | None = None
    default: Rule = Epsilon()

    def __post_init__(self):
        names = tuple(
            (_pattern(pattern), _check_rule(f"name_map[{pattern!r}]", rule))
            for pattern, rule in _pairs("name_map", self.name_map)
        )
        for pattern, _ in names:
            if not isinstance(pattern, str):
                raise TypeError(f"name_map keys must be layer names or glob patterns, got {pattern!r}")
        kinds = {}
        for key, rule in _pairs("type_map", self.type_map):
            kind = _layer_kind(key)
            rule = _check_rule(f"type_map[{key!r}]", rule)
            if kinds.get(kind, rule) != rule:
                raise ValueError(f"type_map gives {kind} layers two rules: {kinds[kind]} and {rule}")
            kinds[kind] = rule
        object.__setattr__(self, "name_map", names)
        object.__setattr__(self, "type_map", tuple(kinds.items()))
        if self.first is not None:
            _check_rule("first", self.first)
        _check_rule("default", self.default)

    def rule_for(self, layer: LayerInfo) -> Rule:
        """The rule of one layer."""
        for pattern, rule in self.name_map:
            if fnmatch.fnmatchcase(layer.name, pattern):
                return rule
        if layer.first and self.first is not None:
            return self.first
        return dict(self.type_map).get(layer.kind, self.default)

    def rules(self) -> list[Rule]:
        """Every rule the composite names."""
        named = [rule for _, rule in self.name_map] + [rule for _, rule in self.type_map]
        return named + [r for r in (self.first, self.default) if r is not None]


def _pattern(pattern):
    return (
        pattern[len("params/") :] if isinstance(pattern, str) and pattern.startswith("params/") else pattern
    )


def epsilon_gamma_box(low, high, *, epsilon: float = 1e-6, gamma: float = 0.25) -> Composite:
    """z-box on first layers, gamma on convolutions, epsilon on dense layers (Zennit's
    EpsilonGammaBox; Kohlbrenner et al. 2020). With jaxplain's defaults epsilon=1e-9 it
    is `lrp(rule="composite")`."""
    return Composite(type_map={"conv": Gamma(gamma)}, first=ZBox(low, high), default=Epsilon(epsilon))


def epsilon_plus(*, epsilon: float = 1e-6) -> Composite:
    """z+ (AlphaBeta(1, 0)) on convolutions, epsilon on dense layers (Zennit's EpsilonPlus)."""
    return Composite(type_map={"conv": AlphaBeta(1.0, 0.0)}, default=Epsilon(epsilon))


def epsilon_alpha2_beta1(*, epsilon: float = 1e-6) -> Composite:
    """alpha = 2, beta = 1 on convolutions, epsilon on dense layers (Zennit's
    EpsilonAlpha2Beta1)."""
    return Composite(type_map={"conv": AlphaBeta(2.0, 1.0)}, default=Epsilon(epsilon))


def _string_composite(rule: str, epsilon: float, gamma: float, low, high) -> Composite:
    """The composite a rule string stands for."""
    if rule == "epsilon":
        return Composite(default=Epsilon(epsilon))
    if rule == "gamma":
        return Composite(default=Gamma(gamma))
    if rule == "alpha1beta0":
        return Composite(default=AlphaBeta(1.0, 0.0))
    if rule == "zbox":
        return Composite(first=ZBox(low, high), default=Epsilon(epsilon))
    return Composite(type_map={"conv": Gamma(gamma)}, first=ZBox(low, high), default=Epsilon(epsilon))


def _bounds_of(composite: Composite):
    """(low, high) of the composite's z-box rules, which must agree, or None."""
    boxes = [rule for rule in composite.rules() if rule.uses_bounds]
    if not boxes:
        return None
    low, high = boxes[0].low, boxes[0].high
    for box in boxes[1:]:
        for mine, theirs in ((low, box.low), (high, box.high)):
            if mine is not theirs and (
                _checks.is_traced(mine) or _checks.is_traced(theirs) or not np.array_equal(mine, theirs)
            ):
                raise ValueError(
                    "every ZBox of a composite bounds the same input x: give them the same low and high"
                )
    return low, high


def _without_bounds(composite: Composite) -> Composite:
    """The composite with the bounds taken out of its rules (they travel as inputs)."""

    def strip(rule):
        return (
            dataclasses.replace(rule, low=None, high=None) if rule is not None and rule.uses_bounds else rule
        )

    return Composite(
        name_map=tuple((p, strip(r)) for p, r in composite.name_map),
        type_map=tuple((k, strip(r)) for k, r in composite.type_map),
        first=strip(composite.first),
        default=strip(composite.default),
    )


# ---------------------------------------------------------------------------------------
# The interpreter


_bind = _jaxpr.bind
_body = _jaxpr.body


def _where(eqn) -> str:
    """' (in Module/path, at file:line)' for an error message, as far as JAX recorded it."""
    parts = []
    scope = str(eqn.source_info.name_stack)
    if scope:
        parts.append(f"in {scope}")
    try:
        from jax._src import source_info_util

        summary = source_info_util.summarize(eqn.source_info)
        if summary:
            parts.append(f"at {summary}")
    except Exception:  # the location is a courtesy; never fail on it
        pass
    return f" ({', '.join(parts)})" if parts else ""


def _unsupported(state: _State, eqn, why: str) -> ValueError:
    return ValueError(
        f"{state.rules.method} cannot propagate through `{eqn.primitive.name}` {why}"
        f"{_where(eqn)}. {state.rules.method} supports ReLU and other elementwise activation "
        "functions, linear layers, normalisation layers, softmax attention, products, "
        "residual additions, pooling and lax.scan; see the table in jaxplain.methods.rules."
    )


def _depends_on_x(value) -> bool:
    return isinstance(value, (_Dependent, _Layer, _Detached))


def _values(args, index: int | None = None) -> list:
    """The arguments with x-dependent ones replaced by their value (or companion `index`;
    a held value is the same for every companion)."""

    def pick(arg):
        if isinstance(arg, _Dependent):
            return arg.value if index is None else arg.companions[index]
        if isinstance(arg, _Detached):
            return arg.value
        return arg

    return [pick(arg) for arg in args]


def _run(jaxpr, consts, args, state: _State, names=()) -> list:
    """Evaluates `jaxpr` on `args` (some of them x-dependent), applying the method's rules.

    `names` are the parameter paths that the arguments hold (None where none), which name
    the layers whose weights they are."""
    uses = _jaxpr.uses(jaxpr)
    plan = _Plan.of(jaxpr, [_depends_on_x(a) for a in args], state.rules)
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    outer, state.names = state.names, {v: n for v, n in zip(jaxpr.invars, names) if n}
    try:
        return _run_equations(jaxpr, env, uses, plan, state)
    finally:
        state.names = outer


def _run_equations(jaxpr, env, uses, plan, state: _State) -> list:

    def read(var):
        if isinstance(var, jex.Literal):
            return var.val
        value = env[var]
        if isinstance(value, _Layer):
            value = env[var] = _close_layer(value, state)
        return value

    def store(eqn, outs):
        for var, value in zip(eqn.outvars, outs):
            if not isinstance(var, jex.DropVar):
                env[var] = value

    for index, eqn in enumerate(jaxpr.eqns):
        group = plan.groups.get(index)
        if group is not None:
            # the group's equations are evaluated together at its output (the root may
            # come after some of them: a softmax's maximum is taken before a transpose)
            if index != group.output:
                continue
            root = read(group.root)
            if isinstance(root, _Dependent):
                outs = [group.apply(root, jaxpr, read, state)]
            else:
                for member in group.eqns[:-1]:
                    inner = jaxpr.eqns[member]
                    store(inner, _held(inner, [read(v) for v in inner.invars]))
                outs = _held(eqn, [read(v) for v in eqn.invars])
        elif index in plan.held:
            outs = _held(eqn, [read(v) for v in eqn.invars])
        else:
            folded = _fold(eqn, env, uses, state)
            if folded is not None:
                outs = [folded]
            else:
                args = [read(v) for v in eqn.invars]
                if any(_depends_on_x(a) for a in args):
                    outs = _apply(eqn, args, state)
                else:
                    outs = _bind(eqn, args)
                    _pass_name(eqn, state.names)
        store(eqn, outs)
    return [read(v) for v in jaxpr.outvars]


# Operations on a parameter that keep its name: the weights of a layer as the model reads them.
_KEEPS_NAME = frozenset(
    {"convert_element_type", "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims", "copy"}
)


def _pass_name(eqn, names: dict) -> None:
    named = [names[v] for v in eqn.invars if isinstance(v, jex.Var) and v in names]
    if eqn.primitive.name in _KEEPS_NAME and len(named) == 1 and len(eqn.outvars) == 1:
        names[eqn.outvars[0]] = named[0]


# ---------------------------------------------------------------------------------------
# Reading the jaxpr ahead: held values, softmax units, activation functions

# Elementwise primitives that are linear in an x-dependent operand when every other
# operand is x-independent (and, for select_n, the predicate too).
_ELEMENTWISE_LINEAR = frozenset(
    {"add", "sub", "neg", "mul", "div", "convert_element_type", "copy", "copy_p", "reduce_precision"}
)


@dataclasses.dataclass(frozen=True)
class _Group:
    """Equations evaluated as one function of one x-dependent value `root`: a softmax
    (`kind` "softmax") or an elementwise activation function written out in primitives
    (`kind` "activation", e.g. `jax.nn.gelu`, which is not a call in the traced program)."""

    kind: str
    root: Any
    output: int
    eqns: tuple[int, ...]
    axes: tuple[int, ...] = ()

    def apply(self, root, jaxpr, read, state: _State):
        if self.kind == "softmax":
            return _softmax(root, self.axes, state)
        eqns = [jaxpr.eqns[i] for i in self.eqns]
        out_var = eqns[-1].outvars[0]
        inner = {self.root} | {v for eqn in eqns for v in eqn.outvars}
        external = list(
            dict.fromkeys(v for eqn in eqns for v in eqn.invars if isinstance(v, jex.Var) and v not in inner)
        )

        def f(z, *consts):
            local = {self.root: z, **dict(zip(external, consts))}
            for eqn in eqns:
                values = [v.val if isinstance(v, jex.Literal) else local[v] for v in eqn.invars]
                local.update(zip(eqn.outvars, _bind(eqn, values)))
            return local[out_var]

        consts = [jnp.asarray(read(v)) for v in external]
        return _activation_of(f, root, out_var.aval.shape, consts, state)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the interpreter does with a jaxpr beyond one equation at a time.

    held: equations whose x-dependent results are held constant (`_Detached`): every
      `rsqrt` and `sqrt` of an x-dependent value (the normalising factor of LayerNorm,
      RMSNorm, GroupNorm, ...), for LRP with attention="constant" every softmax, and
      every equation whose results feed only into those.
    groups: equation -> the softmax or activation group it belongs to.
    """

    held: frozenset[int]
    groups: dict

    @staticmethod
    def of(jaxpr, dependent_args, rules: _Rules) -> _Plan:
        if rules.rectifiers_only:
            return _Plan(frozenset(), {})
        eqns = jaxpr.eqns
        dependent = {v for v, d in zip(jaxpr.invars, dependent_args) if d}
        depends = []
        for eqn in eqns:
            flag = any(isinstance(v, jex.Var) and v in dependent for v in eqn.invars)
            depends.append(flag)
            if flag:
                dependent.update(eqn.outvars)
        units = {i: u for i, u in _jaxpr.softmax_units(jaxpr).items() if depends[i]}
        seeds = set()
        if rules.method == "lrp":
            seeds = {
                i for i, eqn in enumerate(eqns) if depends[i] and eqn.primitive.name in ("rsqrt", "sqrt")
            }
            if rules.attention == "constant":
                seeds |= set(units)
        readers = collections.defaultdict(list)
        for i, eqn in enumerate(eqns):
            for v in eqn.invars:
                if isinstance(v, jex.Var):
                    readers[v].append(i)
        for v in jaxpr.outvars:
            if isinstance(v, jex.Var):
                readers[v].append(-1)
        held = set()
        for i in reversed(range(len(eqns))):
            outs = [v for v in eqns[i].outvars if not isinstance(v, jex.DropVar)]
            if i in seeds or (
                depends[i] and outs and all(readers[v] and all(r in held for r in readers[v]) for v in outs)
            ):
                held.add(i)
        groups = {}
        for unit in units.values():
            if unit.output not in held:
                group = _Group("softmax", unit.logits, unit.output, tuple(sorted(unit.eqns)), unit.axes)
                groups.update(dict.fromkeys(group.eqns, group))
        taken = held | set(groups)
        for group in _activation_groups(jaxpr, dependent, depends, readers, taken):
            groups.update(dict.fromkeys(group.eqns, group))
            taken |= set(group.eqns)
        return _Plan(frozenset(held), groups)


def _needs_group(eqn, dependent) -> bool:
    """Whether an elementwise equation is beyond the one-equation rules: a nonlinear
    function other than the recognised activations, or one of several x-dependent values."""
    flags = [isinstance(v, jex.Var) and v in dependent for v in eqn.invars]
    name = eqn.primitive.name
    if name in ("add", "sub"):
        return False  # linear in any number of x-dependent operands
    if name == "select_n":
        return flags[0]  # linear unless the condition depends on x (masking is linear)
    if sum(flags) > 1:
        return True
    return name not in _ELEMENTWISE_LINEAR and name not in _ACTIVATIONS and name != "stop_gradient"


def _activation_groups(jaxpr, dependent, depends, readers, taken):
    """Elementwise functions of one x-dependent value written out in primitives.

    From a value v that an equation beyond the one-equation rules reads, the group grows
    forward over elementwise equations of v's shape whose x-dependent operands are v or
    the group's own results; its output is the last result that everything before it
    feeds into and that nothing outside reads before it, trimmed of trailing affine maps.
    """
    eqns = jaxpr.eqns
    producer = {v: i for i, eqn in enumerate(eqns) for v in eqn.outvars}
    for start, eqn in enumerate(eqns):
        if start in taken or eqn.primitive.name not in _ELEMENTWISE or not depends[start]:
            continue
        if not _needs_group(eqn, dependent):
            continue
        roots = [v for v in eqn.invars if isinstance(v, jex.Var) and v in dependent]
        for root in dict.fromkeys(roots):
            group = _grow(eqns, root, producer.get(root, -1), dependent, readers, taken)
            if group is not None:
                taken = taken | set(group.eqns)
                yield group
                break


def _grow(eqns, root, after: int, dependent, readers, taken) -> _Group | None:
    shape = root.aval.shape
    if not jnp.issubdtype(root.aval.dtype, jnp.floating):
        return None
    members, produced = [], {root}
    for i in range(after + 1, len(eqns)):
        eqn = eqns[i]
        if i in taken or eqn.primitive.name not in _ELEMENTWISE:
            continue
        operands = [v for v in eqn.invars if isinstance(v, jex.Var) and v in dependent]
        if not operands or any(v not in produced for v in operands):
            continue
        if any(v.aval.shape != shape for v in eqn.outvars):
            continue
        members.append(i)
        produced.update(eqn.outvars)
    # the output: the last member whose ancestors within the group are all the members
    # before it, whose intermediate values nothing outside reads, and that contains an
    # equation the one-equation rules cannot do
    for end in reversed(range(len(members))):
        chosen = members[: end + 1]
        out = eqns[chosen[-1]].outvars[0]
        if len(eqns[chosen[-1]].outvars) != 1:
            continue
        inner = {v for i in chosen for v in eqns[i].outvars} - {out}
        if any(r not in chosen for v in inner for r in readers[v]):
            continue
        if not _ancestors_cover(eqns, chosen, root):
            continue
        if not any(_needs_group(eqns[i], dependent) for i in chosen):
            return None
        while len(chosen) > 1 and _trailing_affine(eqns[chosen[-1]], dependent):
            shorter = chosen[:-1]
            last = eqns[shorter[-1]].outvars[0]
            if readers[last] != [chosen[-1]] or not any(_needs_group(eqns[i], dependent) for i in shorter):
                break
            chosen = shorter
        return _Group("activation", root, chosen[-1], tuple(chosen))
    return None


def _ancestors_cover(eqns, chosen, root) -> bool:
    """Whether every chosen equation feeds (through the others) into the last one."""

    def variables(eqn):
        return {v for v in eqn.invars if isinstance(v, jex.Var)}

    needed = variables(eqns[chosen[-1]])
    for i in reversed(chosen[:-1]):
        if not any(v in needed for v in eqns[i].outvars):
            return False
        needed |= variables(eqns[i])
    return root in needed


def _trailing_affine(eqn, dependent) -> bool:
    flags = [isinstance(v, jex.Var) and v in dependent for v in eqn.invars]
    return eqn.primitive.name in _FOLDABLE and sum(flags) == 1


def _fold(eqn, env, uses, state: _State) -> _Layer | None:
    """Folds an affine map with an x-independent operand into an open LRP layer."""
    if state.rules.method != "lrp" or eqn.primitive.name not in _FOLDABLE:
        return None
    args = [v.val if isinstance(v, jex.Literal) else env[v] for v in eqn.invars]
    open_layers = [i for i, a in enumerate(args) if isinstance(a, _Layer)]
    if len(open_layers) != 1 or any(isinstance(a, _Dependent) for a in args):
        return None
    (position,) = open_layers
    if uses[eqn.invars[position]] != 1 or (eqn.primitive.name == "div" and position != 0):
        return None
    other = _values(args)[1 - position] if len(args) == 2 else None
    return args[position].fold(eqn.primitive.name, position, other)


def _apply(eqn, args, state: _State) -> list:
    """One operation with x-dependent operands."""
    name = eqn.primitive.name
    rules = state.rules
    dep = [isinstance(a, _Dependent) for a in args]
    if not any(dep):
        return _held(eqn, args)
    if name in _CALLS:
        body, consts = _body(eqn)
        if rules.rectifiers_only:
            if not _uses_primitive(body, "max"):
                return _plain(eqn, args)
        elif _is_activation_call(eqn, body, dep):
            return [_activation(eqn, args, state)]
        return _run(body, consts, args, state, _names_of(eqn.invars, state))
    if rules.rectifiers_only:
        if name == "max" and sum(dep) == 1:
            return [_rectifier(eqn, args, deconv=rules.method == "deconvnet")]
        if any(_uses_primitive(getattr(j, "jaxpr", j), "max") for j in jex.jaxprs_in_params(eqn.params)):
            raise _unsupported(state, eqn, "holding ReLUs (a loop or branch body is not rewritten)")
        return _plain(eqn, args)
    if name == "scan":
        return _scan(eqn, args, state)
    if name in _BILINEAR and sum(dep) == 2:
        return [_product(eqn, args, state)]
    if name in _LINEAR:
        _check_linear(eqn, dep, state)
        if rules.method == "lrp" and name in _LAYERS:
            return [_open_layer(eqn, args, state)]
        return _linear(eqn, args, state)
    if name in _ACTIVATIONS and sum(dep) == 1 and (name != "clamp" or dep[1]):
        return [_activation(eqn, args, state)]
    if name == "reduce_window_max":
        if rules.method == "deeplift":
            return list(_deeplift_max_pool(eqn, args[0]))
        return _plain(eqn, args)
    if name in ("max", "min") or (name in _ELEMENTWISE and sum(dep) > 1):
        raise _unsupported(state, eqn, "of two x-dependent values")
    if name in _ELEMENTWISE:
        raise _unsupported(
            state,
            eqn,
            "of an x-dependent value outside an activation function (an "
            "activation is recognised when it is a jitted, custom_jvp or custom_vjp "
            "function, e.g. from jax.nn, or one of max, min, tanh, logistic)",
        )
    if name in ("while", "cond"):
        raise _unsupported(
            state,
            eqn,
            "of an x-dependent value (a while loop, whose number of steps may depend on the "
            "values, or a branch chosen at run time, is not interpreted; lax.scan and fori_loop "
            "with fixed bounds are)",
        )
    raise _unsupported(state, eqn, "of an x-dependent value")


def _names_of(variables, state: _State) -> list:
    return [state.names.get(v) if isinstance(v, jex.Var) else None for v in variables]


def _held(eqn, args) -> list:
    """An operation whose x-dependent result the rules hold constant (`_Detached`)."""
    if not any(_depends_on_x(a) for a in args):
        return _bind(eqn, args)
    return [_Detached(out) for out in _bind(eqn, _values(args))]


def _softmax(source: _Dependent, axes, state: _State) -> _Dependent:
    """A softmax of x-dependent logits (see the module docstring).

    LRP with attention="attnlrp": the softmax's own gradient, so that the relevance of
    the logits, logits * G, is AttnLRP's rule. DeepLIFT: exact multipliers, from the
    secant of exp and the quotient rule Δ(e / S) = Δe · S̄ / (S S') - ΔS · ē / (S S'),
    with ē, S̄ the means of the values at x and at the reference, so that the output
    differences are carried exactly.
    """
    if state.rules.method != "deeplift":
        return _Dependent(jax.nn.softmax(source.value, axis=axes))

    def exponentials(z, reference):
        shift = jax.lax.stop_gradient(
            jnp.maximum(jnp.max(z, axis=axes, keepdims=True), jnp.max(reference, axis=axes, keepdims=True))
        )
        e, e_reference = jnp.exp(z - shift), jnp.exp(reference - shift)
        return e, e_reference, e.sum(axes, keepdims=True), e_reference.sum(axes, keepdims=True)

    def forward(z, reference):
        e, e_reference, total, total_reference = exponentials(z, reference)
        return e / total, e_reference / total_reference

    def backward(z, reference, outputs, cotangents):
        g, _ = cotangents
        e, e_reference, total, total_reference = exponentials(z, reference)
        product = total * total_reference
        g_e = g * (total + total_reference) / (2 * product)
        g_e = g_e - jnp.sum(g * (e + e_reference) / (2 * product), axis=axes, keepdims=True)
        near = _too_close(z, reference)
        slope = jnp.where(near, e, (e - e_reference) / jnp.where(near, 1, z - reference))
        return g_e * slope, None

    out, out_reference = _custom(forward, backward)(source.value, source.companions[0])
    return _Dependent(out, (out_reference,))


def _product(eqn, args, state: _State) -> _Dependent:
    """A product (mul or dot_general) of two x-dependent values.

    LRP: AttnLRP's uniform rule: each factor receives half of the relevance of every
    term a_i b_i, i.e. half of the (epsilon-stabilised) gradient. DeepLIFT: the exact
    split f(a, b) - f(a', b') = f(a - a', b̄) + f(ā, b - b') with ā, b̄ the means of the
    values at x and at the reference.
    """

    def f(u, v):
        return _bind(eqn, [u, v])[0]

    if state.rules.method == "deeplift":
        a_ref, b_ref = _values(args, 0)

        def forward(a, b, a_ref, b_ref):
            return f(a, b), f(a_ref, b_ref)

        def backward(a, b, a_ref, b_ref, outputs, cotangents):
            g, _ = cotangents
            a_mid, b_mid = (a + a_ref) / 2, (b + b_ref) / 2
            grad_a = jax.vjp(lambda u: f(u, b_mid), a)[1](g)[0]
            grad_b = jax.vjp(lambda v: f(a_mid, v), b)[1](g)[0]
            return grad_a, grad_b, None, None

        a_value, b_value = _values(args)
        out, out_reference = _custom(forward, backward)(a_value, b_value, a_ref, b_ref)
        return _Dependent(out, (out_reference,))

    epsilon = state.rules.product_epsilon

    def backward(a, b, out, g):
        c = _share(out * g, out, epsilon)
        grad_a = jax.vjp(lambda u: f(u, b), a)[1](c)[0] / 2
        grad_b = jax.vjp(lambda v: f(a, v), b)[1](c)[0] / 2
        return grad_a, grad_b

    return _Dependent(_custom(f, backward)(*_values(args)))


def _scan(eqn, args, state: _State) -> list:
    """`lax.scan` (an RNN, `nn.scan`-stacked layers): the body interpreted once per step,
    unrolled, so every rule reaches inside it."""
    params = eqn.params
    body, body_consts = params["jaxpr"].jaxpr, params["jaxpr"].consts
    num_consts, num_carry, length = params["num_consts"], params["num_carry"], params["length"]
    consts, carry, xs = (
        args[:num_consts],
        args[num_consts : num_consts + num_carry],
        args[num_consts + num_carry :],
    )
    steps = range(length - 1, -1, -1) if params["reverse"] else range(length)
    names = _names_of(eqn.invars[:num_consts], state)
    ys = {}
    for step in steps:
        outs = _run(body, body_consts, [*consts, *carry, *(_index(x, step) for x in xs)], state, names)
        carry, ys[step] = outs[:num_carry], outs[num_carry:]
    stacked = [_stack([ys[step][k] for step in range(length)]) for k in range(len(eqn.outvars) - num_carry)]
    return [*carry, *stacked]


def _index(value, step: int):
    if isinstance(value, _Dependent):
        return _Dependent(value.value[step], [c[step] for c in value.companions], value.first)
    if isinstance(value, _Detached):
        return _Detached(value.value[step])
    return value[step]


def _stack(items):
    if not any(_depends_on_x(v) for v in items):
        return jnp.stack(items)
    if all(isinstance(v, _Detached) or not _depends_on_x(v) for v in items):
        return _Detached(jnp.stack(_values(items)))
    dependent = [v for v in items if isinstance(v, _Dependent)]
    counts = {len(v.companions) for v in dependent}
    n = counts.pop() if len(counts) == 1 else 0
    first = len(dependent) == len(items) and all(v.first for v in dependent)
    return _Dependent(jnp.stack(_values(items)), [jnp.stack(_values(items, j)) for j in range(n)], first)


def _plain(eqn, args) -> list:
    return [_Dependent(out) for out in _bind(eqn, _values(args))]


def _check_linear(eqn, dep, state: _State) -> None:
    name = eqn.primitive.name
    allowed = _LINEAR[name]
    positions = [i for i, d in enumerate(dep) if d]
    if name in _BILINEAR and len(positions) > 1:
        raise _unsupported(state, eqn, "of two x-dependent values")
    if allowed == "not_first":
        bad = 0 in positions
    else:
        bad = allowed is not None and any(i not in allowed for i in positions)
    if bad:
        raise _unsupported(state, eqn, f"with x-dependent operand(s) {positions}")
    if any(not jnp.issubdtype(v.aval.dtype, jnp.inexact) for v in eqn.outvars):
        raise _unsupported(state, eqn, "producing a discrete value from x")


def _linear(eqn, args, state: _State) -> list:
    """A linear operation: the same operation on the values and on their companions."""
    outs = _bind(eqn, _values(args))
    deps = [a for a in args if isinstance(a, _Dependent)]
    counts = {len(d.companions) for d in deps}
    carries = len(counts) == 1 and 0 not in counts
    first = False
    if state.rules.method == "lrp":
        first = eqn.primitive.name in _CARRY_BOUNDS and len(deps) == 1 and deps[0].first
        carries = carries and first
    if not carries:
        return [_Dependent(out, first=first) for out in outs]
    companions = [_bind(eqn, _values(args, j)) for j in range(counts.pop())]
    return [_Dependent(out, [c[i] for c in companions], first) for i, out in enumerate(outs)]


def _uses_primitive(jaxpr, name: str) -> bool:
    """Whether `jaxpr` or any jaxpr nested in it (calls, loops, branches) uses `name`."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            return True
        for inner in jex.jaxprs_in_params(eqn.params):
            if _uses_primitive(getattr(inner, "jaxpr", inner), name):
                return True
    return False


def _is_activation_call(eqn, body, dep) -> bool:
    """Whether a call is an elementwise function of its one x-dependent operand."""
    if sum(dep) != 1 or len(eqn.outvars) != 1:
        return False
    shape = eqn.invars[dep.index(True)].aval.shape
    nonlinear = []
    return (
        eqn.outvars[0].aval.shape == shape
        and _elementwise_body(body, dep, shape, nonlinear)
        # a linear function (`jnp.where(mask, z, c)`, a scaling) is interpreted op by op
        and any(nonlinear)
    )


def _elementwise_body(jaxpr, dep, shape, nonlinear: list) -> bool:
    dependent = {v for v, d in zip(jaxpr.invars, dep) if d}
    for eqn in jaxpr.eqns:
        flags = [isinstance(v, jex.Var) and v in dependent for v in eqn.invars]
        if not any(flags):
            continue
        name = eqn.primitive.name
        if name in _CALLS:
            if not _elementwise_body(_body(eqn)[0], flags, shape, nonlinear):
                return False
        elif name not in _ELEMENTWISE:
            return False
        else:
            nonlinear.append(name in _ACTIVATIONS or _needs_group(eqn, dependent))
        if any(v.aval.shape != shape for v in eqn.outvars):
            return False
        dependent.update(eqn.outvars)
    return all(isinstance(v, jex.Var) and v in dependent for v in jaxpr.outvars)


# ---------------------------------------------------------------------------------------
# Rules as custom_vjp functions


def _custom(forward: Callable, backward: Callable) -> Callable:
    """A `jax.custom_vjp` function: `backward(*args, outputs, cotangents)` -> cotangents.

    Arguments that are not differentiated get a None cotangent.
    """
    function = jax.custom_vjp(forward)

    def forward_with_residuals(*args):
        outputs = forward(*args)
        return outputs, (args, outputs)

    def backward_from_residuals(residuals, cotangents):
        args, outputs = residuals
        return tuple(backward(*args, outputs, cotangents))

    function.defvjp(forward_with_residuals, backward_from_residuals)
    return function


def _too_close(z, reference):
    """Where z and the reference are too close for a secant in z's precision:
    |z - z'| <= sqrt(machine epsilon) * max(|z|, |z'|)."""
    tolerance = float(np.sqrt(jnp.finfo(z.dtype).eps))
    return jnp.abs(z - reference) <= tolerance * jnp.maximum(jnp.abs(z), jnp.abs(reference))


def _unary(eqn, args):
    """(f, z, consts): the operation as a function of its x-dependent operand."""
    position = next(i for i, a in enumerate(args) if isinstance(a, _Dependent))
    consts = [jnp.asarray(a) for i, a in enumerate(_values(args)) if i != position]
    shape = eqn.outvars[0].aval.shape

    def f(z, *consts):
        operands = list(consts)
        operands.insert(position, z)
        return _bind(eqn, operands)[0]

    def broadcast(z):
        return jnp.broadcast_to(z, shape)  # size-1 broadcasting made explicit (linear)

    source = args[position]
    return f, broadcast(source.value), [broadcast(c) for c in source.companions], consts


def _rectifier(eqn, args, *, deconv: bool):
    """Guided backprop's or deconvnet's ReLU: max(z, c) with a modified backward pass."""
    f, z, _, consts = _unary(eqn, args)

    def backward(z, *rest):
        *consts, out, g = rest
        del out
        if deconv:
            grad = jnp.maximum(g, 0)
        else:
            grad = jnp.where((z > consts[0]) & (g > 0), g, 0)
        return (grad,) + (None,) * len(consts)

    return _Dependent(_custom(f, backward)(z, *consts))


def _derivative(f, z, consts):
    return jax.jvp(lambda v: f(v, *consts), (z,), (jnp.ones_like(z),))[1]


def _activation(eqn, args, state: _State) -> _Dependent:
    """An activation function f: DeepLIFT's secant, or LRP's f(z) / z."""
    f, z, companions, consts = _unary(eqn, args)
    return _activation_of(f, _Dependent(z, companions), eqn.outvars[0].aval.shape, consts, state)


def _activation_of(f, source: _Dependent, shape, consts, state: _State) -> _Dependent:
    """f(z, *consts), elementwise in z (broadcast to `shape`), with DeepLIFT's secant or
    LRP's f(z) / z as its derivative."""

    def broadcast(z):
        return jnp.broadcast_to(z, shape)  # size-1 broadcasting made explicit (linear)

    z = broadcast(source.value)
    if state.rules.method == "deeplift":
        reference = broadcast(source.companions[0])

        def forward(z, reference, *consts):
            return f(z, *consts), f(reference, *consts)

        def backward(z, reference, *rest):
            *consts, (out, out_reference), (g, _) = rest
            near = _too_close(z, reference)
            secant = (out - out_reference) / jnp.where(near, 1, z - reference)
            slope = jnp.where(near, _derivative(f, z, consts), secant)
            return (g * slope, None) + (None,) * len(consts)

        out, out_reference = _custom(forward, backward)(z, reference, *consts)
        return _Dependent(out, (out_reference,))

    def backward(z, *rest):
        *consts, out, g = rest
        zero = z == 0
        ratio = jnp.where(zero, _derivative(f, z, consts), out / jnp.where(zero, 1, z))
        return (g * ratio,) + (None,) * len(consts)

    return _Dependent(_custom(f, backward)(z, *consts))


def _deeplift_max_pool(eqn, source: _Dependent):
    """Captum's DeepLIFT rule for max pooling (see the module docstring)."""
    z, (reference,) = source.value, source.companions

    def pool(v):
        return _bind(eqn, [v])[0]

    def forward(z, reference):
        return pool(z), pool(reference)

    def backward(z, reference, outputs, cotangents):
        out, out_reference = outputs
        g, _ = cotangents
        larger = jnp.maximum(out, out_reference)
        _, to_z = jax.vjp(pool, z)
        _, to_reference = jax.vjp(pool, reference)
        (split,) = to_z(g * (larger - out_reference))
        (rest,) = to_reference(g * (out - larger))
        (gradient,) = to_z(g)
        near = _too_close(z, reference)
        multiplier = jnp.where(near, gradient, (split + rest) / jnp.where(near, 1, z - reference))
        return multiplier, None

    out, out_reference = _custom(forward, backward)(z, reference)
    return [_Dependent(out, (out_reference,))]


def _open_layer(eqn, args, state: _State) -> _Layer:
    position = 0 if isinstance(args[0], _Dependent) else 1
    weight = _values(args)[1 - position]
    one = jnp.ones((), eqn.outvars[0].aval.dtype)
    kind = _KINDS[eqn.primitive.name]
    name = (
        state.names.get(eqn.invars[1 - position])
        or str(eqn.source_info.name_stack)
        or f"{kind}_{len(state.layers)}"
    )
    state.layers.append(LayerInfo(name, kind, args[position].first))
    return _Layer(eqn, position, args[position], weight, one, jnp.zeros_like(one), name)


def _share(relevance, z, epsilon: float):
    """relevance / (z + epsilon sign(z)), sign(0) = 1; zero where that denominator is zero
    (with epsilon = 0, at outputs y = 0, whose relevance y * G is zero too)."""
    denominator = z + epsilon * jnp.where(z >= 0, 1, -1).astype(z.dtype)
    return relevance / jnp.where(denominator == 0, 1, denominator)


def _close_layer(layer: _Layer, state: _State) -> _Dependent:
    """The layer y = scale * linear(a) + shift with its LRP rule as the backward pass."""
    eqn, position = layer.eqn, layer.position
    rule = state.rules.composite.rule_for(
        LayerInfo(layer.name, _KINDS[eqn.primitive.name], layer.source.first)
    )
    bounds = ()
    if rule.uses_bounds:
        if not layer.source.first:
            raise ValueError(
                f"lrp: {type(rule).__name__} needs a first layer (one reading x through reshapes and affine "
                f"maps only), but layer {layer.name!r} is not one{_where(eqn)}"
            )
        bounds = layer.source.companions
        state.first_layers += 1

    def operation(a, w):
        operands = [a, w] if position == 0 else [w, a]
        return _bind(eqn, operands)[0]

    def forward(a, w, scale, shift, *bounds):
        return scale * operation(a, w) + shift

    def backward(a, w, scale, shift, *rest):
        *bounds, y, g = rest
        view = LayerView(operation, w, scale, shift)
        relevance = y * g
        if bounds:
            # inputs bounded elementwise by the two carried bounds, in either order
            first, second = bounds
            ordered = first <= second
            z, pullback = jax.vjp(
                lambda a, low, high: rule.forward(view, a, low, high),
                a,
                jnp.minimum(first, second),
                jnp.maximum(first, second),
            )
        else:
            z, pullback = jax.vjp(lambda a: rule.forward(view, a), a)
        if isinstance(z, tuple):
            weights = rule.coefficients() or (1.0,) * len(z)
            c = tuple(k * _share(relevance, part, rule.stabilizer) for k, part in zip(weights, z))
        else:
            c = _share(relevance, z, rule.stabilizer)
        grads = pullback(c)
        if not bounds:
            return (grads[0], None, None, None)
        grad, grad_low, grad_high = grads
        return (
            grad,
            None,
            None,
            None,
            jnp.where(ordered, grad_low, grad_high),
            jnp.where(ordered, grad_high, grad_low),
        )

    value = _custom(forward, backward)(layer.source.value, layer.weight, layer.scale, layer.shift, *bounds)
    return _Dependent(value)


# ---------------------------------------------------------------------------------------
# The modified model


@dataclasses.dataclass(frozen=True)
class _Modified:
    """`apply_fn` with the method's rules, on inputs (rows, slots, ...).

    Slot 0 holds x; DeepLIFT's slot 1 holds the reference; z-box's slots 1 and 2 hold the
    lower and upper bounds. DeepLIFT returns F(x) - F(reference) (the reference without
    gradient), the others F(x).
    """

    apply_fn: Callable
    rules: _Rules

    def __call__(self, params, slots):
        x = slots[:, 0]
        companions = [slots[:, i] for i in range(1, slots.shape[1])]
        if self.rules.method == "deeplift":
            companions = [jax.lax.stop_gradient(c) for c in companions]
        structs = jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf)), (params, x)
        )
        closed = jax.make_jaxpr(self.apply_fn)(*structs)
        state = _State(self.rules)
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        args = [leaf for _, leaf in flat] + [_Dependent(x, companions, first=True)]
        names = [_parameter_name(path) for path, _ in flat] + [None]
        (out,) = _run(closed.jaxpr, closed.consts, args, state, names)
        if self.rules.method == "lrp":
            _check_layers(self.rules, state)
        if isinstance(out, _Detached):
            out = out.value
        if not isinstance(out, _Dependent):
            return out - out if self.rules.method == "deeplift" else out
        if self.rules.method == "deeplift":
            return out.value - jax.lax.stop_gradient(out.companions[0])
        return out.value


def _parameter_name(path) -> str:
    """A parameter's path as a layer name: without Linen's "params" collection, NNX's
    ".value" and the leaf's own key ("kernel"), e.g. "Block_0/Dense_1" or "layers/0"."""
    keys = []
    for key in path:
        for field in ("key", "name", "idx"):
            if hasattr(key, field):
                keys.append(str(getattr(key, field)))
                break
    if keys and isinstance(path[-1], jax.tree_util.GetAttrKey) and keys[-1] == "value":
        keys.pop()
    if keys and keys[0] == "params":
        keys.pop(0)
    return "/".join(keys[:-1] if len(keys) > 1 else keys)


def _check_layers(rules: _Rules, state: _State) -> None:
    """Every name pattern must match a layer, and z-box must reach one."""
    names = list(dict.fromkeys(layer.name for layer in state.layers))
    for pattern, _ in rules.composite.name_map:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(
                f"lrp: name_map pattern {pattern!r} matches no layer; the model's layers are {names} "
                "(see jaxplain.methods.rules.lrp_layers)"
            )
    if any(rule.uses_bounds for rule in rules.composite.rules()) and not state.first_layers:
        raise ValueError(
            f"lrp(rule={rules.rule_name}) found no linear layer reading x through "
            "reshapes and affine maps only, so the bounds low/high reach no first layer"
        )


def _modified(model: Model, rules: _Rules) -> Model:
    return Model(_Modified(model.apply_fn, rules), model.params, model.output)


def _check_supported(model: Model, rules: _Rules, x, slots: int) -> None:
    """Runs the interpreter abstractly (cached per model structure and shape) so that an
    unsupported model fails here, before anything is compiled."""
    struct = jax.ShapeDtypeStruct((x.shape[0], slots) + tuple(x.shape[1:]), x.dtype)
    engine.output_struct(_modified(model, rules), struct)


def _logits_only(method: str, model: Model) -> None:
    if getattr(model.output, "transform", model.output) != "logits":
        raise ValueError(
            f"{method} explains the model's logits; got a model with output={model.output!r} "
            "(softmax has no DeepLIFT or LRP rule here). Use model.with_output('logits')"
        )


# ---------------------------------------------------------------------------------------
# Programs


@engine.program(static_argnames=("rules",))
def _propagate(model: Model, slots, targets: Targets, *, rules: _Rules):
    outputs, chosen, grads = engine.gradients(_modified(model, rules), slots, targets.resolve)
    if rules.method == "lrp":
        # R = x * G, plus low * G_low + high * G_high for z-box
        values = (slots[:, None] * grads).astype(engine.accumulation_dtype(slots)).sum(axis=2)
        relevance = jnp.take_along_axis(outputs, chosen, axis=1).astype(values.dtype)
        return engine.attribution(targets, values, chosen, difference=relevance, delta="sum")
    return engine.attribution(targets, grads[:, :, 0], chosen)


@engine.program(static_argnames=("chunk_size",))
def _deeplift(model: Model, x, references, targets: Targets, *, chunk_size):
    """DeepLIFT against M references (M, R, ...), R = 1 (shared) or batch; mean over M."""
    chosen = targets.resolve(engine.forward(model, x))
    num_references = references.shape[0]

    def pair(reference, pairs):
        return pairs.at[:, 1].set(jnp.broadcast_to(reference, x.shape).astype(x.dtype))

    def times_difference(references, pairs, grads):
        # m * (x - x'_m); the reference slot's gradient is zero (stop_gradient) and stays so
        difference = pairs[:, None, 0] - jnp.moveaxis(references, 0, 1)
        factors = jnp.stack([difference, jnp.zeros_like(difference)], axis=2)
        return grads * factors[:, :, None]

    gradient_sum, differences = engine.path_gradients(
        _modified(model, _Rules("deeplift")),
        jnp.stack([x, x], axis=1),
        chosen,
        pair,
        references,
        jnp.full((num_references,), 1.0 / num_references),
        chunk_size=chunk_size,
        contribution_fn=times_difference,
    )
    values = gradient_sum[:, :, 0]
    difference = differences.astype(values.dtype).mean(axis=1)
    return engine.attribution(targets, values, chosen, difference=difference, delta="sum")


# ---------------------------------------------------------------------------------------
# Public methods


def _rectifier_method(method: str, model: Model, x, target) -> Attribution:
    x, targets = _checks.prepare(model, x, target)
    rules = _Rules(method)
    _check_supported(model, rules, x, 1)
    return _propagate(model, x[:, None], targets, rules=rules)


@register("rules")
def guided_backprop(model: Model, x, *, target) -> Attribution:
    """Guided backpropagation: the gradient with every ReLU's backward pass rectified.

    At each ReLU y = max(z, 0) the backward pass sends g * (z > 0) * (g > 0) instead of
    g * (z > 0): only positive gradients pass, through units that were active. Every
    other operation keeps its gradient, so on a model without ReLUs this is the plain
    gradient (`saliency`). ReLUs are found in the model's function, wherever
    `jax.nn.relu`, `flax.linen.relu` or `jnp.maximum(z, c)` with c independent of x is
    applied to an x-dependent value.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`; k targets share one forward pass.

    Returns:
      An `Attribution` whose `values` are shaped like `x` (or `(batch, k, ...)`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.methods import rules
      >>> w = jnp.array([[1.0, -1.0], [2.0, 0.5]])
      >>> model = jaxplain.Model(lambda w, x: jax.nn.relu(x @ w) @ w, w)
      >>> x = jnp.ones((1, 2))
      >>> jaxplain.saliency(model, x, target=1).values  # the gradient
      Array([[-1., -2.]], dtype=float32)
      >>> rules.guided_backprop(model, x, target=1).values  # negative gradients stopped
      Array([[0., 0.]], dtype=float32)

    References:
      Springenberg, Dosovitskiy, Brox, Riedmiller. Striving for Simplicity: The All
      Convolutional Net. arXiv:1412.6806, 2014.
    """
    return _rectifier_method("guided_backprop", model, x, target)


@register("rules")
def deconvnet(model: Model, x, *, target) -> Attribution:
    """DeconvNet: the gradient with every ReLU's backward pass replaced by relu(g).

    At each ReLU the backward pass sends max(g, 0), whatever the unit's input was (the
    "deconvolution" of Zeiler and Fergus as a modified gradient). ReLUs are found as in
    `guided_backprop`; every other operation keeps its gradient.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: as for `guided_backprop`.

    Returns:
      An `Attribution` whose `values` are shaped like `x` (or `(batch, k, ...)`).

    References:
      Zeiler, Fergus. Visualizing and Understanding Convolutional Networks.
      arXiv:1311.2901, 2013.
    """
    return _rectifier_method("deconvnet", model, x, target)


@register("rules")
def deeplift(model: Model, x, *, target, baseline=0.0) -> Attribution:
    """DeepLIFT (Rescale rule), as a modified gradient times (x - reference).

    phi_i = m_i * (x_i - x'_i), where m is the gradient of F_t with every activation's
    derivative replaced by its secant (f(z) - f(z')) / (z - z') between the values at x
    and at the reference x' (f'(z) where they are too close to tell apart), max pooling
    by Captum's rule, and linear layers (dense, convolution, eval-mode BatchNorm, residual
    adds, reshapes, average pools) keeping their gradients. Summation-to-delta holds:
    sum_i phi_i = F_t(x) - F_t(x'); `delta` is the signed gap, zero up to rounding.
    Transformers are covered: normalisation layers (LayerNorm, RMSNorm, GroupNorm),
    softmax attention and products of two inputs get exact multipliers, so
    summation-to-delta holds through them too. See the module docstring for what a model
    may contain.

    Args:
      model: a `jaxplain.Model` with `output="logits"`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`; k targets share one forward pass.
      baseline: the reference: a scalar, one example (shape `x.shape[1:]`), or one per
        example. For several references per example use `deeplift_shap`.

    Returns:
      An `Attribution` with `values` shaped like `x` (or `(batch, k, ...)`), `target`,
      `delta` and `output_difference` = F_t(x) - F_t(x').

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.methods import rules
      >>> w = jnp.array([[1.0, -1.0], [2.0, 0.5]])
      >>> model = jaxplain.Model(lambda w, x: x @ w, w)
      >>> rules.deeplift(model, jnp.ones((1, 2)), target=0).values
      Array([[1., 2.]], dtype=float32)

    References:
      Shrikumar, Greenside, Kundaje. Learning Important Features Through Propagating
      Activation Differences. arXiv:1704.02685, 2017.
      Ancona, Ceolini, Oztireli, Gross. Towards better understanding of gradient-based
      attribution methods for Deep Neural Networks. arXiv:1711.06104, 2018.
    """
    x, targets = _checks.prepare(model, x, target)
    _logits_only("deeplift", model)
    baseline = _checks.baseline(baseline, x)
    _check_supported(model, _Rules("deeplift"), x, 2)
    references = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)[None]
    return _deeplift(model, x, references, targets, chunk_size=1)


@register("rules")
def deeplift_shap(model: Model, x, *, target, background, chunk_size=None) -> Attribution:
    """DeepLIFT SHAP: the mean of DeepLIFT attributions over several references.

    phi = (1/M) sum_m deeplift(x; x'_m), for M references x'_m shared by all examples
    (e.g. a sample of the training data). It sums to F_t(x) - (1/M) sum_m F_t(x'_m).
    The references are evaluated `chunk_size` at a time, so memory is bounded by the
    chunk, not by M; the answer does not depend on the chunk size.

    Args:
      model: a `jaxplain.Model` with `output="logits"`.
      x: a batch of inputs, `(batch, ...)`.
      target: as for `deeplift`.
      background: the references, `(M, *x.shape[1:])` (the name `expected_gradients`
        uses for its references too).
      chunk_size: references evaluated at once; by default the largest chunk whose saved
        activations fit the memory budget (see `jaxplain.engine.default_chunk_size`).

    Returns:
      An `Attribution` with `values`, `target`, `delta` = sum(values) -
      `output_difference`, and `output_difference` =
      F_t(x) - mean_m F_t(x'_m).

    References:
      Lundberg, Lee. A Unified Approach to Interpreting Model Predictions.
      arXiv:1705.07874, 2017.
      Shrikumar, Greenside, Kundaje. Learning Important Features Through Propagating
      Activation Differences. arXiv:1704.02685, 2017.
    """
    x, targets = _checks.prepare(model, x, target)
    _logits_only("deeplift_shap", model)
    background = _checks.as_float_array("background", background)
    if (
        background.ndim != x.ndim
        or tuple(background.shape[1:]) != tuple(x.shape[1:])
        or not background.shape[0]
    ):
        raise ValueError(
            f"background must have shape (M, {', '.join(map(str, x.shape[1:]))}) with M >= 1 "
            f"references, got {tuple(background.shape)}"
        )
    rules = _Rules("deeplift")
    _check_supported(model, rules, x, 2)
    chunk_size = _checks.chunk_size(chunk_size)
    references = jnp.asarray(background, x.dtype)[:, None]
    return _deeplift(model, x, references, targets, chunk_size=chunk_size)


@register("rules")
def lrp(
    model: Model,
    x,
    *,
    target,
    rule: str | Rule | Composite = "epsilon",
    epsilon: float | None = None,
    gamma: float | None = None,
    low=None,
    high=None,
    attention: str = "constant",
) -> Attribution:
    """Layer-wise Relevance Propagation, from the target output down to the input.

    The relevance at the output is the target output F_t(x); each layer redistributes
    the relevance of its outputs onto its inputs in proportion to their contributions,
    by the chosen rule; activations and max pooling pass it on unchanged. A layer is a
    dense or convolution operation with its bias and any eval-mode BatchNorm that
    follows it folded in (y = s * (W a) + t); all other linear operations split relevance
    in proportion to their terms (LRP-0). See the module docstring for the exact rules
    and for what a model may contain.

    Rules:
      "epsilon": R_a = a * W'^T (R_y / (y + epsilon sign(y))). With epsilon -> 0 this is
        LRP-0, which on ReLU networks equals gradient x input; it conserves relevance,
        sum(values) = F_t(x), when the network has no biases.
      "gamma": weights W' + gamma W'+ (and bias t + gamma t+): favours positive
        contributions; gamma = 0 is LRP-0.
      "alpha1beta0": only positive contributions (the z+ rule for non-negative inputs).
      "zbox": z-box on the first layer (needs `low` and `high`), epsilon elsewhere.
      "composite": z-box on the first layer, gamma on the other convolutions, epsilon on
        dense layers (needs `low` and `high`).
      A `Rule` (`Epsilon(epsilon)`, `Gamma(gamma)`, `AlphaBeta(alpha, beta)`,
        `ZBox(low, high)` or one of the user's own): that rule on every layer.
      A `Composite`: rules per layer, by name, kind and position (`epsilon_gamma_box`,
        `epsilon_plus`, `epsilon_alpha2_beta1` are Zennit's presets); `lrp_layers` lists
        the names. The strings are the composites `Composite(default=Epsilon(epsilon))`,
        `Composite(default=Gamma(gamma))`, `Composite(default=AlphaBeta(1, 0))`,
        `Composite(first=ZBox(low, high), default=Epsilon(epsilon))` and
        `epsilon_gamma_box(low, high, epsilon=epsilon, gamma=gamma)`, except that products
        of two x-dependent values are stabilised by `epsilon` under "epsilon" and by 1e-9
        under the other strings.

    Args:
      model: a `jaxplain.Model` with `output="logits"`.
      x: a batch of inputs, `(batch, ...)`.
      target: as for `guided_backprop`.
      rule: one of "epsilon", "gamma", "alpha1beta0", "zbox", "composite", a `Rule` or a
        `Composite`.
      epsilon: with a rule string, the stabiliser of the epsilon rule (default 1e-9; the
        other rules use 1e-9). A `Rule` or `Composite` carries its own.
      gamma: with a rule string, the gamma rule's weight on positive contributions
        (default 0.25).
      low, high: with "zbox" or "composite", bounds of the input (a scalar, one example
        or one per example) for the z-box rule, e.g. 0.0 and 1.0 for images in [0, 1];
        x must lie within them. A `ZBox` carries its own.
      attention: the rule for softmax attention: "constant" holds the attention weights
        (Ali et al.'s AH rule: relevance flows through the values only, and the relevance
        is conserved), "attnlrp" takes AttnLRP's softmax and uniform product rules
        (relevance flows through queries and keys too). LayerNorm and other normalising
        factors are held under both (see the module docstring).

    Returns:
      An `Attribution` with `values`, `target`, `delta` = sum(values) - F_t(x) (relevance
      lost to biases and stabilisers) and `output_difference` = F_t(x).

    References:
      Bach, Binder, Montavon, Klauschen, Mueller, Samek. On Pixel-Wise Explanations for
      Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation. PLoS ONE
      10(7), 2015.
      Montavon, Binder, Lapuschkin, Samek, Mueller. Layer-Wise Relevance Propagation: An
      Overview. In Explainable AI, LNCS 11700, Springer, 2019.
      Montavon, Lapuschkin, Binder, Samek, Mueller. Explaining nonlinear classification
      decisions with deep Taylor decomposition. arXiv:1512.02479, 2015.
      Kohlbrenner, Bauer, Nakajima, Binder, Samek, Lapuschkin. Towards Best Practice in
      Explaining Neural Network Decisions with LRP. arXiv:1910.09840, 2020.
      Anders, Neumann, Samek, Mueller, Lapuschkin. Software for Dataset-wide XAI: From
      Local Explanations to Global Insights with Zennit, CoRelAy, and ViRelAy.
      arXiv:2106.13200, 2021.
      Ali, Schnake, Eberle, Montavon, Mueller, Wolf. XAI for Transformers: Better
      Explanations through Conservative Propagation. arXiv:2202.07304, 2022.
      Achtibat, Hatefi, Dreyer, Jain, Wiegand, Lapuschkin, Samek. AttnLRP: Attention-Aware
      Layer-Wise Relevance Propagation for Transformers. arXiv:2402.05602, 2024.
    """
    x, targets = _checks.prepare(model, x, target)
    _logits_only("lrp", model)
    if attention not in ATTENTION_RULES:
        raise ValueError(f"attention must be one of {ATTENTION_RULES}, got {attention!r}")
    composite, product_epsilon = _lrp_composite(rule, epsilon, gamma, low, high)
    bounds = _bounds_of(composite)
    rules = _Rules("lrp", _without_bounds(composite), product_epsilon, attention, _rule_name(rule))
    slots = [jnp.asarray(x)]
    if bounds is not None:
        low, high = _checks.input_bound("low", bounds[0], x), _checks.input_bound("high", bounds[1], x)
        if not any(_checks.is_traced(v) for v in (x, low, high)) and not (
            np.all(np.asarray(low) <= np.asarray(x)) and np.all(np.asarray(x) <= np.asarray(high))
        ):
            raise ValueError("x must lie within [low, high] for the z-box rule")
        slots += [jnp.broadcast_to(jnp.asarray(b, x.dtype), x.shape) for b in (low, high)]
    _check_supported(model, rules, x, len(slots))
    return _propagate(model, jnp.stack(slots, axis=1), targets, rules=rules)


def _rule_name(rule) -> str:
    return repr(rule) if isinstance(rule, str) else type(rule).__name__


def _lrp_composite(rule, epsilon, gamma, low, high) -> tuple[Composite, float]:
    """lrp's `rule` and options as (composite, stabiliser of products)."""
    if isinstance(rule, str):
        if rule not in LRP_RULES:
            raise ValueError(f"rule must be one of {LRP_RULES}, a Rule or a Composite, got {rule!r}")
        epsilon = 1e-9 if epsilon is None else _checks.number("epsilon", epsilon)
        gamma = 0.25 if gamma is None else _checks.number("gamma", gamma)
        if rule not in ("zbox", "composite") and (low is not None or high is not None):
            raise ValueError(f"low and high are used by the z-box rule only, not by rule={rule!r}")
        product_epsilon = epsilon if rule == "epsilon" else _STABILIZER
        return _string_composite(rule, epsilon, gamma, low, high), product_epsilon
    if isinstance(rule, Rule):
        rule = Composite(default=_check_rule("rule", rule))
    if not isinstance(rule, Composite):
        raise TypeError(f"rule must be one of {LRP_RULES}, a Rule or a Composite, got {type(rule).__name__}")
    given = [
        name
        for name, value in (("epsilon", epsilon), ("gamma", gamma), ("low", low), ("high", high))
        if value is not None
    ]
    if given:
        raise ValueError(
            f"{', '.join(given)} go with the rule strings; a Rule or Composite carries its own "
            "(Epsilon(epsilon), Gamma(gamma), ZBox(low, high))"
        )
    return rule, rule.default.stabilizer


def lrp_layers(model: Model, x) -> tuple[LayerInfo, ...]:
    """The layers that LRP's rules apply to, in the order the model computes them: the
    names a `Composite`'s `name_map` matches, their kinds and whether they are first
    layers (see `LayerInfo`). A layer applied several times (shared weights, a scan) is
    listed once.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)` (only its shape and dtype are used).

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.methods import rules
      >>> params = {"hidden": {"w": jnp.ones((2, 3))}, "out": {"w": jnp.ones((3, 1))}}
      >>> model = jaxplain.Model(lambda p, x: jnp.tanh(x @ p["hidden"]["w"]) @ p["out"]["w"], params)
      >>> [layer.name for layer in rules.lrp_layers(model, jnp.ones((1, 2)))]
      ['hidden', 'out']
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a jaxplain.Model, got {type(model).__name__}")
    x = _checks.as_float_array("x", x)
    if x.ndim < 1:
        raise ValueError(f"x must be a batch of inputs (batch, ...), got shape {x.shape}")
    rules = _Rules("lrp", Composite(), _STABILIZER, "constant", "'epsilon'")
    recorded = []

    def interpret(params, slots):
        state = _State(rules)
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        args = [leaf for _, leaf in flat] + [_Dependent(slots[:, 0], first=True)]
        closed = jax.make_jaxpr(model.apply_fn)(params, slots[:, 0])
        _run(closed.jaxpr, closed.consts, args, state, [_parameter_name(p) for p, _ in flat] + [None])
        recorded.extend(state.layers)
        return 0.0

    struct = jax.ShapeDtypeStruct((x.shape[0], 1) + tuple(x.shape[1:]), x.dtype)
    jax.eval_shape(interpret, model.params, struct)
    return tuple(dict.fromkeys(recorded))


__all__ = [
    "ATTENTION_RULES",
    "LRP_RULES",
    "AlphaBeta",
    "Composite",
    "Epsilon",
    "Gamma",
    "LayerInfo",
    "LayerView",
    "Rule",
    "ZBox",
    "deconvnet",
    "deeplift",
    "deeplift_shap",
    "epsilon_alpha2_beta1",
    "epsilon_gamma_box",
    "epsilon_plus",
    "guided_backprop",
    "lrp",
    "lrp_layers",
]
