"""Model folders on disk: the config, the safetensors shards, and where each tensor lies in them.

:func:`read_checkpoint` checks a folder before anything is loaded from it: ``config.json`` is
there and parses, every shard the index names exists, every shard's header is whole and covers
the file exactly, and every tensor the index places in a shard is in that shard's header.  A
failure is a :class:`~fprune.errors.CheckpointError` naming the file and what is wrong with it,
instead of an error deep inside a loader (or a model built with random weights in its place).

The headers are read by :mod:`fprune.tensorfile` (8 bytes of little-endian length, then JSON), not
through the safetensors package, so a check reads a few kilobytes per shard whatever the model's size.

Example:
    >>> import json, tempfile, torch
    >>> from pathlib import Path
    >>> from safetensors.torch import save_file
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    >>> save_file({"w": torch.zeros(2, 3)}, str(folder / "model.safetensors"))
    >>> ckpt = read_checkpoint(folder)
    >>> ckpt.tensors["w"].shape, ckpt.tensors["w"].dtype, ckpt.shards
    ((2, 3), 'F32', ('model.safetensors',))
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fprune.errors import CheckpointError
from fprune.tensorfile import TensorEntry, read_header as _read_header

__all__ = ["Checkpoint", "TensorEntry", "read_checkpoint", "INDEX", "SINGLE", "WEIGHT_SUFFIXES"]

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")

@dataclass(frozen=True)
class Checkpoint:
    """A checked model folder: its parsed config and every tensor of its shards."""

    root: Path
    config: Mapping[str, Any]
    tensors: Mapping[str, TensorEntry]
    shards: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of all the shards on disk."""
        return sum((self.root / s).stat().st_size for s in self.shards)

    def model_class(self, fallback: Any = None) -> Any:
        """The transformers class ``config.architectures`` names (`fallback` where it names none).

        Raises:
            CheckpointError: no class is named (or transformers has none of that name) and no fallback.
        """
        import transformers

        names = self.config.get("architectures") or []
        cls = getattr(transformers, names[0], None) if names and isinstance(names[0], str) else None
        if cls is None and fallback is None:
            raise CheckpointError(f"{self.root}/config.json names no transformers class in 'architectures' "
                                  f"({names!r}); load it with that class's from_pretrained")
        return cls if cls is not None else fallback

    def other_files(self) -> tuple[str, ...]:
        """The folder's files that are neither weights nor config (tokenizer, chat template, ...)."""
        skip = {"config.json", "generation_config.json", INDEX, *self.shards}
        return tuple(sorted(f.name for f in self.root.iterdir() if f.is_file() and f.name not in skip
                            and not f.name.endswith(WEIGHT_SUFFIXES) and not f.name.endswith(".index.json")))


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Checks a Hugging Face model folder and lists its tensors; reads only headers.

    Args:
        path: a folder with ``config.json`` and ``model.safetensors``, or the shards named by
            ``model.safetensors.index.json``.

    Raises:
        CheckpointError: the folder, its config, a shard or the index is missing, unreadable,
            truncated or inconsistent; the message names the file.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"expected a model folder (config.json and *.safetensors, as save_pretrained writes), "
                              f"got {str(root)!r}, which {'is a file' if root.exists() else 'does not exist'}")
    config = _read_json(root / "config.json", "the model's config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{root / 'config.json'} holds {type(config).__name__}, not a JSON object of config fields")
    index_path = root / INDEX
    if index_path.exists():
        index = _read_json(index_path, "the shard index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index_path} has no 'weight_map' object of tensor name -> shard file")
        shards = tuple(dict.fromkeys(weight_map.values()))
    elif (root / SINGLE).exists():
        weight_map, shards = None, (SINGLE,)
    else:
        others = sorted(f.name for f in root.iterdir() if f.name.endswith(WEIGHT_SUFFIXES))
        found = f"; it has {', '.join(others)} (re-save with save_pretrained, which writes safetensors)" if others else ""
        raise CheckpointError(f"{root} has neither {SINGLE} nor {INDEX}{found}")
    missing = [s for s in shards if not (root / s).is_file()]
    if missing:
        raise CheckpointError(f"{root} lacks {len(missing)} of the {len(shards)} shards its index names: "
                              f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Copy the folder again")
    tensors: dict[str, TensorEntry] = {}
    for shard in shards:
        for name, entry in _read_header(root / shard).items():
            tensors.setdefault(name, entry)
    if weight_map is not None:
        for name, shard in weight_map.items():
            listed = tensors.get(name)
            if listed is None or listed.file != shard:
                raise CheckpointError(f"{index_path} places {name!r} in {shard}, whose header has no such tensor: "
                                      "the index and the shards come from different saves")
    return Checkpoint(root, MappingProxyType(config), MappingProxyType(tensors), shards)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent} has no {path.name} ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} ({what}) is not readable JSON: {exc}") from None
