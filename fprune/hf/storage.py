"""Saving and loading pruned models whose layers have different widths (``uniform=False``).

A standard transformers class builds every layer from one config value per width, so a model
whose layers differ cannot be read by plain ``from_pretrained``: it refuses the mismatched
shapes (and with ``ignore_mismatched_sizes=True`` would silently re-initialise them).
:func:`save` writes the usual folder (``config.json`` and safetensors); the config carries
``fprune_layer_widths``, one dict of config fields per layer, and the tensors carry their own
shapes.  :func:`load` builds the class from that config and gives each layer the tensors, and so
the shapes, that were saved; a folder of a uniform model loads as ``from_pretrained`` would.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from torch import nn

from fprune.errors import CheckpointError
from fprune.hf._extra import check_model, require
from fprune.hf.checkpoint import Checkpoint, read_checkpoint

__all__ = ["save", "load", "set_parameter", "tied_names", "LAYERS_FIELD"]

LAYERS_FIELD = "fprune_layer_widths"


def save(model: nn.Module, directory: str | os.PathLike[str], **kwargs: Any) -> None:
    """``model.save_pretrained(directory, **kwargs)``, then checks the folder reads back whole.

    For a model of ``fprune.hf.apply(plan, uniform=False)`` the folder holds each layer's shapes
    (in its tensors) and widths (``config.fprune_layer_widths``); :func:`load` rebuilds it.

    Raises:
        InvalidTypeError: `model` is not a transformers ``PreTrainedModel``.
        CheckpointError: the written folder does not read back (a full disk, for one).
    """
    check_model(model)
    model.save_pretrained(directory, **kwargs)  # type: ignore[operator]
    read_checkpoint(directory)


def load(directory: str | os.PathLike[str], *, dtype: Any = "auto", **kwargs: Any) -> nn.Module:
    """Loads a folder of :func:`save` (or ``save_pretrained``) in the class its config names.

    Per-layer widths are rebuilt: the class is loaded from the config, and every tensor whose
    saved shape differs from the config's (a layer narrower than the widest) is replaced by the
    saved one.  Memory: those tensors are first made at the config's width, then replaced.

    Args:
        directory: the model folder.
        dtype: passed to ``from_pretrained`` (default ``"auto"``: the saved dtype).
        kwargs: other ``from_pretrained`` arguments (``ignore_mismatched_sizes`` is set here).

    Raises:
        CheckpointError: a missing or corrupt file, or a tensor the rebuilt class has no place for.

    Example:
        >>> load("/nonexistent")
        Traceback (most recent call last):
        ...
        fprune.errors.CheckpointError: expected a model folder (config.json and *.safetensors, ...
    """
    ckpt = read_checkpoint(directory)
    require()
    import transformers

    cls = ckpt.model_class()
    if not ckpt.config.get(LAYERS_FIELD):
        return cls.from_pretrained(directory, dtype=dtype, **kwargs)  # type: ignore[no-any-return]
    kwargs = {**kwargs, "ignore_mismatched_sizes": True, "output_loading_info": True}
    with _quiet(transformers):
        model, info = cls.from_pretrained(directory, dtype=dtype, **kwargs)
    _fill_mismatched(model, ckpt, {key for key, *_ in info["mismatched_keys"]})
    return model  # type: ignore[no-any-return]


def _fill_mismatched(model: nn.Module, ckpt: Checkpoint, names: set[str]) -> None:
    from safetensors import safe_open

    params = dict(model.named_parameters(remove_duplicate=False))
    for name in sorted(names):
        entry, param = ckpt.tensors.get(name), params.get(name)
        if entry is None or param is None:
            raise CheckpointError(f"{ckpt.root}: {name!r} does not fit the class the config builds")
        with safe_open(str(ckpt.root / entry.file), framework="pt", device=str(param.device)) as f:
            value = f.get_tensor(name).to(param.dtype)
        set_parameter(model, name, nn.Parameter(value, param.requires_grad))
    wrong = [n for n, p in model.named_parameters() if n in ckpt.tensors and tuple(p.shape) != ckpt.tensors[n].shape]
    if wrong:
        raise CheckpointError(f"{ckpt.root}: after loading, {wrong[:3]} still differ from the saved shapes")


def tied_names(model: nn.Module) -> list[list[str]]:
    """The names of each tensor of `model`'s state, several for a tied one (``lm_head`` and the embedding)."""
    names: dict[int, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        names.setdefault(id(t), []).append(name)
    return list(names.values())


def set_parameter(model: nn.Module, name: str, value: nn.Parameter) -> None:
    """Puts `value` at `name`, and updates the sizes a Linear or Embedding keeps beside its weight."""
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner)
    setattr(module, leaf, value)
    if leaf == "weight" and isinstance(module, nn.Linear):
        module.out_features, module.in_features = value.shape
    elif leaf == "weight" and isinstance(module, nn.Embedding):
        module.num_embeddings, module.embedding_dim = value.shape


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """The mismatch report from_pretrained logs is expected here: silence it while loading."""
    logging = transformers.utils.logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
