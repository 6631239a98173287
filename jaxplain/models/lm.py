"""A small decoder-only (causal) language model, and how the shipped `copy_lm` was trained.

`CausalLM` maps token ids `(batch, length)` to next-token logits `(batch, length,
vocab_size)`: the logits at position t are a function of the tokens at positions 0..t
only. `train_causal_lm` fits one to a `jaxplain.data.sequences` task by next-token
cross-entropy on the answer tokens, `generate` continues prompts greedily, and
`train_checkpoint` is what `jaxplain train --model causal_lm --data copy --out DIR`
runs (the command behind the shipped `copy_lm`; `--data key_value`: `key_value_lm`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxplain import training
from jaxplain.data import sequences as tasks
from jaxplain.models.text import EncoderBlock
from jaxplain.training import TrainConfig


class CausalLM(nn.Module):
    """A decoder-only transformer: token ids in, next-token logits out.

    Token embedding, learned position embedding, `depth` pre-LayerNorm blocks of causal
    self-attention (flax's `nn.MultiHeadDotProductAttention` with
    `nn.make_causal_mask`) and a GELU MLP, a final LayerNorm and a dense layer to the
    vocabulary. The forward pass is split, as `TextClassifier`'s is, so that attribution
    methods can work on the continuous token embeddings:

      embeddings = module.apply(variables, ids, method="embed")
      logits = module.apply(variables, embeddings, method="logits_from_embeddings")

    and `module.apply(variables, ids)` does both.

    Attributes:
      vocab_size: the number of token ids.
      max_length: the longest sequence accepted (the number of positions embedded).
      hidden: the width of the embeddings and of the blocks.
      depth: the number of decoder blocks.
      heads: the number of attention heads; must divide `hidden`.
      mlp_dim: the hidden width of each block's MLP.
      dropout_rate: the dropout probability (training only; draws from the "dropout"
        rng collection).
      activation: the MLP nonlinearity.

    References:
      Radford, Wu, Child, Luan, Amodei, Sutskever. Language Models are Unsupervised
      Multitask Learners. OpenAI, 2019.
      Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin.
      Attention Is All You Need. arXiv:1706.03762, 2017.
    """

    vocab_size: int
    max_length: int
    hidden: int = 64
    depth: int = 2
    heads: int = 4
    mlp_dim: int = 128
    dropout_rate: float = 0.0
    activation: Callable = nn.gelu

    def setup(self):
        self.token_embedding = nn.Embed(self.vocab_size, self.hidden)
        self.position_embedding = self.param(
            "position_embedding", nn.initializers.normal(stddev=0.02), (self.max_length, self.hidden)
        )
        self.embedding_dropout = nn.Dropout(self.dropout_rate)
        self.blocks = [
            EncoderBlock(self.heads, self.mlp_dim, self.dropout_rate, self.activation)
            for _ in range(self.depth)
        ]
        self.final_norm = nn.LayerNorm()
        self.head = nn.Dense(self.vocab_size)

    def embed(self, ids):
        """Returns the token embeddings `(batch, length, hidden)`, without positions."""
        return self.token_embedding(ids)

    def logits_from_embeddings(self, embeddings, train: bool = False):
        """Returns next-token logits `(batch, length, vocab_size)` from token embeddings.

        Args:
          embeddings: `(batch, length, hidden)`, as returned by `embed`.
          train: apply dropout.

        Returns:
          Logits `(batch, length, vocab_size)`; position t depends on embeddings 0..t.
        """
        if embeddings.ndim != 3:
            raise ValueError(f"embeddings must be (batch, length, hidden), got shape {embeddings.shape}")
        length = embeddings.shape[1]
        if length > self.max_length:
            raise ValueError(f"the sequence has length {length}, more than max_length={self.max_length}")
        x = self.embedding_dropout(embeddings + self.position_embedding[:length], deterministic=not train)
        mask = nn.make_causal_mask(jnp.ones(embeddings.shape[:2], bool))
        for block in self.blocks:
            x = block(x, mask, train)
        return self.head(self.final_norm(x))

    def __call__(self, ids, train: bool = False):
        """Returns next-token logits `(batch, length, vocab_size)` for token ids `(batch, length)`."""
        return self.logits_from_embeddings(self.embed(ids), train=train)


def _check_ids(name: str, ids, module: CausalLM) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be integer token ids (n, length), got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= module.vocab_size):
        raise ValueError(f"{name} holds ids outside 0..{module.vocab_size - 1} (the module's vocab_size)")
    return ids.astype(np.int32)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _generate(module, variables, prompts, steps):
    prompt_length = prompts.shape[1]
    ids = jnp.concatenate([prompts, jnp.zeros((prompts.shape[0], steps), prompts.dtype)], axis=1)

    def step(t, ids):
        # Causal: the padding after position t does not change the logits at t.
        logits = module.apply(variables, ids)[:, prompt_length - 1 + t]
        return ids.at[:, prompt_length + t].set(logits.argmax(-1).astype(ids.dtype))

    return jax.lax.fori_loop(0, steps, step, ids)[:, prompt_length:]


def generate(module: CausalLM, variables, prompts, steps: int) -> np.ndarray:
    """Continues each prompt greedily (the most likely token at every step).

    Args:
      module: a `CausalLM`.
      variables: its variables.
      prompts: int token ids `(n, prompt_length)`.
      steps: the number of tokens to generate; `prompt_length + steps` must not exceed
        `module.max_length`.

    Returns:
      int32 `(n, steps)`: the generated tokens.
    """
    prompts = _check_ids("prompts", prompts, module)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if prompts.shape[1] + steps > module.max_length:
        raise ValueError(
            f"prompts of length {prompts.shape[1]} and steps={steps} exceed max_length={module.max_length}"
        )
    return np.asarray(_generate(module, variables, jnp.asarray(prompts), int(steps)))


def greedy_accuracy(module: CausalLM, variables, task: tasks.Sequences) -> dict[str, float]:
    """How often greedy generation from `task.prompts` gives `task.generated`.

    Returns:
      `{"token_accuracy": ..., "sequence_accuracy": ...}`: the share of generated tokens
      equal to the task's, and the share of examples whose whole answer is.
    """
    generated = generate(module, variables, task.prompts, task.generated.shape[1])
    correct = generated == task.generated
    return {"token_accuracy": float(correct.mean()), "sequence_accuracy": float(correct.all(1).mean())}


@dataclasses.dataclass
class LMResult:
    """What `train_causal_lm` returns.

    Attributes:
      variables: the module's variables (`{"params": ...}`).
      history: one dict per epoch: epoch, train_loss, train_token_accuracy (teacher-
        forced) and, with a held-out task, its greedy token and sequence accuracies.
    """

    variables: dict[str, Any]
    history: list[dict[str, float]]


DEFAULTS = TrainConfig(
    epochs=20,
    batch_size=64,
    learning_rate=1e-3,
    weight_decay=1e-4,
    warmup_fraction=0.05,
    clip_norm=1.0,
    seed=0,
    progress=True,
)


def train_causal_lm(
    module: CausalLM,
    task: tasks.Sequences,
    *,
    held_out: tasks.Sequences | None = None,
    config: TrainConfig | None = None,
    **settings,
) -> LMResult:
    """Trains `module` to answer `task`'s prompts: next-token cross-entropy on the answers.

    Each example is the prompt followed by its answer; the model reads all but the last
    token and is scored on predicting the answer tokens (the prompt's own tokens are
    not predicted: they are random). One compiled `lax.scan` per epoch, in jaxplain's
    training loop (`jaxplain.training.run`: AdamW, warm-up and cosine decay).

    Args:
      module: a `CausalLM` whose `max_length` holds the prompt and the answer.
      task: the training examples, e.g. `jaxplain.data.sequences.copy_task(20000)`.
      held_out: examples on which greedy generation is measured after every epoch.
      config: a `jaxplain.training.TrainConfig`; its fields may also be given as
        keywords, which win. Unset fields take `DEFAULTS` (20 epochs, batches of 64,
        learning rate 1e-3, weight decay 1e-4, clipping at norm 1, seed 0).
      **settings: `TrainConfig`'s fields.

    Returns:
      An `LMResult`.
    """
    config = training.resolve("train_causal_lm", DEFAULTS, config, settings, stops_early=False)
    if not isinstance(module, CausalLM):
        raise TypeError(f"module must be a jaxplain.models.CausalLM, got {type(module).__name__}")
    if not isinstance(task, tasks.Sequences):
        raise TypeError(f"task must be a jaxplain.data.sequences.Sequences, got {type(task).__name__}")
    ids = _check_ids("task.sequences()", task.sequences(), module)
    if ids.shape[1] > module.max_length:
        raise ValueError(
            f"task's sequences have length {ids.shape[1]}, more than max_length={module.max_length}"
        )
    answer_from = task.prompts.shape[1] - 1  # the input position whose next token is the first answer token
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = module.init(init_key, jnp.asarray(ids[:1, :-1]))["params"]

    def loss_fn(params, state, batch, key):
        logits = module.apply({"params": params}, batch[:, :-1], train=True, rngs={"dropout": key})
        logits, targets = logits[:, answer_from:], batch[:, answer_from + 1 :]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
        return loss, (state, {"token_accuracy": (logits.argmax(-1) == targets).mean()})

    def evaluate(params, state):
        del state
        measured = greedy_accuracy(module, {"params": params}, held_out)
        return {f"held_out_{name}": value for name, value in measured.items()}

    result = training.run(
        loss_fn,
        params,
        ids,
        config,
        key=dropout_key,
        evaluate=None if held_out is None else evaluate,
        description="train_causal_lm",
    )
    return LMResult({"params": result.params}, result.history)


TASKS = {"copy": tasks.copy_task, "key_value": tasks.key_value_task}
TASK_SETTINGS = {"copy": {"length": 8}, "key_value": {"pairs": 4}}  # besides vocab_size
TRAIN_EXAMPLES = 20000
HELD_OUT_EXAMPLES = 2000


def task_splits(task: str, *, seed: int = 0, **task_config) -> tuple[tasks.Sequences, tasks.Sequences]:
    """The training and held-out examples of a task of `TASKS`: `TRAIN_EXAMPLES` drawn with
    seed `2 seed`, `HELD_OUT_EXAMPLES` with seed `2 seed + 1`; `task_config` goes to the task."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    make = TASKS[task]
    return make(TRAIN_EXAMPLES, seed=2 * seed, **task_config), make(
        HELD_OUT_EXAMPLES, seed=2 * seed + 1, **task_config
    )


