"""Calibration statistics for a checkpoint larger than memory: its model run one layer at a time.

:func:`layer_stats` takes the meta-device model of a checkpoint and gathers, for each consumer
module named, the per-channel sums of its input over the calibration batches (what
:func:`fprune.score_activation`, :func:`fprune.score_wanda` and :func:`fprune.score_flap` read),
holding one decoder layer's weights at a time.  Phase ``i`` runs the model's own ``forward`` on
every batch with layers ``0..i-1`` replaying the outputs phase ``i-1`` kept, layer ``i`` loaded
from the checkpoint, and layer ``i+1`` stopping the run; the last layer's phase runs on through
the final norm and stops at the output embedding once its input is recorded.  The input
embedding runs in phase 0 only (later phases replay what it fed), holding just the rows of the
ids used; norms, rotary tables and other small modules outside the layers stay loaded
throughout.  Memory: one layer, the small modules, the embedding rows the batches use, and two
sets of hidden states (``batches x batch x seq x hidden``).  The model's own code runs, so
masks, positions and family quirks (Gemma's embedding scale) are the model's.

:func:`read_calibration` reads the token ids of ``fprune hf prune --calibration FILE``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from fprune.calibrate import Stats, misfit, non_finite
from fprune.errors import CheckpointError, FpruneError, InvalidArgumentError, UnsupportedModelError
from fprune.tensorfile import DTYPES, TensorEntry

__all__ = ["layer_stats", "read_calibration"]

class Source(Protocol):
    """The checkpoint's tensors: ``source(name)`` reads one, ``source.key(name)`` says whether (and as
    what) it is saved, ``source.entry(name)`` where (its dtype)."""

    def __call__(self, name: str) -> Tensor: ...

    def key(self, name: str) -> str | None: ...

    def entry(self, name: str) -> TensorEntry: ...

    def rows(self, name: str, start: int, stop: int) -> Tensor: ...


class _Stop(Exception):
    """Ends one phase's forward pass where nothing after it is needed."""


def read_calibration(path: str | os.PathLike[str], batch_size: int, vocab_size: int) -> list[dict[str, Tensor]]:
    """Calibration batches from a safetensors file: ``input_ids`` (int, ``[rows, seq]``) and optionally
    ``attention_mask`` (same shape), split into batches of `batch_size` rows (the last may be shorter).

    Make one with ``safetensors.torch.save_file({"input_ids": ids}, "calib.safetensors")``.

    Raises:
        InvalidArgumentError: the file is missing or unreadable, lacks ``input_ids``, or holds ids
            outside the vocabulary, or a bad `batch_size`.

    Example:
        >>> import tempfile, torch
        >>> from fprune.tensorfile import save_tensors
        >>> path = tempfile.mkdtemp() + "/calib.safetensors"
        >>> save_tensors(path, {"input_ids": torch.arange(12).reshape(3, 4)})
        >>> [tuple(b["input_ids"].shape) for b in read_calibration(path, 2, vocab_size=16)]
        [(2, 4), (1, 4)]
    """
    from fprune.tensorfile import load_tensors

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"the calibration batch size must be a positive int, got {batch_size!r}")
    try:
        found = load_tensors(path)
    except (OSError, CheckpointError) as exc:
        raise InvalidArgumentError(f"cannot read the calibration file {str(path)!r}: {exc}; it must be a "
                                   "safetensors file with an int tensor 'input_ids' [rows, seq]") from None
    ids = found.get("input_ids")
    if ids is None or ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool or not ids.numel():
        what = "no 'input_ids'" if ids is None else f"'input_ids' of shape {tuple(ids.shape)} and dtype {ids.dtype}"
        raise InvalidArgumentError(f"the calibration file {str(path)!r} has {what}; expected a non-empty int tensor "
                                   "'input_ids' [rows, seq] (e.g. save_file({'input_ids': ids}, path))")
    ids = ids.long()
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise InvalidArgumentError(f"the calibration file {str(path)!r} holds token ids from {int(ids.min())} to "
                                   f"{int(ids.max())}; the model's vocabulary has {vocab_size} (ids 0 to {vocab_size - 1})")
    mask = found.get("attention_mask")
    if mask is not None and tuple(mask.shape) != tuple(ids.shape):
        raise InvalidArgumentError(f"the calibration file's 'attention_mask' has shape {tuple(mask.shape)}; "
                                   f"'input_ids' has {tuple(ids.shape)}")
    batches = []
    for start in range(0, len(ids), batch_size):
        batch = {"input_ids": ids[start:start + batch_size]}
        if mask is not None:
            batch["attention_mask"] = mask[start:start + batch_size].long()
        batches.append(batch)
    return batches


