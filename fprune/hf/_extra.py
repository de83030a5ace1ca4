"""The hf extra's presence, and the check that a model is a transformers one (no transformers import at load)."""

from __future__ import annotations

import importlib.util

from fprune.errors import InvalidTypeError, MissingDependencyError

__all__ = ["require", "check_model"]


def require() -> None:
    """Raises MissingDependencyError, saying how to install it, when the hf extra is missing."""
    missing = [m for m in ("transformers", "safetensors") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"fprune.hf needs the hf extra ({', '.join(missing)} missing): pip install 'fprune[hf]', with torch "
            "pinned so that pip keeps the installed one: pip install -c constraints.txt 'fprune[hf]' where "
            "constraints.txt says torch==<your version>")


def check_model(model: object) -> None:
    """Raises InvalidTypeError unless `model` is a transformers PreTrainedModel (and the extra is there)."""
    require()
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise InvalidTypeError(f"fprune.hf expects a transformers PreTrainedModel, got {type(model).__name__}; "
                               "for other models use fprune.export and apply_patterns")
