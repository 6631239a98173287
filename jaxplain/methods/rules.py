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
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any

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
    rule: str = ""
    epsilon: float = 0.0
    gamma: float = 0.0
    attention: str = "constant"  # LRP's softmax rule: "constant" (held) or "attnlrp"

    @property
    def rectifiers_only(self) -> bool:
        return self.method in ("guided_backprop", "deconvnet")


class _Dependent:
    """An x-dependent value, with companions evaluated by the same operations.

    The companions are the reference's values for DeepLIFT, and for LRP's z-box the lower
    and upper bounds of the value until they reach the first layer.
    """

    def __init__(self, value, companions=()):
        self.value = value
        self.companions = tuple(companions)


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
        self.first_layers = 0


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


def _run(jaxpr, consts, args, state: _State) -> list:
    """Evaluates `jaxpr` on `args` (some of them x-dependent), applying the method's rules."""
    uses = _jaxpr.uses(jaxpr)
    plan = _Plan.of(jaxpr, [_depends_on_x(a) for a in args], state.rules)
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))

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
        store(eqn, outs)
    return [read(v) for v in jaxpr.outvars]


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
        return _run(body, consts, args, state)
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

    epsilon = state.rules.epsilon if state.rules.rule == "epsilon" else _STABILIZER

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
    ys = {}
    for step in steps:
        outs = _run(body, body_consts, [*consts, *carry, *(_index(x, step) for x in xs)], state)
        carry, ys[step] = outs[:num_carry], outs[num_carry:]
    stacked = [_stack([ys[step][k] for step in range(length)]) for k in range(len(eqn.outvars) - num_carry)]
    return [*carry, *stacked]


def _index(value, step: int):
    if isinstance(value, _Dependent):
        return _Dependent(value.value[step], [c[step] for c in value.companions])
    if isinstance(value, _Detached):
        return _Detached(value.value[step])
    return value[step]


def _stack(items):
    if not any(_depends_on_x(v) for v in items):
        return jnp.stack(items)
    if all(isinstance(v, _Detached) or not _depends_on_x(v) for v in items):
        return _Detached(jnp.stack(_values(items)))
    counts = {len(v.companions) for v in items if isinstance(v, _Dependent)}
    n = counts.pop() if len(counts) == 1 else 0
    return _Dependent(jnp.stack(_values(items)), [jnp.stack(_values(items, j)) for j in range(n)])


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
    if carries and state.rules.method == "lrp":
        carries = eqn.primitive.name in _CARRY_BOUNDS and len(deps) == 1
    if not carries:
        return [_Dependent(out) for out in outs]
    companions = [_bind(eqn, _values(args, j)) for j in range(counts.pop())]
    return [_Dependent(out, [c[i] for c in companions]) for i, out in enumerate(outs)]


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
    return _Layer(eqn, position, args[position], weight, one, jnp.zeros_like(one))


def _layer_rule(layer: _Layer, state: _State) -> str:
    rule = state.rules.rule
    first = bool(layer.source.companions)
    if rule in ("zbox", "composite") and first:
        return "zbox"
    if rule == "composite":
        return "gamma" if layer.eqn.primitive.name == "conv_general_dilated" else "epsilon"
    return "epsilon" if rule == "zbox" else rule


def _share(relevance, z, epsilon: float):
    """relevance / (z + epsilon sign(z)), sign(0) = 1; zero where that denominator is zero
    (with epsilon = 0, at outputs y = 0, whose relevance y * G is zero too)."""
    denominator = z + epsilon * jnp.where(z >= 0, 1, -1).astype(z.dtype)
    return relevance / jnp.where(denominator == 0, 1, denominator)


