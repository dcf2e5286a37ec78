"""How one batch's block product is computed: the strategies, the rule that picks one, and failures.

A curvature operator can compute a batch's product several ways:

- ``"vmap"``: ``torch.func`` transforms vmapped over the block of tangents;
- ``"loop"``: the same ``torch.func`` product, one vector at a time;
- ``"autograd"``: plain autograd double backward (reverse-over-reverse), block-batched;
- ``"cached"`` / ``"cached_batched"``: one backward through the batch's retained gradient graph
  (:mod:`curvscope.operators.graphs`), per vector or ``is_grads_batched``; for the Gauss–Newton
  family (GGN, gradient moment) the retained outputs graph, ``J v`` by a double vjp;
- ``"linearize"`` (Gauss–Newton family): ``J v`` by a kept :func:`torch.func.linearize` graph, ``Jᵀ u``
  through the retained outputs graph (:mod:`curvscope.operators.linearised`);
- ``"compiled"`` (``compile=True`` only): the ``loop`` product through ``torch.compile``
  (:mod:`curvscope.operators.compiled`), tried first when asked for;
- ``"fd"``: a central difference of two gradients (:mod:`curvscope.operators.finite_difference`),
  the last resort when no exact product can be formed — never chosen silently (a warning says so
  and the estimated error is recorded on the operator).

The default (``strategy="auto"``) is a **deterministic rule** on the model's structure, the block
width and the device, so two runs give bitwise-identical products and a first call pays for no
tuning. The rule rests on measurements of ``benchmarks/matvec.py`` (CPU, 2 threads): ``vmap`` is
fastest per vector on dense nets but ~2.5× slower than a loop on convolutions; double backward beats
``jvp∘grad`` for single products (4.2× vs 5.3× a gradient on a 301k MLP); a retained graph makes a
single HVP ~1.2× a gradient, and on a CPU batching through it is dearer per vector than a loop.
For the Gauss–Newton family a retained linearisation makes a product ≈ one forward-mode pass plus
one backward: the double vjp is fastest on dense nets, ``linearize`` on convolutions (the double
backward of a convolution is dear; :mod:`curvscope.operators.linearised` has the numbers).
``strategy="tune"`` times the candidates on the first batch instead (the old behaviour); either way
the choice is recorded (:attr:`StrategyChooser.record`).

A strategy that fails for a *known, benign* reason (an op without forward-mode AD or batching rule,
torch 2.13's "ZeroTensors are immutable" for ``jvp(grad)`` through ``F.mse_loss``) is dropped with a
warning that says why. Anything else — out-of-memory, ``KeyboardInterrupt``, an error raised by the
user's model or loss — propagates at once. When every strategy fails, :class:`ProductError` lists
each strategy's error.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence

import torch

logger = logging.getLogger("curvscope")

STRATEGIES = ("compiled", "vmap", "loop", "autograd", "cached", "cached_batched", "linearize", "fd")
#: Strategies that reuse per-batch state kept between products: a retained gradient graph (one vector
#: at a time, or batched), or for the Gauss–Newton family a retained linearisation
#: (:mod:`curvscope.operators.linearised`; ``"linearize"`` is its ``torch.func.linearize`` form).
CACHED = ("cached", "cached_batched", "linearize")
SELECTIONS = ("auto", "tune", *STRATEGIES)

#: Message fragments of errors that mean "this transform cannot run this model", not a user bug.
BENIGN_PATTERNS = (
    "vmap",
    "functorch",
    "batching rule",
    "batched gradient",
    "is_grads_batched",
    "zerotensors are immutable",
    "forward ad",
    "forward-mode",
    "jvp",
    "not implemented for",
    "does not support",
    "double backward",
    "backward through the graph a second time",
    "derivative for",
    "data-dependent control flow",
    "cannot access data pointer",
    "inplace operation",
    "in-place operation",
    "once_differentiable",
)


class ProductError(RuntimeError):
    """Every product strategy failed; the message lists each strategy's error."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` reports exhausted host or device memory."""
    if isinstance(err, MemoryError):
        return True
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def is_benign(err: BaseException) -> bool:
    """A strategy limitation (drop the strategy and try the next), as opposed to an error to raise.

    Out-of-memory is never benign (another strategy would not fit either, and the user must
    know); errors that are not ``RuntimeError``/``NotImplementedError`` come from the user's code
    (a ``ValueError`` in a loss, a ``KeyError`` in a batch) and are never benign.
    """
    if is_out_of_memory(err):
        return False
    if isinstance(err, NotImplementedError):
        return True
    if type(err) is not RuntimeError and not type(err).__module__.startswith("torch"):
        return False
    text = str(err).lower()
    return any(p in text for p in BENIGN_PATTERNS)


def block_width(device: torch.device, max_block: int) -> int:
    """The block rule: how many vectors one autograd call carries (``is_grads_batched`` / ``vmap``).

    A block of K vectors is always **one pass over the data**; this is how many of them go through
    one backward together. CPU: 1 — ``benchmarks/matvec.py`` (1 thread, MLP-300k, K=8 through kept
    graphs, per vector / gradient): Hessian 2.93 looped vs 3.40 batched, GGN 2.13 vs 1.95 (within
    the load noise), so no gain to pay a batched graph's memory for. GPU: ``max_block`` (one kernel
    launch per op for the whole block is what makes a GPU cheaper per vector). The rule's order
    (:func:`rule_order`) follows it: batched strategies first only on CUDA.
    """
    return max(1, max_block) if device.type == "cuda" else 1


