"""Module selectors: which modules a user means by a name, a glob, a type or a predicate.

Shared by :func:`fprune.ignore` and ``topk_mask(per_module=...)``.  A selector
is one of:

* a fully-qualified module name (``"layer4.0.conv1"``) or an :mod:`fnmatch`
  glob (``"layer4.*"``, case-sensitive); a name also covers every module
  inside the one it names (``"layer4"`` selects ``"layer4.0.conv1"``);
* an ``nn.Module`` subclass (``nn.LayerNorm``): its instances, subclasses
  included;
* a predicate ``(name, module) -> bool``.

A name or glob matching no module is a typo, reported with the closest names.

Example:
    >>> from fprune._names import name_matches
    >>> name_matches("layer4.0.conv1", "layer4"), name_matches("layer4.0.conv1", "layer4.*.conv?")
    (True, True)
    >>> name_matches("fc1", "fc")
    False
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Union, cast

from torch import nn
from typing_extensions import TypeAlias

from fprune.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "Predicate",
    "Selector",
    "Selectors",
    "name_matches",
    "as_selectors",
    "selects",
    "check_patterns",
    "show_selectors",
]

Predicate: TypeAlias = Callable[[str, nn.Module], bool]  # (fully-qualified name, module) -> selected
Selector: TypeAlias = Union[str, type[nn.Module], Predicate]  # a name or glob, a module type, a predicate
Selectors: TypeAlias = Union[Selector, Iterable[Selector]]  # one selector or several

_SELECTOR_FORMS = (
    "a module name or glob (str), an nn.Module subclass, a predicate (name, module) -> bool, "
    "or an iterable of these"
)


def name_matches(name: str, pattern: str) -> bool:
    """Whether the module `name` is `pattern` (a name or glob) or lies inside a module it matches."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def _check_one(item: object, where: str) -> Selector:
    if isinstance(item, str):
        return item
    if isinstance(item, type):
        if not issubclass(item, nn.Module):
            raise InvalidTypeError(
                f"{where} accepts module types that subclass nn.Module; got the type {item.__name__}. "
                "Fix: pass e.g. nn.LayerNorm, or a predicate (name, module) -> bool."
            )
        return item
    if isinstance(item, nn.Module):
        raise InvalidTypeError(
            f"{where} selects modules by name, type or predicate; got a {type(item).__name__} instance. "
            f"Fix: pass its fully-qualified name (as in model.named_modules()) or its type {type(item).__name__}."
        )
    if callable(item):
        return cast(Predicate, item)  # called as (name, module) -> bool
    raise InvalidTypeError(
        f"{where} expects {_SELECTOR_FORMS}; got {type(item).__name__} ({item!r}). "
        "Fix: pass e.g. 'fc', 'layer4.*', nn.LayerNorm or lambda name, module: name.startswith('head')."
    )


def as_selectors(value: object, where: str) -> tuple[Selector, ...]:
    """One selector or an iterable of them, checked, as a tuple (in the given order)."""
    if isinstance(value, (str, type, nn.Module)) or callable(value):
        return (_check_one(value, where),)
    if not isinstance(value, Iterable):
        raise InvalidTypeError(
            f"{where} expects {_SELECTOR_FORMS}; got {type(value).__name__} ({value!r}). "
            "Fix: pass e.g. ['fc', 'layer4.*']."
        )
    return tuple(_check_one(item, where) for item in value)


def selects(selectors: Iterable[Selector], name: str, module: nn.Module) -> bool:
    """Whether any selector selects the module `module` named `name`."""
    for selector in selectors:
        if isinstance(selector, str):
            if name_matches(name, selector):
                return True
        elif isinstance(selector, type):
            if isinstance(module, selector):
                return True
        elif selector(name, module):
            return True
    return False


def check_patterns(patterns: Iterable[object], names: Sequence[str], where: str, what: str) -> None:
    """Raises InvalidArgumentError for the first name or glob in `patterns` matching none of `names`.

    `what` names the kind of name searched ("module of the model").  Non-string
    selectors are skipped: a type or predicate matching nothing is not a typo.

    Example:
        >>> check_patterns(["fc2"], ["conv", "fc"], "ignore(outputs='fc2')", "module of the model")
        Traceback (most recent call last):
        ...
        fprune.errors.InvalidArgumentError: ignore(outputs='fc2'): 'fc2' matches no module of the model
        (did you mean 'fc'?). ...
    """
    for pattern in patterns:
        if not isinstance(pattern, str) or any(name_matches(n, pattern) for n in names):
            continue
        close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(n) for n in close)}?" if close else f"candidates: {_few(names)}"
        raise InvalidArgumentError(
            f"{where}: {pattern!r} matches no {what} ({hint}). Fix: use a fully-qualified "
            "module name as listed by model.named_modules(), or an fnmatch glob such as 'layer4.*'."
        )


def _few(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "") if names else "none"


def _show(selector: Selector) -> str:
    if isinstance(selector, str):
        return repr(selector)
    if isinstance(selector, type):
        prefix = "nn." if selector.__module__.startswith("torch.nn.") else ""
        return prefix + selector.__qualname__
    return getattr(selector, "__qualname__", None) or repr(selector)


def show_selectors(selectors: Sequence[Selector]) -> str:
    """Selectors as source-like text: ``'fc'``, ``['fc', nn.LayerNorm, is_head]``.

    Example:
        >>> from torch import nn
        >>> show_selectors(("fc", nn.LayerNorm))
        "['fc', nn.LayerNorm]"
    """
    if len(selectors) == 1:
        return _show(selectors[0])
    return "[" + ", ".join(_show(s) for s in selectors) + "]"