def _close_layer(layer: _Layer, state: _State) -> _Dependent:
    """The layer y = scale * linear(a) + shift with its LRP rule as the backward pass."""
    rule = _layer_rule(layer, state)
    eqn, position = layer.eqn, layer.position
    bounds = layer.source.companions if rule == "zbox" else ()
    if rule == "zbox":
        state.first_layers += 1

    def linear(a, w):
        operands = [a, w] if position == 0 else [w, a]
        return _bind(eqn, operands)[0]

    def forward(a, w, scale, shift, *bounds):
        return scale * linear(a, w) + shift

    def backward(a, w, scale, shift, *rest):
        *bounds, y, g = rest
        plus, minus = jnp.maximum(w, 0), jnp.minimum(w, 0)
        scale_plus, scale_minus = jnp.maximum(scale, 0), jnp.minimum(scale, 0)

        def positive(v):  # W'+ v, with W' = scale * W
            return scale_plus * linear(v, plus) + scale_minus * linear(v, minus)

        def negative(v):  # W'- v
            return scale_plus * linear(v, minus) + scale_minus * linear(v, plus)

        def transpose(function, c):
            return jax.vjp(function, a)[1](c)[0]

        relevance = y * g
        if rule == "epsilon":
            c = _share(relevance, y, state.rules.epsilon)
            return (transpose(lambda v: scale * linear(v, w), c), None, None, None)
        if rule == "gamma":
            gamma = state.rules.gamma
            z = scale * linear(a, w) + gamma * positive(a) + shift + gamma * jnp.maximum(shift, 0)
            c = _share(relevance, z, _STABILIZER)
            grad = transpose(lambda v: scale * linear(v, w) + gamma * positive(v), c)
            return (grad, None, None, None)
        if rule == "alpha1beta0":
            a_plus, a_minus = jnp.maximum(a, 0), jnp.minimum(a, 0)
            z = positive(a_plus) + negative(a_minus) + jnp.maximum(shift, 0)
            c = _share(relevance, z, _STABILIZER)
            grad = jnp.where(a > 0, transpose(positive, c), transpose(negative, c))
            return (grad, None, None, None)
        # z-box: inputs bounded elementwise by the two carried bounds, in either order
        first, second = bounds
        low, high = jnp.minimum(first, second), jnp.maximum(first, second)
        z = scale * linear(a, w) - positive(low) - negative(high)
        c = _share(relevance, z, _STABILIZER)
        grad_low = -transpose(positive, c)
        grad_high = -transpose(negative, c)
        ordered = first <= second
        return (
            transpose(lambda v: scale * linear(v, w), c),
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
        args = jax.tree_util.tree_leaves(params) + [_Dependent(x, companions)]
        (out,) = _run(closed.jaxpr, closed.consts, args, state)
        if self.rules.rule in ("zbox", "composite") and not state.first_layers:
            raise ValueError(
                f"lrp(rule={self.rules.rule!r}) found no linear layer reading x through "
                "reshapes and affine maps only, so the bounds low/high reach no first layer"
            )
        if isinstance(out, _Detached):
            out = out.value
        if not isinstance(out, _Dependent):
            return out - out if self.rules.method == "deeplift" else out
        if self.rules.method == "deeplift":
            return out.value - jax.lax.stop_gradient(out.companions[0])
        return out.value


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
    rule: str = "epsilon",
    epsilon: float = 1e-9,
    gamma: float = 0.25,
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

    Args:
      model: a `jaxplain.Model` with `output="logits"`.
      x: a batch of inputs, `(batch, ...)`.
      target: as for `guided_backprop`.
      rule: one of "epsilon", "gamma", "alpha1beta0", "zbox", "composite".
      epsilon: the stabiliser of the epsilon rule (the other rules use 1e-9).
      gamma: the gamma rule's weight on positive contributions.
      low, high: bounds of the input (a scalar, one example or one per example) for the
        z-box rule, e.g. 0.0 and 1.0 for images in [0, 1]; x must lie within them.
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
      Ali, Schnake, Eberle, Montavon, Mueller, Wolf. XAI for Transformers: Better
      Explanations through Conservative Propagation. arXiv:2202.07304, 2022.
      Achtibat, Hatefi, Dreyer, Jain, Wiegand, Lapuschkin, Samek. AttnLRP: Attention-Aware
      Layer-Wise Relevance Propagation for Transformers. arXiv:2402.05602, 2024.
    """
    x, targets = _checks.prepare(model, x, target)
    _logits_only("lrp", model)
    if rule not in LRP_RULES:
        raise ValueError(f"rule must be one of {LRP_RULES}, got {rule!r}")
    epsilon, gamma = _checks.number("epsilon", epsilon), _checks.number("gamma", gamma)
    if attention not in ATTENTION_RULES:
        raise ValueError(f"attention must be one of {ATTENTION_RULES}, got {attention!r}")
    rules = _Rules("lrp", rule, epsilon, gamma, attention)
    slots = [jnp.asarray(x)]
    if rule in ("zbox", "composite"):
        low, high = _checks.input_bound("low", low, x), _checks.input_bound("high", high, x)
        if not any(_checks.is_traced(v) for v in (x, low, high)) and not (
            np.all(np.asarray(low) <= np.asarray(x)) and np.all(np.asarray(x) <= np.asarray(high))
        ):
            raise ValueError("x must lie within [low, high] for the z-box rule")
        slots += [jnp.broadcast_to(jnp.asarray(b, x.dtype), x.shape) for b in (low, high)]
    elif low is not None or high is not None:
        raise ValueError(f"low and high are used by the z-box rule only, not by rule={rule!r}")
    _check_supported(model, rules, x, len(slots))
    return _propagate(model, jnp.stack(slots, axis=1), targets, rules=rules)


__all__ = ["ATTENTION_RULES", "LRP_RULES", "deconvnet", "deeplift", "deeplift_shap", "guided_backprop", "lrp"]