def layer_stats(model: nn.Module, read: Source, batches: Sequence[Mapping[str, Tensor]], consumers: Sequence[str],
                *, device: str | torch.device = "cpu", where: str = "calibration") -> dict[str, Stats]:
    """Per-channel input sums of each module in `consumers` over `batches`, one layer loaded at a time.

    `model` is a meta-device transformers model whose tensors `read` gives from the checkpoint; it is
    returned to the meta device afterwards.  `device` is where the layers run.

    Raises:
        UnsupportedModelError: the model has no single stack of layers, or a tensor that is neither in
            the checkpoint nor rebuilt from the config.
        InvalidArgumentError: no batches, a batch the model cannot run, or NaN/inf in an input recorded.
    """
    layers = _layers(model)
    names = {id(m): n for n, m in model.named_modules()}
    known = dict(model.named_modules())
    missing = [c for c in consumers if c not in known]
    if missing:
        raise UnsupportedModelError(f"{where}: the model built from the config has no module {missing[0]!r}, which "
                                    "the analysis of its trace reads; score by weight magnitude (--scorer l1) and "
                                    "report the model")
    if not batches:
        raise InvalidArgumentError(f"{where}: no calibration batches; give at least one")
    stats = {c: Stats() for c in consumers}
    state = {"batch": 0}

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        name = names[id(module)]
        x = args[0]
        if not bool(torch.isfinite(x).all()):
            raise non_finite(where, f"the input of {name!r}", state["batch"])
        stats[name].add(x, -1 if isinstance(module, nn.Linear) else 1)

    device = torch.device(device)
    embed: nn.Module = getattr(model, "get_input_embeddings")()
    head: nn.Module | None = getattr(model, "get_output_embeddings")()
    inside = {id(m) for layer in layers for m in layer.modules()}
    with contextlib.ExitStack() as stack:
        for c in consumers:
            stack.enter_context(_hooked(known[c], record))
        outside = [m for m in model.modules() if id(m) not in inside and m is not embed and m is not head]
        stack.enter_context(_loaded(model, read, device, outside, recurse=False))  # each one's own tensors
        dtype = DTYPES[read.entry(names[id(embed)] + ".weight").dtype]  # what the layers compute in
        outputs: list[Any] = []
        for phase in range(len(layers)):  # the last layer's phase runs on to the output embedding's input
            kept: list[Any] = []
            with contextlib.ExitStack() as run:
                if phase == 0:
                    run.enter_context(_rows_only(embed, read, names[id(embed)] + ".weight", batches, device))
                    run.enter_context(_loaded(model, read, device, [embed]))  # its other tensors (a scale)
                else:
                    run.enter_context(_patched(embed, _zeros(embed, dtype, device)))
                for j in range(phase):
                    run.enter_context(_patched(layers[j], _replay(outputs, state)))
                run.enter_context(_loaded(model, read, device, [layers[phase]]))
                run.enter_context(_keeping(layers[phase], kept))
                if phase + 1 < len(layers):
                    run.enter_context(_patched(layers[phase + 1], _stop))
                if head is not None:
                    run.enter_context(_patched(head, _stop))
                for b, batch in enumerate(batches):
                    state["batch"] = b
                    _run(model, batch, device, where, b)
            outputs = kept
    for found in stats.values():  # on the CPU, where the scores meet the weights read from the checkpoint
        found.total, found.total_abs, found.total_sq = (
            None if t is None else t.cpu() for t in (found.total, found.total_abs, found.total_sq))
    return stats


# --------------------------------------------------------------------------------------


def _layers(model: nn.Module) -> nn.ModuleList:
    """The model's one stack of repeated layers (the longest ModuleList of modules of one class)."""
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) and
              len({type(x) for x in m}) == 1]
    longest = max((len(s) for s in stacks), default=0)
    found = [s for s in stacks if len(s) == longest]
    if len(found) != 1:
        raise UnsupportedModelError(
            f"out-of-core calibration runs one stack of layers; {type(model).__name__} has {len(found)} of "
            f"{longest} layers (an encoder-decoder?): score it by weight magnitude (--scorer l1), or load it "
            "and use fprune.score_wanda in memory")
    return found[0]


@contextlib.contextmanager
def _rows_only(embed: nn.Module, read: Source, name: str, batches: Sequence[Mapping[str, Tensor]],
               device: torch.device) -> Iterator[None]:
    """The input embedding holding only the rows the batches' ids use (read one by one), the ids
    renumbered to match by a pre-hook: its own forward (and any scale it applies) runs unchanged on
    a table of ``unique ids x hidden`` instead of the whole vocabulary."""
    used = torch.unique(torch.cat([b["input_ids"].reshape(-1) for b in batches]))
    table = torch.cat([read.rows(name, int(i), int(i) + 1) for i in used]).to(device)
    lookup = torch.full((int(used.max()) + 1,), -1, dtype=torch.long)
    lookup[used] = torch.arange(len(used))
    saved, padding = embed._parameters["weight"], getattr(embed, "padding_idx", None)
    embed._parameters["weight"] = nn.Parameter(table, requires_grad=False)
    setattr(embed, "padding_idx", None)  # an index of the whole table; it changes gradients only
    handle = embed.register_forward_pre_hook(lambda m, args: (lookup.to(args[0].device)[args[0]], *args[1:]))
    try:
        yield
    finally:
        handle.remove()
        embed._parameters["weight"] = saved
        setattr(embed, "padding_idx", padding)


