"""BaseStructuredSparsifier: the stateful shell of the torch.ao structured pruner.

It subclasses :class:`torch.ao.pruning.BaseSparsifier` (so ``step()``,
``state_dict()``, ``__repr__`` and pickling are the reference's own) and
replaces the parts that are quadratic, fragile or delegated to the core:
``make_config_from_model`` (one pass over the model; LSTMs are expanded into
their weights), ``prepare`` (every entry is checked before the model is
touched), ``squash_mask``, ``load_state_dict`` and ``prune`` (the core's
analysis and rewrite, see :mod:`fprune.compat._prune`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fprune.compat import SaliencyPruner
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> pruner = SaliencyPruner({"sparsity_level": 0.5})
    >>> pruner.prepare(net, None)
    >>> [g["tensor_fqn"] for g in pruner.groups]
    ['0.weight', '2.weight']
    >>> pruner.step()
    >>> pruned = pruner.prune()
    >>> pruned(torch.randn(3, 4)).shape, net[2].weight.shape
    (torch.Size([3, 1]), torch.Size([1, 4]))
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.ao.pruning.sparsifier.base_sparsifier import BaseSparsifier
from torch.fx import GraphModule
from torch.nn.utils import parametrize

from fprune.compat.parametrization import BiasHook, FakeStructuredSparsity, settle_bias, structured_parametrization
from fprune.errors import InvalidArgumentError, InvalidMaskError, InvalidTypeError, UnsupportedModelError

__all__ = ["BaseStructuredSparsifier", "SUPPORTED_MODULES", "arg_info"]

SUPPORTED_MODULES: frozenset[type[nn.Module]] = frozenset({nn.Linear, nn.Conv2d, nn.LSTM})  # discovered by config None
_DISCOVERED = SUPPORTED_MODULES  # the same set, under a name the method's parameter does not shadow

_INFO_KEYS = ("module_fqn", "module", "tensor_name", "tensor_fqn")


def arg_info(model: nn.Module, tensor_fqn: str) -> dict[str, Any]:
    """``module_fqn``, ``module`` (None if absent), ``tensor_name`` and ``tensor_fqn`` of a tensor path.

    Example:
        >>> from torch import nn
        >>> info = arg_info(nn.Sequential(nn.Linear(1, 1)), "0.weight")
        >>> info["module_fqn"], info["tensor_name"], type(info["module"]).__name__
        ('0', 'weight', 'Linear')
    """
    tensor_name = tensor_fqn.rsplit(".", maxsplit=1)[-1]
    module_fqn = tensor_fqn[: -len(tensor_name) - ("." in tensor_fqn)]
    module: Any = model
    if module_fqn:
        for part in module_fqn.split("."):
            module = getattr(module, part, None)
    return {"module_fqn": module_fqn, "module": module, "tensor_name": tensor_name, "tensor_fqn": tensor_fqn}


def _flat(values: Mapping[str, Any]) -> bool:
    """True when a shallow copy of `values` is as good as a deep one (immutable scalars only)."""
    return all(v is None or isinstance(v, (bool, int, float, str)) for v in values.values())


def _rnn_weights(module: nn.Module) -> list[str]:
    names: list[str] = getattr(module, "_flat_weights_names", [])
    return [n for n in names if n.startswith(("weight_ih_l", "weight_hh_l"))]


class BaseStructuredSparsifier(BaseSparsifier):
    """Base class of the structured pruners; subclasses implement ``update_mask``.

    Same constructor as the reference, ``BaseStructuredSparsifier(defaults,
    patterns=None)``; it is abstract (instantiating it raises ``TypeError``).
    ``patterns`` must be None: channel groups come from fprune's analysis, not
    from conversion patterns (``self.patterns`` is None).

    State, as in the reference: ``groups`` is a list of dicts, the defaults
    merged with each config entry plus ``module``, ``module_fqn``,
    ``tensor_name`` and ``tensor_fqn``; ``state[tensor_fqn]["mask"]`` is the
    very bool tensor the :class:`FakeStructuredSparsity` parametrization
    multiplies the rows by.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class DropFirst(BaseStructuredSparsifier):
        ...     def update_mask(self, module, tensor_name, **kwargs):
        ...         getattr(module.parametrizations, tensor_name)[0].mask[0] = False
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
        >>> pruner = DropFirst({"prune_bias": False})
        >>> pruner.prepare(net, [{"tensor_fqn": "0.weight"}])
        >>> pruner.step()
        >>> pruner.prune().get_submodule("2").in_channels
        3
        >>> BaseStructuredSparsifier({})
        Traceback (most recent call last):
        ...
        TypeError: Can't instantiate abstract class BaseStructuredSparsifier with abstract method update_mask
    """

    model: nn.Module
    traced: GraphModule
    patterns: None

    def __init__(self, defaults: dict[str, Any] | None, patterns: Mapping[Any, Any] | None = None) -> None:
        if patterns is not None:
            raise UnsupportedModelError(
                f"{type(self).__name__}: custom conversion patterns are not supported; fprune.compat finds "
                "the channels to remove with fprune's graph analysis (every Linear, Conv and LSTM and what "
                "reads them). Drop the patterns argument, or prune with fprune.apply_patterns directly"
            )
        super().__init__(defaults)
        self.patterns = None

    # ------------------------------------------------------------------ configuration

    def make_config_from_model(self, model: nn.Module, SUPPORTED_MODULES: Iterable[type] | None = None) -> None:
        """Sets ``self.config`` to one entry per supported module, in the reference's order.

        One pass over the model (the reference looks every module's name up from
        the root, which is quadratic).  An LSTM (where the reference crashes,
        asking for ``lstm.weight``) contributes ``weight_ih_l{k}`` and
        ``weight_hh_l{k}`` for every layer (and direction), the tensors
        ``LSTMSaliencyPruner`` masks.
        """
        supported = set(SUPPORTED_MODULES) if SUPPORTED_MODULES is not None else set(_DISCOVERED)
        fqn: dict[int, str] = {}
        for name, module in model.named_modules():
            fqn.setdefault(id(module), name)
        config: list[dict[str, Any]] = []
        stack = [model]
        while stack:
            parent = stack.pop()
            for _, child in parent.named_children():
                if type(child) not in supported:
                    stack.append(child)
                    continue
                prefix = fqn[id(child)]
                rnn = _rnn_weights(child)
                if rnn:
                    config.extend({"tensor_fqn": f"{prefix}.{n}"} for n in rnn)
                elif isinstance(getattr(child, "weight", None), Tensor):
                    config.append({"tensor_fqn": f"{prefix}.weight"})
                else:
                    raise InvalidArgumentError(
                        f"make_config_from_model: module {prefix!r} ({type(child).__name__}) has no 'weight' "
                        "tensor to prune; leave its type out of SUPPORTED_MODULES"
                    )
        self.config = config

    def prepare(self, model: nn.Module, config: list[dict[str, Any]] | None) -> None:
        """Registers a :class:`FakeStructuredSparsity` mask on every configured tensor.

        ``config`` is a list of dicts with a ``tensor_fqn`` (and any per-tensor
        options: ``sparsity_level``, ``prune_bias``, ``mask``,
        ``parametrization``), or None to discover every ``Linear``, ``Conv2d``
        and ``LSTM``.  The model is modified in place, as in the reference: the
        masks are registered with ``torch.nn.utils.parametrize``, and the bias of
        a ``Linear`` / ``Conv2d`` is moved to ``_bias`` and re-added by a
        :class:`BiasHook` (which zeroes the masked entries when ``prune_bias``,
        default True).  Every entry is checked before anything is registered.

        Raises:
            InvalidTypeError: `model` is not a module or an entry is not a dict.
            InvalidArgumentError: an entry names no tensor, disagrees with its
                ``tensor_fqn``, or names a tensor twice or one already masked.
            InvalidMaskError: a given ``mask`` is not 1-D bool with one entry per row.
        """
        if not isinstance(model, nn.Module):
            raise InvalidTypeError(f"prepare expects an nn.Module, got {type(model).__name__}")
        if config is None:
            self.make_config_from_model(model)
            entries = self.config or []
        else:
            entries = config
        if not isinstance(self.defaults, dict):
            raise InvalidTypeError(f"defaults must be a dict, got {type(self.defaults).__name__}")
        new_groups = [self._group(model, entry) for entry in entries]
        seen: set[tuple[int, str]] = set()
        for group in new_groups:
            key = (id(group["module"]), group["tensor_name"])
            if key in seen or structured_parametrization(group["module"], group["tensor_name"]) is not None:
                raise InvalidArgumentError(
                    f"prepare: {group['tensor_fqn']!r} is configured twice or already carries a "
                    "FakeStructuredSparsity mask; list each tensor once (call squash_mask() or prune() "
                    "before preparing it again)"
                )
            seen.add(key)
        self.model = model
        self.config = config if config is not None else self.config
        self.groups.extend(new_groups)
        for group in new_groups:
            self._attach(group)

    def _group(self, model: nn.Module, entry: Any) -> dict[str, Any]:
        """Checks one config entry; returns its group dict (defaults, entry, tensor info)."""
        if not isinstance(entry, dict):
            raise InvalidTypeError(
                "config elements should be dicts, not modules: "
                f"[{{'tensor_fqn': 'foo.bar.weight'}}, ...]; got {type(entry).__name__}"
            )
        local = dict(self.defaults) if _flat(self.defaults) else copy.deepcopy(self.defaults)
        local.update(entry)
        fqn = local.get("tensor_fqn")
        if not isinstance(fqn, str):
            raise InvalidArgumentError(
                f"every config entry needs a 'tensor_fqn' string such as 'seq.0.weight'; got {entry!r}"
            )
        info = arg_info(model, fqn)
        for key in _INFO_KEYS:
            if key in local and not (
                info[key] == local[key] or (key == "tensor_fqn" and "." + info[key] == local[key])
            ):
                raise InvalidArgumentError(
                    f"config entry {fqn!r} gives {key}={local[key]!r}, which disagrees with its tensor_fqn "
                    f"({info[key]!r}); give tensor_fqn alone"
                )
        local.update(info)
        module, name = info["module"], info["tensor_name"]
        tensor = getattr(module, name, None) if isinstance(module, nn.Module) else None
        if not isinstance(tensor, Tensor) or tensor.dim() < 1:
            raise InvalidArgumentError(
                f"config entry {fqn!r} names no tensor of {type(model).__name__} with rows "
                f"(module {info['module_fqn']!r}: {type(module).__name__}); check the path, e.g. 'seq.0.weight'"
            )
        if isinstance(module, (nn.Linear, nn.Conv2d)) and name != "weight":
            raise InvalidArgumentError(
                f"config entry {fqn!r}: a {type(module).__name__} is pruned through its 'weight' "
                f"(its bias follows); configure {info['module_fqn'] + '.weight'!r}"
            )
        mask = local.get("mask")
        if mask is not None and (
            not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (tensor.shape[0],)
        ):
            found = f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
            raise InvalidMaskError(
                f"config entry {fqn!r}: 'mask' must be a bool tensor of shape ({tensor.shape[0]},), got {found}"
            )
        return local

    def _attach(self, group: Mapping[str, Any]) -> FakeStructuredSparsity:
        """Registers the mask parametrization (and bias hook) of one group; returns the parametrization."""
        module: nn.Module = group["module"]
        name: str = group["tensor_name"]
        cls = group.get("parametrization", FakeStructuredSparsity)
        tensor: Tensor = getattr(module, name)
        mask = group.get("mask")
        if mask is None:
            mask = torch.ones(tensor.shape[0], dtype=torch.bool, device=tensor.device)
        self.state[group["tensor_fqn"]]["mask"] = mask
        p = cls(mask)
        # unsafe=True skips registration's trial forward: FakeStructuredSparsity keeps shape and dtype
        parametrize.register_parametrization(module, name, p, unsafe=cls is FakeStructuredSparsity)
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            prune_bias = bool(group.get("prune_bias", True))
            if module.bias is not None:
                module.register_parameter("_bias", nn.Parameter(module.bias.detach()))
                module.bias = None
                setattr(module, "prune_bias", prune_bias)
            module.register_forward_hook(BiasHook(p, prune_bias))
        return p  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ squash, load

    def squash_mask(
        self,
        params_to_keep: tuple[str, ...] | None = None,
        params_to_keep_per_layer: dict[str, tuple[str, ...]] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Bakes each mask into its tensor (``leave_parametrized=True``), as the reference does.

        As there, the bias stays in ``_bias`` with its :class:`BiasHook`, so the
        model computes the same function as before; the masked bias entries
        are zeroed now (with ``prune_bias``) rather than at the next forward.
        Tensors no longer masked (after :meth:`prune`) are skipped where the
        reference raises.  ``params_to_keep`` / ``params_to_keep_per_layer``
        attach ``sparse_params`` as in the reference.
        """
        for config in self.groups:
            module, name = config["module"], config["tensor_name"]
            settle_bias(module)
            if parametrize.is_parametrized(module, name):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
            sparse_params: dict[str, Any] = {}
            if params_to_keep is not None:
                sparse_params.update({k: config[k] for k in params_to_keep})
            if params_to_keep_per_layer is not None:
                keep = params_to_keep_per_layer.get(config["module_fqn"])
                if keep is not None:
                    sparse_params.update({k: config[k] for k in keep})
            if sparse_params:
                setattr(module, "sparse_params", sparse_params)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Loads ``groups`` and the masks of ``state`` into the prepared model.

        The reference registers a second, element-wise ``FakeSparsity`` holding
        the row mask (the next forward fails), drops the masks from ``state``
        and pops them out of the dict passed in.  Here each mask is copied into
        the tensor's :class:`FakeStructuredSparsity` (registered, with its bias
        hook, if the tensor has none), ``state[fqn]["mask"]`` stays that very
        tensor, and `state_dict` is not modified.

        Raises:
            InvalidArgumentError: ``prepare`` was not called, or (with `strict`)
                a tensor of the state is not in the model.
            InvalidMaskError: a mask does not fit its tensor.
        """
        model = getattr(self, "model", None)
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(
                f"{type(self).__name__}.load_state_dict: call prepare(model, config) first, so the masks "
                "have a model to go into"
            )
        groups: list[dict[str, Any]] = copy.deepcopy(state_dict["groups"])
        states: Mapping[str, Mapping[str, Any]] = state_dict["state"]
        by_fqn = {g["tensor_fqn"]: g for g in groups}
        todo: list[tuple[str, dict[str, Any], Tensor | None]] = []
        for fqn in dict.fromkeys([*by_fqn, *states]):
            info = arg_info(model, fqn)
            tensor = getattr(info["module"], info["tensor_name"], None) if info["module"] is not None else None
            if not isinstance(tensor, Tensor):
                if strict:
                    raise InvalidArgumentError(
                        f"load_state_dict: {fqn!r} is not a tensor of {type(model).__name__}; load the state "
                        "into the model it was saved from, or pass strict=False"
                    )
                continue
            mask = states.get(fqn, {}).get("mask")
            if mask is not None and (
                not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (tensor.shape[0],)
            ):
                raise InvalidMaskError(
                    f"load_state_dict: the mask of {fqn!r} must be a bool tensor of shape ({tensor.shape[0]},)"
                )
            todo.append((fqn, info, mask))
        new_state: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        for fqn, info, mask in todo:
            if fqn not in by_fqn:
                by_fqn[fqn] = {"tensor_fqn": fqn}
                groups.append(by_fqn[fqn])
            group = by_fqn[fqn]
            group.update(info)
            p = structured_parametrization(info["module"], info["tensor_name"])
            if p is None:
                p = self._attach({**group, "mask": None})
            if mask is not None:
                with torch.no_grad():
                    p.mask.copy_(mask)
            new_state[fqn] = {**{k: v for k, v in states.get(fqn, {}).items() if k != "mask"}, "mask": p.mask}
        self.state = new_state
        self.groups = [g for g in groups if "module" in g]

    # ------------------------------------------------------------------ prune

    def prune(self) -> GraphModule:
        """Traces the model, removes the masked channels, returns the pruned GraphModule.

        As in the reference the returned GraphModule shares its modules with
        the model passed to ``prepare``, which is left pruned too (its
        parametrizations, ``_bias`` parameters and bias hooks removed).  The
        channel groups, the slicing and the bias folding are fprune's
        (:func:`fprune.apply_patterns`); see :mod:`fprune.compat` for where the
        result differs from the reference's, and why.  Every check runs before
        the model is modified.

        Raises:
            TraceError: the model cannot be traced with ``torch.fx.symbolic_trace``.
            InvalidMaskError, UnprunableError, UnsupportedModelError: a configured
                tensor cannot be pruned (nothing is modified).
        """
        from fprune.compat._prune import prune_prepared

        model = getattr(self, "model", None)
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"{type(self).__name__}.prune: call prepare(model, config) and step() first")
        self.traced = prune_prepared(model, self.groups)
        return self.traced

