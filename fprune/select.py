"""Choosing what to prune: a stage between scoring and masking that leaves groups out.

``ignore(outputs=..., inputs=...)`` returns a frozen value mapping a
:class:`fprune.plan.Scored` to a new ``Scored`` without the channel groups the
named modules must not lose; the mask rule then never sees them, so they are
kept whole.  It composes like every stage::

    pipe(model, score_l1, ignore(outputs="fc"), topk_mask(0.5), apply_patterns)

Modules are selected by name, glob, type or predicate (see
:mod:`fprune._names`); a name or glob matching no module of the model raises
:class:`fprune.errors.InvalidArgumentError` with the closest names.

Example:
    >>> from torch import nn
    >>> from fprune import Options, score_model, score_l1
    >>> from fprune.select import ignore
    >>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    >>> scored = score_model(score_l1, net, Options(prune_outputs=True))
    >>> scored
    Scored(scorer=score_l1, groups=['0', '2', '4'])
    >>> ignore(inputs="2")(scored)  # "2" keeps its 6 inputs: group "0" stays whole
    Scored(scorer=score_l1, groups=['2', '4'])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType

from fprune._names import Selector, Selectors, as_selectors, check_patterns, selects, show_selectors
from fprune.errors import InvalidTypeError
from fprune.plan import Scored

__all__ = ["Ignore", "ignore"]


@dataclass(frozen=True, repr=False)
class Ignore:
    """The stage built by :func:`ignore`; build it with that factory."""

    outputs: tuple[Selector, ...] = ()  # modules whose output channels stay: the groups they produce are left out
    inputs: tuple[Selector, ...] = ()  # modules whose input width stays: the groups they read are left out

    def __post_init__(self) -> None:
        object.__setattr__(self, "outputs", as_selectors(self.outputs, "ignore(outputs=...)"))
        object.__setattr__(self, "inputs", as_selectors(self.inputs, "ignore(inputs=...)"))

    def __repr__(self) -> str:
        sides = (("outputs", self.outputs), ("inputs", self.inputs))
        parts = [f"{side}={show_selectors(value)}" for side, value in sides if value]
        return f"ignore({', '.join(parts)})"

    def __call__(self, scored: Scored) -> Scored:
        """A new ``Scored`` without the ignored groups; see :func:`ignore`.  Does not modify `scored`."""
        if not isinstance(scored, Scored):
            raise InvalidTypeError(
                f"{self!r} expects a Scored value (the result of a scorer on a model, e.g. score_l1(model)); "
                f"got {type(scored).__name__}. Fix: place it after the scorer: "
                f"pipe(model, score_l1, {self!r}, topk_mask(0.5))."
            )
        analysis = scored.analysis
        modules = dict(analysis.graph.named_modules())
        names = [name for name in modules if name]
        check_patterns(self.outputs, names, f"{self!r}, outputs", "module of the model")
        check_patterns(self.inputs, names, f"{self!r}, inputs", "module of the model")
        dropped: set[str] = set()
        if self.outputs:
            dropped.update(
                group.name for group in analysis.groups
                if any(selects(self.outputs, p, modules[p]) for p in group.producers)
            )
        if self.inputs:
            for name, role in analysis.roles.items():
                if role.in_layout is not None and selects(self.inputs, name, modules[name]):
                    dropped.update(analysis.group_of(seg).name for seg in role.in_layout.segs)
        kept = {name: value for name, value in scored.scores.items() if name not in dropped}
        fine = {name: value for name, value in scored.subunit_scores.items() if name in kept}
        return replace(scored, scores=MappingProxyType(kept), subunit_scores=MappingProxyType(fine))


def ignore(*, outputs: Selectors = (), inputs: Selectors = ()) -> Ignore:
    """Leaves out the channel groups that given modules must not lose, before masking.

    A stage ``Scored -> Scored`` placed between the scorer and the mask rule.
    A group left out gets no mask, so it is kept whole (and, with a global
    rule, takes no part in the ranking).

    * ``outputs``: modules whose **output** channels must stay.  Every group
      one of whose producers (the Linear, Conv or LSTM whose weight rows are
      the channels) is selected is left out: with a residual add, selecting
      any producer of the sum keeps the whole sum.
    * ``inputs``: modules whose **input** width must stay.  Every group whose
      channels the module reads (a consumer such as the next Linear, or a
      per-channel layer such as a BatchNorm or LayerNorm) is left out.

    Each takes a selector or an iterable of them: a fully-qualified module
    name (``"fc"``; it also covers the modules inside: ``"layer4"`` selects
    ``"layer4.0.conv1"``), an :mod:`fnmatch` glob (``"layer4.*"``), an
    ``nn.Module`` subclass (``nn.LayerNorm``), or a predicate
    ``(name, module) -> bool``.  Names are those of the traced model (as in
    ``model.named_modules()`` for modules the forward pass calls).  Does not
    modify its input: returns a new ``Scored`` sharing the kept score tensors.

    Args:
        outputs: modules whose output channels are not pruned.
        inputs: modules whose input channels are not pruned.

    Returns:
        A frozen :class:`Ignore` value, equal by its selectors; ``repr`` reads like the call.

    Raises:
        InvalidTypeError: a selector of the wrong kind (an ``nn.Module`` instance: pass its name),
            at construction; a value other than ``Scored`` passed to the stage.
        InvalidArgumentError: a name or glob matching no module of the model (when the stage runs;
            the message lists the closest names).

    Example:
        >>> from torch import nn
        >>> from toolz import pipe
        >>> from fprune import apply_patterns, score_l1, score_with, topk_mask
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
        >>> stage = ignore(outputs=["4"], inputs=nn.LayerNorm)
        >>> stage
        ignore(outputs='4', inputs=nn.LayerNorm)
        >>> pruned = pipe(net, score_with(score_l1, prune_outputs=True, approximate=True), stage,
        ...               topk_mask(0.5), apply_patterns)
        >>> [pruned.get_submodule(n).out_features for n in ("0", "2", "4")]
        [8, 3, 2]
        >>> ignore(outputs="fc1")(score_with(score_l1, prune_outputs=True, approximate=True)(net))
        Traceback (most recent call last):
        ...
        fprune.errors.InvalidArgumentError: ignore(outputs='fc1'), outputs: 'fc1' matches no module of the model ...
    """
    return Ignore(
        outputs=as_selectors(outputs, "ignore(outputs=...)"), inputs=as_selectors(inputs, "ignore(inputs=...)")
    )
