"""Reading a model's jaxpr: nested calls, and the patterns jaxplain gives a meaning to.

The rule-based methods (`jaxplain.methods.rules`) and the attention methods
(`jaxplain.methods.attention`) work on the model's function traced to a jaxpr. This module
holds what both need:

* `CALLS`, `body` and `bind`: the primitives that call a nested jaxpr once with the same
  inputs (`jit`, `custom_jvp_call`, `checkpoint`, ...), the nested jaxpr, and re-binding an
  equation to new operands;
* `softmax_units`: where the jaxpr computes a softmax. `jax.nn.softmax` is not a call in
  the traced program; it is inlined as

      m = stop_gradient(broadcast(max(reduce_max(a), -inf)))   (optional shift)
      e = exp(a - m);  s = e / broadcast(reduce_sum(e))

  so a softmax is recognised by that shape: a `div` whose numerator is an `exp` and whose
  denominator is the `reduce_sum` of the same `exp` (through broadcasts and reshapes), the
  exp's operand either the logits themselves or the logits minus a stopped shift computed
  from them alone. Hand-written softmaxes of that form are found too;
* `evaluate`: the jaxpr evaluated with a hook on every softmax output (recursing into
  nested calls), which captures attention weights or adds a perturbation to them.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable

import jax.extend.core as jex

# Primitives that call a nested jaxpr once, with the same inputs.
CALLS = frozenset(
    {
        "jit",
        "pjit",
        "closed_call",
        "core_call",
        "remat",
        "remat2",
        "checkpoint",
        "custom_jvp_call",
        "custom_vjp_call",
        "custom_vjp_call_jaxpr",
    }
)

# Shape-only operations a softmax's sum or shift may pass through.
_RESHAPES = frozenset({"broadcast_in_dim", "reshape", "expand_dims", "squeeze", "convert_element_type"})


def bind(eqn, args) -> list:
    """The equation's primitive applied to `args`, as a list of outputs."""
    params = eqn.primitive.get_bind_params(eqn.params)
    out = eqn.primitive.bind(*args, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def body(eqn):
    """The nested jaxpr of a call primitive and its constants."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        inner = eqn.params.get(key)
        if inner is not None:
            break
    if isinstance(inner, jex.ClosedJaxpr):
        return inner.jaxpr, inner.consts
    return inner, ()


@dataclasses.dataclass(frozen=True)
class SoftmaxUnit:
    """One softmax in a jaxpr.

    Attributes:
      output: the index of the equation that gives the softmax (the `div`).
      eqns: the indices of all its equations (shift, exp, sum, div); none of their
        intermediate values is used outside the unit.
      logits: the variable the softmax is taken of.
      axes: the axes it normalises over.
    """

    output: int
    eqns: frozenset[int]
    logits: jex.Var
    axes: tuple[int, ...]


def _producers(jaxpr) -> dict:
    return {v: i for i, eqn in enumerate(jaxpr.eqns) for v in eqn.outvars if isinstance(v, jex.Var)}


def uses(jaxpr) -> collections.Counter:
    """How many times each variable is read (by equations and as an output)."""
    counts = collections.Counter(v for eqn in jaxpr.eqns for v in eqn.invars if isinstance(v, jex.Var))
    counts.update(v for v in jaxpr.outvars if isinstance(v, jex.Var))
    return counts


def _through(var, producers, eqns, names=_RESHAPES):
    """Follows `var` back through shape-only equations; returns the source variable and the
    equations passed (None where a non-variable is reached)."""
    passed = []
    while isinstance(var, jex.Var) and var in producers and eqns[producers[var]].primitive.name in names:
        index = producers[var]
        passed.append(index)
        var = eqns[index].invars[0]
    return var, passed


def _shift_of(var, logits, producers, eqns) -> list | None:
    """The equations of a stopped shift computed from `logits` alone (max-subtraction),
    the maximum taken of the logits or of the value they are a transpose or reshape of."""
    sources = {logits}
    source = logits
    while isinstance(source, jex.Var) and source in producers:
        eqn = eqns[producers[source]]
        if eqn.primitive.name not in _RESHAPES | {"transpose"}:
            break
        source = eqn.invars[0]
        sources.add(source)
    passed = []
    frontier = [var]
    while frontier:
        v = frontier.pop()
        if isinstance(v, jex.Literal):
            continue
        if v in sources:
            return None  # the shift must be a function of the logits, not the logits
        if v not in producers:
            return None
        index = producers[v]
        eqn = eqns[index]
        if eqn.primitive.name not in _RESHAPES | {"stop_gradient", "reduce_max", "max", "transpose"}:
            return None
        passed.append(index)
        for operand in eqn.invars:
            if isinstance(operand, jex.Var) and operand in sources and eqn.primitive.name == "reduce_max":
                continue
            if isinstance(operand, jex.Var):
                frontier.append(operand)
    if not any(eqns[i].primitive.name == "stop_gradient" for i in passed):
        return None
    return passed


def softmax_units(jaxpr) -> dict[int, SoftmaxUnit]:
    """Every softmax of `jaxpr` (not of nested jaxprs), keyed by its output equation."""
    eqns = jaxpr.eqns
    producers = _producers(jaxpr)
    counts = uses(jaxpr)
    units = {}
    for index, eqn in enumerate(eqns):
        if eqn.primitive.name != "div":
            continue
        numerator, denominator = eqn.invars
        if not isinstance(numerator, jex.Var) or numerator not in producers:
            continue
        exp_index = producers[numerator]
        if eqns[exp_index].primitive.name != "exp":
            continue
        summed, passed = _through(denominator, producers, eqns)
        if not isinstance(summed, jex.Var) or summed not in producers:
            continue
        sum_index = producers[summed]
        if eqns[sum_index].primitive.name != "reduce_sum" or eqns[sum_index].invars[0] is not numerator:
            continue
        if counts[numerator] != 2:
            continue
        members = {index, exp_index, sum_index, *passed}
        logits = eqns[exp_index].invars[0]
        if (
            isinstance(logits, jex.Var)
            and logits in producers
            and eqns[producers[logits]].primitive.name == "sub"
        ):
            sub_index = producers[logits]
            raw, shift = eqns[sub_index].invars
            shift_eqns = _shift_of(shift, raw, producers, eqns) if isinstance(raw, jex.Var) else None
            if shift_eqns is not None and counts[logits] == 1:
                members |= {sub_index, *shift_eqns}
                logits = raw
        if not isinstance(logits, jex.Var):
            continue
        inner = {v for i in members for v in eqns[i].outvars} - set(eqns[index].outvars)
        readers = collections.Counter(
            v for i in members for v in eqns[i].invars if isinstance(v, jex.Var) and v in inner
        )
        if any(readers[v] != counts[v] for v in inner):
            continue  # an intermediate value is used outside the softmax
        axes = tuple(eqns[sum_index].params["axes"])
        units[index] = SoftmaxUnit(index, frozenset(members), logits, axes)
    return units


def evaluate(jaxpr, consts, args, on_softmax: Callable, path: tuple = ()) -> list:
    """Evaluates `jaxpr`, replacing every softmax output s by `on_softmax(s, where)`.

    `where` is a tuple of equation indices locating the softmax through nested calls.
    Softmaxes are visited in the order the program computes them. Nested calls are
    evaluated by their primal computation (a user's custom derivative is not used).
    """
    units = softmax_units(jaxpr)
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))

    def read(var):
        return var.val if isinstance(var, jex.Literal) else env[var]

    for index, eqn in enumerate(jaxpr.eqns):
        operands = [read(v) for v in eqn.invars]
        if eqn.primitive.name in CALLS:
            inner, inner_consts = body(eqn)
            outs = evaluate(inner, inner_consts, operands, on_softmax, path + (index,))
        else:
            outs = bind(eqn, operands)
            if index in units:
                outs = [on_softmax(outs[0], path + (index,))]
        for var, value in zip(eqn.outvars, outs):
            if not isinstance(var, jex.DropVar):
                env[var] = value
    return [read(v) for v in jaxpr.outvars]
