"""Prune a checkpoint larger than memory: the graph on the meta device, the tensors one at a time.

:func:`prune_checkpoint` never holds the model: it builds the class on the meta device from the
folder's config and traces it there (shapes only), then reads each tensor from its shard when it
is needed, once to score it (a producer's weight) and once to write its kept slices, and writes
every output tensor once, at its place in an output shard whose header is computed beforehand.
The arithmetic is the in-memory rewrite's own (:func:`fprune.analysis.resolve.module_tensors`,
:func:`fprune.plan.score_analysis`), so the result equals ``fprune.hf.apply`` on the loaded model,
bit for bit.  OUT is written to a temporary folder beside it and renamed at the end.

Scorers are those that read weights (``l1``, ``l2``; ``random`` reads nothing); calibration-aware
ones need the model run, layer by layer, which is not streamed yet.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

from fprune.analysis import Analysis, analyze
from fprune.analysis.resolve import applied_masks, module_tensors, plain_slices
from fprune.errors import CheckpointError, FpruneWarning, InvalidArgumentError
from fprune.hf._extra import require
from fprune.hf.checkpoint import INDEX, Checkpoint, read_checkpoint
from fprune.hf.folder import SCORERS, FolderReport, _Bar, _version, _width, check_apart, staged
from fprune.hf.storage import tied_names
from fprune.plan import Scored, score_analysis
from fprune.slicing import slice_tensor
from fprune.tensorfile import CODES, DTYPES, TensorEntry, layout, memory_of, read_rows, read_tensor

__all__ = ["prune_checkpoint"]

CALIBRATED = ("activation", "wanda", "flap")  # scorers that run the model over calibration batches
_BLOCK = 1 << 26  # a tensor over this many bytes is sliced and written a block of rows of this size at a time

def prune_checkpoint(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    heads: float = 0.0,
    kv_heads: float = 0.0,
    mlp: float = 0.0,
    hidden: float = 0.0,
    scorer: str = "l1",
    seed: int = 0,
    max_shard_size: int = 1 << 30,
    overwrite: bool = False,
    progress: bool = False,
    calibration: str | os.PathLike[str] | Sequence[Mapping[str, Tensor]] | None = None,
    calibration_batch: int = 8,
    device: str = "cpu",
) -> FolderReport:
    """Streams the model in folder `source` through ``fprune.hf.widths`` into folder `out`.

    With a calibration scorer (``"activation"``, ``"wanda"``, ``"flap"``) the model runs over the
    `calibration` batches one decoder layer at a time (:func:`fprune.hf.layered.layer_stats`),
    on `device`, holding one layer's weights; its scores are :func:`fprune.score_wanda`'s (and kin)
    for the same batches, up to float rounding between eager and exported kernels.

    Args:
        source: a folder of ``save_pretrained`` (config.json, safetensors shards).
        out: the folder to create (replaced only with `overwrite`, once fully written).
        heads, kv_heads, mlp, hidden: fractions to remove, as in :func:`fprune.hf.widths`.
        scorer: ``"l1"``, ``"l2"`` or ``"random"`` (with `seed`), or a calibration scorer:
            ``"activation"``, ``"wanda"``, ``"flap"`` (with `calibration`).
        calibration: a safetensors file of ``input_ids`` [rows, seq] (see
            :func:`fprune.hf.layered.read_calibration`), cut in batches of `calibration_batch` rows,
            or the batches themselves (dicts of ``input_ids`` and optionally ``attention_mask``).
        device: where the layers run for calibration (``"cpu"``, ``"cuda"``).
        max_shard_size: bytes per output shard (a tensor larger than it gets a shard of its own).
        overwrite: replace `out` if it exists (only after the new model is fully written).
        progress: show a progress bar over the steps on stderr.

    Raises:
        CheckpointError: a missing, truncated or inconsistent shard, or an unknown architecture.
        InvalidArgumentError, UnsupportedModelError: as :func:`fprune.hf.folder.prune_folder`.
    """
    from fprune import hf
    from fprune.hf.config import config_accepts, edit_config, kept_widths

    start = time.perf_counter()
    require()
    if scorer not in SCORERS and scorer not in CALIBRATED:
        raise InvalidArgumentError(f"prune_checkpoint expects scorer in {sorted([*SCORERS, *CALIBRATED])}, "
                                   f"got {scorer!r}")
    if (scorer in CALIBRATED) != (calibration is not None):
        raise InvalidArgumentError(
            f"prune_checkpoint: scorer {scorer!r} " + ("needs calibration batches (calibration=FILE)" if scorer in CALIBRATED
                                                       else "reads weights only; calibration batches go with a "
                                                       f"calibration scorer ({', '.join(CALIBRATED)})"))
    if isinstance(max_shard_size, bool) or not isinstance(max_shard_size, int) or max_shard_size < 1:
        raise InvalidArgumentError(f"prune_checkpoint expects a positive int max_shard_size, got {max_shard_size!r}")
    stage = hf.widths(heads=heads, kv_heads=kv_heads, mlp=mlp, hidden=hidden)
    src, dst = Path(source), Path(out)
    if dst.exists() and not overwrite:
        raise InvalidArgumentError(f"{dst} already exists; choose another OUT, or pass --overwrite to replace it")
    check_apart(src, dst)
    bar = _Bar(progress, "fprune hf prune (streamed)", ("check", "meta model", "trace", "score", "mask", "write"))
    bar.step("check")
    ckpt = read_checkpoint(src)
    hf.family(SimpleNamespace(model_type=ckpt.config.get("model_type")))
    bar.step("meta model")
    model = _meta_model(src, ckpt)
    fam = hf.family(model)
    reader = _Reader(ckpt, model)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FpruneWarning)
            bar.step("trace")
            program = hf.trace(model)
            analysis = analyze(program)
            lazy = _Modules(analysis, reader)
            bar.step("score")
            if scorer in CALIBRATED:
                scored = _calibrated(scorer, analysis, model, reader, lazy, calibration, calibration_batch, device)
            else:
                scored = score_analysis(SCORERS[scorer](seed), analysis, modules=lazy)
            bar.step("mask")
            plan = stage(scored)
        notes = tuple(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, FpruneWarning)))
        kept, _ = kept_widths(plan, fam, model.config)
        if not config_accepts(model.config, fam, kept):  # pragma: no cover - widths() rounds to valid counts
            raise InvalidArgumentError(f"the widths {kept} make a config that transformers refuses")
        config = copy.deepcopy(model.config)
        edit_config(config, fam, model.config, kept)
        masks = {analysis.by_producer[k]: m.detach().cpu() for k, m in plan.masks.items() if not bool(m.all())}
        masks = applied_masks(analysis, masks, plan.options)
        shapes = _shapes(ckpt, plan.params(), reader)
    except BaseException:
        reader.close()
        bar.close()
        raise
    fields = [f for f in (fam.hidden, fam.heads, fam.kv_heads, fam.mlp) if f and hasattr(model.config, f)]
    before = {f: _width(model.config, f) for f in fields}
    after = {f: _width(config, f) for f in fields}
    calibrated = {"calibration": str(calibration) if isinstance(calibration, (str, os.PathLike)) else "batches",
                  "calibration_batch": calibration_batch, "device": device} if scorer in CALIBRATED else {}
    record = {"fprune": _version(), "source": str(src), "widths": stage.__dict__, "scorer": scorer, "streamed": True,
              **({"seed": seed} if scorer == "random" else {}), **calibrated, "before": before, "after": after,
              "notes": list(notes)}
    try:
        bar.step("write")
        with staged(ckpt, dst, overwrite, record) as tmp:
            tmp.mkdir()
            config.save_pretrained(tmp)  # type: ignore[union-attr, operator]
            if (src / "generation_config.json").exists():
                shutil.copy2(src / "generation_config.json", tmp / "generation_config.json")
            _write_shards(tmp, shapes, analysis, masks, lazy, reader, max_shard_size)
        bar.done()
    finally:
        reader.close()
        bar.close()
    params_before = sum(math.prod(e.shape) for e in ckpt.tensors.values())
    params_after = sum(math.prod(s) for s, _ in shapes.values())
    return FolderReport(source=src, out=dst, widths_before=MappingProxyType(before),
                        widths_after=MappingProxyType(after), layers=int(getattr(config, "num_hidden_layers", 0) or 0),
                        params_before=params_before, params_after=params_after, bytes_before=ckpt.nbytes,
                        bytes_after=read_checkpoint(dst).nbytes, seconds=time.perf_counter() - start, notes=notes)


# --------------------------------------------------------------------------------------


def _calibrated(scorer: str, analysis: Analysis, model: nn.Module, reader: _Reader, lazy: _Modules,
                calibration: str | os.PathLike[str] | Sequence[Mapping[str, Tensor]] | None, batch: int,
                device: str) -> Scored:
    """A calibration scorer's scores, its statistics gathered a layer at a time from the checkpoint."""
    from fprune import score_activation, score_flap, score_wanda
    from fprune.hf.layered import layer_stats, read_calibration

    assert calibration is not None
    batches: list[Mapping[str, Tensor]] = list(
        read_calibration(calibration, batch, int(getattr(model.config, "vocab_size", 0) or 0))
        if isinstance(calibration, (str, os.PathLike)) else calibration)
    rule = {"activation": score_activation, "wanda": score_wanda, "flap": score_flap}[scorer](batches)
    return rule.score_recorded(
        analysis, lambda consumers: layer_stats(model, reader, batches, consumers, device=device, where=repr(rule)),
        weights=lazy)