def train_checkpoint(
    out: str, *, task: str = "copy", config: dict | None = None, command: str, **settings
) -> dict[str, float]:
    """Trains a `CausalLM` on a task of `TASKS` and saves it as a jaxplain checkpoint.

    What `jaxplain train --model causal_lm --data copy --out DIR` runs. The metadata
    records the task, its settings (`task_config`: `TASK_SETTINGS` and the vocabulary)
    and the held-out draws (`held_out`: examples and seed), the greedy accuracy on them
    and `command`.

    Args:
      out: the checkpoint folder to write.
      task: "copy" (`copy_task` with 8 tokens to copy) or "key_value"
        (`key_value_task` with 4 pairs).
      config: `CausalLM` fields; `vocab_size` defaults to 16 (it is also the task's),
        `max_length` to the task's prompt and answer lengths together.
      command: the command line to record.
      **settings: `TrainConfig` fields for `train_causal_lm`.

    Returns:
      The held-out greedy accuracies (`greedy_accuracy`).
    """
    from jaxplain import io

    config = {"vocab_size": 16, **(config or {})}
    seed = settings.get("seed", DEFAULTS.seed)
    task_config = {**TASK_SETTINGS.get(task, {}), "vocab_size": config["vocab_size"]}
    train_task, held_out = task_splits(task, seed=seed, **task_config)
    config.setdefault("max_length", int(train_task.sequences().shape[1]))
    module = CausalLM(**config)
    result = train_causal_lm(module, train_task, held_out=held_out, **settings)
    measured = greedy_accuracy(module, result.variables, held_out)
    io.save_checkpoint(
        out,
        architecture="causal_lm",
        config=config,
        variables=result.variables,
        input_shape=(config["max_length"],),
        input_dtype="int32",
        task=task,
        task_config=task_config,
        prompt_length=int(train_task.prompts.shape[1]),
        generated_length=int(train_task.generated.shape[1]),
        held_out={"examples": HELD_OUT_EXAMPLES, "seed": 2 * seed + 1},
        greedy_token_accuracy=round(measured["token_accuracy"], 6),
        greedy_sequence_accuracy=round(measured["sequence_accuracy"], 6),
        command=command,
        training={
            **{k: v for k, v in DEFAULTS.replace(**settings).given().items() if k != "progress"},
            "train_examples": TRAIN_EXAMPLES,
        },
    )
    return measured
