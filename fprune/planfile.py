"""Reading a plan's saved forms: the ``fprune.plan/1`` JSON text and the directory of Plan.save.

:func:`fprune.load_plan` checks the text here, then matches it against a model's channel groups.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from fprune.errors import PlanFormatError

__all__ = ["FORMAT", "VALUES", "describe_dims", "named_values", "parse_plan", "read_saved", "reconstruction_of"]

FORMAT = "fprune.plan/1"
VALUES = "values.safetensors"  # the file of a saved plan's reconstructed tensors (Plan.save)


def reconstruction_of(text: str) -> dict[str, tuple[float, float]]:
    """The per-layer errors a saved plan records (informative: malformed entries are dropped)."""
    found = json.loads(text).get("reconstruction")
    if not isinstance(found, dict):
        return {}
    return {str(k): (float(v[0]), float(v[1])) for k, v in found.items()
            if isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)}


def read_saved(root: Path) -> tuple[str, dict[str, Tensor]]:
    """The JSON text and the values of a directory written by Plan.save."""
    from fprune.errors import CheckpointError
    from fprune.tensorfile import load_tensors

    try:
        text = (root / "plan.json").read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanFormatError(f"{root} has no readable plan.json ({exc}); Plan.save(directory) writes one") from None
    names_values = named_values(text)
    if names_values is None:
        return text, {}
    try:
        return text, load_tensors(root / str(names_values))
    except (OSError, CheckpointError) as exc:
        raise PlanFormatError(f"{root}/plan.json names values in {names_values!r}, which cannot be read: {exc}") from None


def named_values(text: str) -> str | None:
    """The values file a plan's JSON names, if any (None for malformed text: parse_plan reports it)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    found = doc.get("values") if isinstance(doc, dict) else None
    return str(found) if found is not None else None


def describe_dims(entries: list[dict[str, Any]] | None) -> str:
    """A short description of one tensor's plan entries, for messages."""
    if not entries:
        return "no slicing"
    return ", ".join(f"dim {e['dim']} keeping {len(e['keep'])}" for e in entries)


def parse_plan(text: str) -> dict[str, list[dict[str, Any]]]:
    fix = f'expected {{"format": "{FORMAT}", "params": {{"<fqn>": [{{"dim": <int>, "keep": [<int>, ...]}}]}}}}'
    if not isinstance(text, str):
        raise PlanFormatError(f"load_plan expects the JSON text (str) of a plan, got {type(text).__name__}; {fix}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFormatError(f"not a plan: the text is not JSON ({exc}); {fix}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise PlanFormatError(f"not a plan: format is {found!r}; {fix}")
    params = doc.get("params")
    if not isinstance(params, dict):
        raise PlanFormatError(f"not a plan: 'params' is missing or not an object; {fix}")
    for fqn, entries in params.items():
        ok = isinstance(entries, list) and all(
            isinstance(e, dict) and set(e) == {"dim", "keep"} and type(e["dim"]) is int
            and isinstance(e["keep"], list) and all(type(i) is int and i >= 0 for i in e["keep"])
            and e["keep"] == sorted(set(e["keep"]))
            for e in entries
        )
        if not ok:
            raise PlanFormatError(
                f"not a plan: entry {fqn!r} must be a list of {{'dim': int, 'keep': sorted unique ints}}; {fix}"
            )
    return params