def _meta_model(src: Path, ckpt: Checkpoint) -> nn.Module:
    import transformers

    cls = ckpt.model_class()
    config = transformers.AutoConfig.from_pretrained(src)
    with torch.device("meta"):
        model = cls(config)
    return model.eval()  # type: ignore[no-any-return]


class _Reader:
    """Reads one tensor at a time from the shards; a tied tensor by whichever of its names was saved."""

    def __init__(self, ckpt: Checkpoint, model: nn.Module) -> None:
        self.ckpt = ckpt
        self.files: dict[str, BinaryIO] = {}
        self.alias: dict[str, str] = {}
        for group in tied_names(model):
            saved = next((n for n in group if n in ckpt.tensors), None)
            for n in group:
                if saved is not None:
                    self.alias[n] = saved

    def key(self, name: str) -> str | None:
        """The checkpoint's name for tensor `name` (itself, or the saved name of a tied tensor)."""
        return name if name in self.ckpt.tensors else self.alias.get(name)

    def __call__(self, name: str) -> Tensor:
        entry = self.entry(name)
        return read_tensor(self._file(entry), entry)

    def entry(self, name: str) -> TensorEntry:
        """Where tensor `name` (or the saved tensor it is tied to) lies in the shards."""
        key = self.key(name)
        if key is None:
            raise CheckpointError(f"{self.ckpt.root} has no tensor {name!r}, which the model built from its config "
                                  "needs: the shards and the config come from different models")
        return self.ckpt.tensors[key]

    def rows(self, name: str, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` of tensor `name`, read alone."""
        entry = self.entry(name)
        return read_rows(self._file(entry), entry, start, stop)

    def _file(self, entry: TensorEntry) -> BinaryIO:
        if entry.file not in self.files:  # plain reads of the tensor's bytes: no memory map holds the shard
            self.close()
            self.files[entry.file] = (self.ckpt.root / entry.file).open("rb")
        return self.files[entry.file]

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


class _Modules(Mapping[str, nn.Module]):
    """The analysed graph's modules, each with its real tensors read from the checkpoint on access."""

    def __init__(self, analysis: Analysis, reader: _Reader) -> None:
        self.analysis, self.reader = analysis, reader
        self.names = [n for n, _ in analysis.graph.named_modules()]

    def __getitem__(self, name: str) -> nn.Module:
        shell = self.analysis.graph.get_submodule(name)
        real = copy.deepcopy(shell)  # on the meta device: no data
        for tname, t in list(shell.named_parameters(recurse=False)) + list(shell.named_buffers(recurse=False)):
            if t is None or not t.is_meta:
                continue
            value = self.reader(self.analysis.public_name(f"{name}.{tname}" if name else tname))
            if isinstance(t, nn.Parameter):
                setattr(real, tname, nn.Parameter(value, t.requires_grad))
            else:
                setattr(real, tname, value)
        return real

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _shapes(ckpt: Checkpoint, params: Mapping[str, list[dict[str, Any]]],
            reader: _Reader) -> dict[str, tuple[tuple[int, ...], str]]:
    """Checkpoint key -> (shape after pruning, dtype code), in the checkpoint's order."""
    changed: dict[str, list[dict[str, Any]]] = {}
    for name, entries in params.items():
        key = reader.key(name)
        if key is not None:
            changed[key] = entries
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for key, entry in ckpt.tensors.items():
        shape = list(entry.shape)
        for e in changed.get(key, []):
            shape[e["dim"]] = len(e["keep"])
        out[key] = (tuple(shape), entry.dtype)
    return out


def _write_shards(root: Path, shapes: Mapping[str, tuple[tuple[int, ...], str]], analysis: Analysis,
                  masks: Mapping[int, Tensor], lazy: _Modules, reader: _Reader, max_shard_size: int) -> None:
    """Lays the output tensors out in shards, writes the headers, then each tensor once at its offset."""
    nbytes = {key: math.prod(shape) * torch.empty(0, dtype=DTYPES[code]).element_size()
              for key, (shape, code) in shapes.items()}
    shards: list[list[str]] = [[]]
    size = 0
    for key in shapes:
        if shards[-1] and size + nbytes[key] > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes[key]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))] \
        if len(shards) > 1 else ["model.safetensors"]
    where: dict[str, tuple[BinaryIO, int]] = {}  # key -> (its shard, absolute offset)
    files: list[BinaryIO] = []
    try:
        for fname, keys in zip(names, shards):
            head, starts = layout({key: (shapes[key][1], shapes[key][0]) for key in keys}, {"format": "pt"})
            shard: BinaryIO = (root / fname).open("wb")
            files.append(shard)
            shard.write(head)
            shard.truncate(len(head) + sum(nbytes[key] for key in keys))
            where |= {key: (shard, starts[key]) for key in keys}
        written: set[str] = set()
        blocked = _by_blocks(analysis, masks, reader)
        for module, tensors in module_tensors(analysis, masks, lazy, skip=blocked):
            for tname, value in tensors.items():
                found = reader.key(analysis.public_name(f"{module}.{tname}" if module else tname))
                if found is not None and found not in written:
                    _put(where[found], found, value, shapes[found])
                    written.add(found)
        for name, dims in ((n, d) for index in blocked.values() for n, d in index.items()):
            found = reader.key(name)
            if found is not None and found not in written:
                _put_rows(where[found], found, reader, dims, shapes[found])
                written.add(found)
        for key in shapes:
            if key not in written:
                if reader.entry(key).nbytes > _BLOCK and len(shapes[key][0]) > 1:
                    _put_rows(where[key], key, reader, {}, shapes[key])
                else:
                    _put(where[key], key, reader(key), shapes[key])
    finally:
        for shard in files:
            shard.close()
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(nbytes.values())},
                 "weight_map": {key: fname for fname, keys in zip(names, shards) for key in keys}}
        (root / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _by_blocks(analysis: Analysis, masks: Mapping[int, Tensor], reader: _Reader) -> dict[str, dict[str, dict[int, Tensor]]]:
    """Module -> {checkpoint name of a tensor: its keep-masks per dim} for the modules whose every changed
    tensor is a plain slice of a tensor over _BLOCK bytes with at least two dims (an embedding, an lm_head):
    those are sliced and written a block of rows at a time, never held whole."""
    out: dict[str, dict[str, dict[int, Tensor]]] = {}
    for module, index in plain_slices(analysis, masks).items():
        names = {analysis.public_name(f"{module}.{t}" if module else t): dims for t, dims in index.items()}
        big = [reader.key(n) is not None and reader.entry(n).nbytes > _BLOCK and len(reader.entry(n).shape) > 1
               for n in names]
        if names and all(big):
            out[module] = names
    return out


def _put_rows(place: tuple[BinaryIO, int], key: str, reader: _Reader, dims: Mapping[int, Tensor],
              expected: tuple[tuple[int, ...], str]) -> None:
    """Writes tensor `key` sliced by `dims` (keep-masks per dim) a block of input rows at a time."""
    f, offset = place
    entry = reader.entry(key)
    rows = entry.shape[0]
    step = max(1, _BLOCK // max(1, entry.nbytes // rows))
    keep_rows = dims.get(0)
    others = {d: k for d, k in dims.items() if d != 0}
    out_shape, _ = expected
    row_bytes = math.prod(out_shape[1:]) * DTYPES[expected[1]].itemsize
    done = 0
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        block = reader.rows(key, start, stop)
        if keep_rows is not None:
            block = block[keep_rows[start:stop].to(block.device)]
        part = slice_tensor(block, others) if others else block
        if tuple(part.shape[1:]) != tuple(out_shape[1:]) or CODES.get(part.dtype) != expected[1]:
            raise CheckpointError(f"internal: rows of {key!r} came out {tuple(part.shape)} {part.dtype}, "
                                  f"expected {expected}")
        f.seek(offset + done * row_bytes)
        f.write(memory_of(part.contiguous()))
        done += part.shape[0]
    if done != out_shape[0]:
        raise CheckpointError(f"internal: {key!r} came out with {done} rows, expected {out_shape[0]}")


def _put(place: tuple[BinaryIO, int], key: str, value: Tensor, expected: tuple[tuple[int, ...], str]) -> None:
    f, offset = place
    if (tuple(value.shape), CODES.get(value.dtype)) != expected:
        raise CheckpointError(f"internal: {key!r} came out {tuple(value.shape)} {value.dtype}, expected {expected}")
    f.seek(offset)
    f.write(memory_of(value.detach().to("cpu").contiguous()))
