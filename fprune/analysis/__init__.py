"""The channel analysis, as one import: what it finds, and the aten ops the export front-end reads.

``fprune.groups`` holds the analysis itself (one pass over a torch.fx graph, a rule per module,
function or method); :mod:`fprune.frontends` brings a model, a GraphModule or an ExportedProgram
to that graph.  :data:`SUPPORTED_OPS` lists the aten ops of an ExportedProgram the analysis reads
(any other op keeps the channels it reads whole, with a warning naming it).

Example:
    >>> from fprune.analysis import SUPPORTED_OPS
    >>> "aten.linear.default" in SUPPORTED_OPS and "aten.scaled_dot_product_attention.default" in SUPPORTED_OPS
    True
"""

from __future__ import annotations

from fprune.frontends.aten_export import ATEN_OPS, PARAMETER_OPS, READ_AS_RESHAPE
from fprune.groups import Analysis, Block, ChannelGroup, Options, analyze, describe

__all__ = ["Analysis", "Block", "ChannelGroup", "Options", "analyze", "describe", "SUPPORTED_OPS"]

#: Names of the aten ops of an ExportedProgram the analysis reads, sorted.
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(
    {str(op) for op in (*ATEN_OPS, *PARAMETER_OPS, *READ_AS_RESHAPE)}
    | {"aten.select.int", "aten.slice.Tensor", "aten.t.default", "getitem"}
))
