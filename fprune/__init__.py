"""fprune: functional, exact structured pruning for PyTorch.

Scores, masks and rewrites are pure functions that compose with toolz::

    >>> import torch
    >>> from torch import nn
    >>> from toolz import pipe
    >>> from fprune import score_l1, topk_mask, apply_patterns
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> pruned = pipe(net, score_l1, topk_mask(0.5), apply_patterns)
    >>> pruned.get_submodule("0").out_features, net[0].out_features
    (8, 16)
"""

from fprune import errors, groups  # groups: the analysis's former home, still importable as fprune.groups
from fprune.frontends import export
from fprune.analysis import ChannelGroup, Options, analyze
from fprune.calibrate import score_activation, score_flap, score_wanda
from fprune.masks import global_topk_mask, threshold_mask, topk_mask
from fprune.plan import Plan, Scored, load_plan, score_model, score_with
from fprune.rewrite import apply_patterns
from fprune.reconstruct import reconstruct
from fprune.scores import (
    score_bn_scale,
    score_fpgm,
    score_l1,
    score_l2,
    score_lstm,
    score_random,
    score_taylor,
    score_tensor,
)
from fprune.select import ignore
from fprune.summary import Summary, summary
from fprune.trace import trace
from fprune.types import Mask, MaskFn, Scorer, Scores

__all__ = [
    "errors",
    "score_l1",
    "score_l2",
    "score_fpgm",
    "score_taylor",
    "score_bn_scale",
    "score_random",
    "score_lstm",
    "score_tensor",
    "score_activation",
    "score_wanda",
    "score_flap",
    "score_model",
    "score_with",
    "ignore",
    "topk_mask",
    "threshold_mask",
    "global_topk_mask",
    "apply_patterns",
    "reconstruct",
    "load_plan",
    "Plan",
    "Scored",
    "Scorer",
    "MaskFn",
    "Scores",
    "Mask",
    "Options",
    "ChannelGroup",
    "analyze",
    "trace",
    "export",
    "summary",
    "Summary",
]

__version__ = "0.1.0"