def rule_order(
    available: Sequence[str], width: int, *, convolutional: bool, device: torch.device, cached: bool
) -> list[str]:
    """The deterministic preference order of strategies for a block of ``width`` vectors.

    Args:
        available: strategies this operator has.
        width: vectors in the block.
        convolutional: the model has convolution or pooling layers (``vmap`` is slow there).
        device: the compute device (batching is cheap per vector on a GPU, not on a CPU).
        cached: retained graphs may be used now (kept graphs exist after the determinism probe).
    """
    order: list[str] = ["compiled"]  # only available when asked for (compile=True)
    if cached:
        batched_first = min(width, block_width(device, width)) > 1
        order += ["cached_batched", "cached"] if batched_first else ["cached", "cached_batched"]
        if convolutional:  # convolution double backward is dear: the traced tangent pass wins there
            order.insert(0, "linearize")
        else:
            order.append("linearize")
    if width == 1:
        order += ["autograd", "loop", "vmap"]
    elif convolutional:
        order += ["autograd", "loop", "vmap"]
    else:
        order += ["vmap", "autograd", "loop"]
    if width == 1 and "cached_batched" in order:
        order.remove("cached_batched")
    order.append("fd")  # only when every exact strategy failed for a benign reason
    return [s for s in order if s in available]


class StrategyChooser:
    """Runs a batch's product by the chosen strategy, falling back on benign failures only.

    Args:
        available: strategies the operator implements.
        selection: ``"auto"`` (the rule), ``"tune"`` (time candidates on the first batch) or a
            strategy name (that one only; its failure is raised).
        name: the operator's name, for messages.
    """

    def __init__(self, available: Sequence[str], selection: str, name: str) -> None:
        if selection not in SELECTIONS:
            raise ValueError(f"strategy must be one of {SELECTIONS}, got {selection!r}")
        if selection in STRATEGIES and selection not in available:
            raise ValueError(
                f"{name} has no strategy {selection!r}: its strategies are {list(available)} "
                f"(the cached ones need cache_graphs=True and a fixed list of batches; 'compiled' needs compile=True)"
            )
        self.available = list(available)
        self.selection = selection
        self.name = name
        #: the strategy used for each kind of product ("single", "block", "+cached"), for results.
        self.record: dict[str, str] = {}
        self._dropped: dict[str, str] = {}

    def candidates(self, width: int, *, convolutional: bool, device: torch.device, cached: bool) -> list[str]:
        """Strategies to try, in order, for a block of ``width`` vectors."""
        if self.selection in STRATEGIES and (cached or self.selection not in CACHED):
            return [self.selection]
        # a cached strategy asked for before graphs may be kept (the determinism probe): the rule's
        order = rule_order(self.available, width, convolutional=convolutional, device=device, cached=cached)
        return [s for s in order if s not in self._dropped]

    def run(self, kind: str, candidates: list[str], apply: Callable[[str], object]) -> object:
        """``apply(strategy)`` by the recorded strategy of ``kind``, else the first that works.

        With ``selection="tune"`` the first call of each kind times every working candidate and
        keeps the fastest. Benign failures drop the strategy (with a warning); other errors raise.
        """
        chosen = self.record.get(kind)
        if chosen in candidates:
            candidates = [chosen, *(c for c in candidates if c != chosen)]
        tune = self.selection == "tune" and chosen is None and len(candidates) > 1
        result, timings, errors = None, {}, {}
        for strategy in candidates:
            if strategy == "fd" and timings:
                break  # finite differences only when no exact strategy works, tuned or not
            t0 = time.perf_counter()
            try:
                out = apply(strategy)
            except Exception as err:
                if strategy == self.selection or not is_benign(err):
                    raise
                errors[strategy] = err
                self._drop(strategy, err)
                continue
            timings[strategy] = time.perf_counter() - t0
            result = out if result is None else result
            if not tune:
                break
        if not timings:
            raise ProductError(
                f"{self.name}: every product strategy failed for this model: "
                + "; ".join(f"{s}: {type(e).__name__}: {e}" for s, e in errors.items())
                + ". If the model uses an operation without second derivatives (a fused kernel, a custom "
                "autograd.Function), replace it or compute in float64 on the CPU."
            )
        if kind not in self.record or self.record[kind] not in timings:
            self.record[kind] = min(timings, key=timings.get) if tune else next(iter(timings))
            if self.record[kind] == "fd" and self.selection != "fd":
                warnings.warn(
                    f"{self.name}: no exact product works for this model; using finite-difference products "
                    f"(central differences of gradients). Their estimated relative error is in .fd_error; "
                    f"pass method='exact' to refuse them.",
                    RuntimeWarning,
                    stacklevel=6,
                )
            logger.info("%s: %s products by %s (timings %s)", self.name, kind, self.record[kind], timings)
        return result

    def _drop(self, strategy: str, err: Exception) -> None:
        self._dropped[strategy] = f"{type(err).__name__}: {err}"
        warnings.warn(
            f"{self.name}: the {strategy!r} product strategy cannot run this model "
            f"({type(err).__name__}: {str(err)[:200]}); using the next one. Pass strategy=... to choose.",
            RuntimeWarning,
            stacklevel=6,
        )