def _run(model: nn.Module, batch: Mapping[str, Tensor], device: torch.device, where: str, index: int) -> None:
    kwargs: dict[str, Any] = {k: v.to(device) for k, v in batch.items()}
    kwargs["use_cache"] = False
    try:
        with torch.no_grad():
            model(**kwargs)
    except _Stop:
        return
    except FpruneError:
        raise
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        raise misfit(where, index, exc, exported=False) from exc


def _stop(*args: Any, **kwargs: Any) -> Any:
    raise _Stop


def _zeros(embed: nn.Module, dtype: torch.dtype, device: torch.device) -> Callable[..., Tensor]:
    """An input embedding's stand-in after phase 0: zeros of its output's shape (the replayed layers
    ignore what they are given)."""
    width = int(getattr(embed, "embedding_dim"))

    def forward(ids: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return torch.zeros(*ids.shape, width, dtype=dtype, device=device)
    return forward


def _replay(outputs: list[Any], state: Mapping[str, int]) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        return outputs[state["batch"]]
    return forward


@contextlib.contextmanager
def _patched(module: nn.Module, forward: Callable[..., Any]) -> Iterator[None]:
    module.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        del module.forward  # the class's forward again


@contextlib.contextmanager
def _keeping(layer: nn.Module, kept: list[Any]) -> Iterator[None]:
    handle = layer.register_forward_hook(lambda module, args, out: kept.append(out))
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _hooked(module: nn.Module, record: Callable[[nn.Module, tuple[Any, ...]], None]) -> Iterator[None]:
    handle = module.register_forward_pre_hook(lambda m, args: record(m, args))
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _loaded(model: nn.Module, read: Source, device: torch.device, modules: Sequence[nn.Module], *,
            recurse: bool = True) -> Iterator[None]:
    """`modules`' meta tensors (with their submodules' unless not `recurse`) filled from the checkpoint
    on `device` (buffers it lacks, such as a rotary table, computed by the model's own
    ``_init_weights``), put back on the meta device afterwards."""
    names = {id(m): n for n, m in model.named_modules()}
    saved: list[tuple[nn.Module, str, Tensor, bool]] = []
    try:
        for module in modules:
            for owner in module.modules() if recurse else [module]:
                prefix = names[id(owner)]
                full = {leaf: f"{prefix}.{leaf}" if prefix else leaf for leaf in [*owner._parameters, *owner._buffers]}
                computed = [leaf for leaf, b in owner._buffers.items()
                            if b is not None and b.is_meta and read.key(full[leaf]) is None]
                for leaf in computed:
                    meta = owner._buffers[leaf]
                    assert meta is not None
                    saved.append((owner, leaf, meta, False))
                    owner._buffers[leaf] = torch.empty_like(meta, device=device)
                if computed:
                    _compute(model, owner, [full[leaf] for leaf in computed])
                tables: tuple[tuple[dict[str, Any], bool], ...] = ((owner._parameters, True), (owner._buffers, False))
                for table, is_param in tables:
                    for leaf, t in list(table.items()):
                        if t is None or not t.is_meta:
                            continue
                        value = read(full[leaf]).to(device)
                        saved.append((owner, leaf, t, is_param))
                        table[leaf] = nn.Parameter(value, requires_grad=False) if is_param else value
        yield
    finally:
        for owner, leaf, t, is_param in reversed(saved):
            back: dict[str, Any] = owner._parameters if is_param else owner._buffers
            back[leaf] = t


def _compute(model: nn.Module, owner: nn.Module, names: list[str]) -> None:
    """Buffers the checkpoint does not hold, computed as transformers does when it loads a model."""
    init = getattr(model, "_init_weights", None)
    # it initialises the module's parameters too: keep those already real (an embedding's rows)
    real = {k: p.detach().clone() for k, p in owner._parameters.items() if p is not None and not p.is_meta}
    try:
        if not callable(init):
            raise TypeError("the model has no _init_weights")
        with torch.no_grad():
            init(owner)
            for k, value in real.items():
                param = owner._parameters[k]
                assert param is not None
                param.copy_(value)
    except Exception as exc:  # noqa: BLE001 - whatever fails, the buffers cannot be computed: say which
        raise UnsupportedModelError(
            f"out-of-core calibration: {', '.join(names)} not in the checkpoint, and {type(model).__name__}'s "
            f"_init_weights could not compute them ({type(exc).__name__}: {exc})") from None
