"""The rules: one small module per family of ops, each a table from canonical op name to rule.

A rule is ``rule(ctx: RuleContext) -> Value``: given what the context shows of one node, it
returns the channel value its output carries, recording couplings, roles and blocks through the
context.  Rules never see the graph library or a front-end's op names; adding an op is adding a
rule here and naming it in a front-end (see ``fprune/analysis/README.md``).

Example:
    >>> from fprune.analysis.rules import RULES
    >>> from fprune.analysis.ops import OPS
    >>> set(RULES) == set(OPS)
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from fprune.analysis.context import Rule
from fprune.analysis.rules import attention, elementwise, meta, norms, producers, recurrent, reductions, shapes, tuples

__all__ = ["RULES"]


def _collect() -> Mapping[str, Rule]:
    rules: dict[str, Rule] = {}
    for family in (producers, recurrent, elementwise, norms, shapes, tuples, attention, reductions, meta):
        clash = rules.keys() & family.RULES.keys()
        if clash:  # a programming error in fprune itself, caught by the test suite
            raise RuntimeError(f"ops with two rules: {sorted(clash)}")
        rules.update(family.RULES)
    return MappingProxyType(rules)


RULES = _collect()
"""Canonical op name -> rule (read-only)."""
