"""Prune a model folder into another: what ``fprune hf prune SRC OUT`` runs.

:func:`prune_folder` checks SRC (:func:`~fprune.hf.checkpoint.read_checkpoint`) before loading
it, prunes with :func:`fprune.hf.widths` and :func:`fprune.hf.apply`, and writes OUT with
``save_pretrained`` into a temporary folder beside it that is renamed only once everything is
written: a failure (or Ctrl-C) leaves no half-written model.  Files that are neither weights nor
config (tokenizer, chat template, ...) are copied over, and ``fprune.json`` records the widths
asked for, the scorer and the widths before and after.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

from torch import nn

from fprune.errors import CheckpointError, FpruneWarning, InvalidArgumentError
from fprune.hf._extra import require
from fprune.hf.checkpoint import Checkpoint, read_checkpoint
from fprune.types import Scorer

__all__ = ["FolderReport", "prune_folder", "check_apart", "staged", "SCORERS", "RECORD"]

RECORD = "fprune.json"

SCORERS: Mapping[str, Callable[[int], Scorer]] = MappingProxyType({
    "l1": lambda seed: _scores().score_l1,
    "l2": lambda seed: _scores().score_l2,
    "random": lambda seed: _scores().score_random(seed),
})

_STEPS = ("check", "load", "trace", "score", "mask", "apply", "save")


def _scores() -> Any:
    import fprune.scores

    return fprune.scores


@dataclass(frozen=True)
class FolderReport:
    """What :func:`prune_folder` did: the widths and sizes before and after, and the time taken."""

    source: Path
    out: Path
    widths_before: Mapping[str, int | None]  # config field -> value (None: unset, the class's default)
    widths_after: Mapping[str, int | None]
    layers: int
    params_before: int
    params_after: int
    bytes_before: int  # the weight files on disk
    bytes_after: int
    seconds: float
    layer_widths: tuple[Mapping[str, int], ...] = ()  # each layer's widths after, when they differ per layer
    notes: tuple[str, ...] = field(default=())  # the FpruneWarnings of the analysis, also in fprune.json

    def table(self) -> str:
        """The before/after summary the command line prints.

        Example:
            >>> r = FolderReport(Path("a"), Path("b"), {"intermediate_size": 64}, {"intermediate_size": 32},
            ...                  2, 1000, 600, 4000, 2400, 1.0)
            >>> print(r.table())
            width (each of 2 layers)    before     after
            intermediate_size               64        32
            parameters                   1,000       600  (60.0% kept)
            weights on disk             3.9 KiB   2.3 KiB
        """
        which = "widest" if self.layer_widths else "each"
        rows = [(f"width ({which} of {self.layers} layers)", "before", "after")]
        rows += [(k, _shown(v), _shown(self.widths_after[k])) for k, v in self.widths_before.items()
                 if v is not None or self.widths_after[k] is not None]
        kept = f"  ({100 * self.params_after / max(self.params_before, 1):.1f}% kept)"
        rows.append(("parameters", f"{self.params_before:,}", f"{self.params_after:,}" + kept))
        rows.append(("weights on disk", _size(self.bytes_before), _size(self.bytes_after)))
        first = max(len(r[0]) for r in rows)
        lines = [f"{a:<{first}}  {b:>8}  {c:>8}" for a, b, c in rows]
        lines += [f"layer {i}: " + ", ".join(f"{k} {v}" for k, v in w.items()) for i, w in enumerate(self.layer_widths)]
        return "\n".join(lines)


def prune_folder(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    heads: float = 0.0,
    kv_heads: float = 0.0,
    mlp: float = 0.0,
    hidden: float = 0.0,
    scorer: str = "l1",
    seed: int = 0,
    uniform: bool = True,
    approximate: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> FolderReport:
    """Prunes the model in folder `source` and saves it, in its own class, to folder `out`.

    Args:
        source: a folder written by ``save_pretrained`` (config.json and safetensors shards).
        out: the folder to create; an existing one is replaced only with `overwrite`.
        heads, kv_heads, mlp, hidden: fractions to remove, as in :func:`fprune.hf.widths`.
        scorer: ``"l1"``, ``"l2"`` or ``"random"`` (with `seed`).
        uniform: the same widths in every layer (False: per-layer widths, which plain
            ``from_pretrained`` refuses and :func:`fprune.hf.load` reads).
        approximate: on LayerNorm families, prune heads and hidden together, inexactly
            (``score_with(scorer, approximate=True)``).
        overwrite: replace `out` if it exists (only after the new model is fully written).
        progress: show a progress bar on stderr.

    Returns:
        A :class:`FolderReport`; ``report.table()`` is the before/after summary.

    Raises:
        CheckpointError: `source` is not a model folder, or a shard is missing or corrupt.
        InvalidArgumentError: a bad fraction or scorer, or `out` exists without `overwrite`.
        UnsupportedModelError: an unknown family, or a width this family cannot prune exactly.
    """
    from fprune import hf, score_with

    start = time.perf_counter()
    require()
    if scorer not in SCORERS:
        raise InvalidArgumentError(f"prune_folder expects scorer in {sorted(SCORERS)}, got {scorer!r}")
    stage = hf.widths(heads=heads, kv_heads=kv_heads, mlp=mlp, hidden=hidden, uniform=uniform)
    src, dst = Path(source), Path(out)
    if dst.exists() and not overwrite:
        raise InvalidArgumentError(f"{dst} already exists; choose another OUT, or pass --overwrite to replace it "
                                   "(it is replaced only once the pruned model is fully written)")
    check_apart(src, dst)
    bar = _Bar(progress)
    try:
        bar.step("check")
        ckpt = read_checkpoint(src)
        hf.family(SimpleNamespace(model_type=ckpt.config.get("model_type")))
        bar.step("load")
        model = _load(src, ckpt)
        fam = hf.family(model)
        fields = [f for f in (fam.hidden, fam.heads, fam.kv_heads, fam.mlp) if f and hasattr(model.config, f)]
        before = {f: _width(model.config, f) for f in fields}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FpruneWarning)
            bar.step("trace")
            program = hf.trace(model)
            bar.step("score")
            scored = score_with(SCORERS[scorer](seed), approximate=approximate)(program)
            bar.step("mask")
            plan = stage(scored)
            bar.step("apply")
            small = hf.apply(plan, uniform=uniform)
        notes = tuple(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, FpruneWarning)))
        params_before, layers = _params(model), int(getattr(model.config, "num_hidden_layers", 0) or 0)
        # The original is not needed any more: free it before saving, which copies the pruned
        # tensors once more (peak: the original plus the pruned model, not both plus a copy).
        del model, program, scored, plan
        gc.collect()
        bar.step("save")
        after = {f: _width(small.config, f) for f in fields}
        record = {"fprune": _version(), "source": str(src), "widths": stage.__dict__, "scorer": scorer,
                  "approximate": approximate, **({"seed": seed} if scorer == "random" else {}),
                  "before": before, "after": after, "notes": list(notes)}
        with staged(ckpt, dst, overwrite, record) as tmp:
            small.save_pretrained(tmp)  # type: ignore[operator]
        bar.done()
    finally:
        bar.close()
    return FolderReport(
        source=src, out=dst, widths_before=MappingProxyType(before), widths_after=MappingProxyType(after),
        layers=layers, params_before=params_before, params_after=_params(small), bytes_before=ckpt.nbytes,
        bytes_after=read_checkpoint(dst).nbytes, seconds=time.perf_counter() - start, notes=notes,
        layer_widths=tuple(MappingProxyType(dict(w)) for w in getattr(small.config, "fprune_layer_widths", None) or ()))


# --------------------------------------------------------------------------------------


class _Bar:
    """A progress bar over the steps of prune_folder (tqdm, which transformers requires)."""

    def __init__(self, enabled: bool, desc: str = "fprune hf prune", steps: tuple[str, ...] = _STEPS) -> None:
        self._bar: Any = None
        self._started = False
        if enabled:
            tqdm = importlib.import_module("tqdm.auto").tqdm  # a dependency of transformers
            self._bar = tqdm(total=len(steps), desc=desc, unit="step", leave=True)

    def step(self, name: str) -> None:
        """Marks the previous step done and shows `name` as the one running."""
        if self._bar is not None:
            if self._started:
                self._bar.update(1)
            self._started = True
            self._bar.set_postfix_str(name)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str("done")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def check_apart(src: Path, dst: Path) -> None:
    """Refuses an OUT that is SRC or lies inside it: SRC is never written to."""
    a, b = src.resolve(), dst.resolve()
    if b == a:
        raise InvalidArgumentError(f"OUT is SRC ({src}); write the pruned model to another folder")
    if a in b.parents:
        raise InvalidArgumentError(f"OUT ({dst}) lies inside SRC ({src}), which is never written to; choose a "
                                   "folder outside it")


def _load(src: Path, ckpt: Checkpoint) -> nn.Module:
    import transformers

    cls = ckpt.model_class(fallback=transformers.AutoModel)
    try:
        model = cls.from_pretrained(src, dtype="auto")
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"transformers could not load {src} as {getattr(cls, '__name__', cls)}: {exc}") from exc
    if not isinstance(model, nn.Module):  # pragma: no cover - from_pretrained returns a module
        raise CheckpointError(f"{src} did not load as an nn.Module")
    return model.eval()


@contextlib.contextmanager
def staged(ckpt: Checkpoint, dst: Path, overwrite: bool, record: Mapping[str, Any]) -> Iterator[Path]:
    """A temporary folder beside `dst` to write the model into; renamed onto `dst` once the block ends.

    After the block the source's other files and ``fprune.json`` (`record`) are added and the
    folder is read back; an existing `dst` is replaced only then.  On any failure the temporary
    folder is removed and `dst` is left as it was.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.fprune-{os.getpid()}"
    old = dst.parent / f".{dst.name}.fprune-old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp  # not created yet: the block's writer (save_pretrained) makes it
        for name in ckpt.other_files():
            shutil.copy2(ckpt.root / name, tmp / name)
        (tmp / RECORD).write_text(json.dumps(dict(record), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        read_checkpoint(tmp)  # what was written reads back
        if dst.exists() and overwrite:
            dst.rename(old)
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not dst.exists():
            old.rename(dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _width(config: Any, name: str) -> int | None:
    value = getattr(config, name, None)
    return None if value is None else int(value)


def _shown(value: int | None) -> str:
    return "default" if value is None else str(value)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError  # pragma: no cover


def _version() -> str:
    from fprune import __version__

    return __version__

