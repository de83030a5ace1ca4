"""Compatibility module: the channel analysis moved to :mod:`fprune.analysis`.

Everything importable from here before still is (the analysis values, :func:`analyze`,
:func:`describe`), so code written against ``fprune.groups`` keeps working.

Example:
    >>> from fprune.groups import analyze
    >>> from fprune import analysis
    >>> analyze is analysis.analyze
    True
"""

from __future__ import annotations

from fprune.analysis import analyze, describe
from fprune.analysis.values import (
    DEFAULT_OPTIONS,
    Analysis,
    AttnOut,
    Block,
    BlockKind,
    ChannelGroup,
    ChannelSize,
    Edit,
    Layout,
    LSTMOut,
    Options,
    Role,
    Seg,
    ShapeOf,
    Unbound,
    Value,
)
from fprune.frontends.fx_symbolic import INDEX as _INDEX

__all__ = [
    "Edit",
    "Seg",
    "Layout",
    "LSTMOut",
    "AttnOut",
    "Role",
    "Block",
    "ChannelGroup",
    "Options",
    "Analysis",
    "analyze",
    "describe",
]

_ = (DEFAULT_OPTIONS, BlockKind, ChannelSize, ShapeOf, Unbound, Value, _INDEX)  # re-exported names
