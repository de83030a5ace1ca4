"""Retraining-free recovery: re-solve what reads the removed channels, from calibration batches.

``reconstruct(batches)`` is a ``Plan -> Plan`` stage: the plan keeps its masks and gains new values
for the tensors of the pruned model, which :func:`fprune.apply_patterns` writes in::

    pipe(model, score_wanda(b), topk_mask(0.5), reconstruct(b), apply_patterns)

It is **sequential**: the original model and the pruned one run side by side over all the batches,
node by node, and each ``Linear`` or ``Conv2d`` that loses input columns (a consumer of a pruned
group) is re-solved when both reach it, from the pruned model's own input ``x~`` (which already
carries every earlier layer's pruning and re-solving) against the original's output ``y`` there
(over every token of every batch; for a convolution over every input patch, ``in * kh * kw``
columns).  With ``W_K``, ``b`` the consumer's pruned weight and bias:

* ``method="lstsq"``: ``W' = E[(y - b) x~^T] (E[x~ x~^T] + lambda I)^-1``, least squares with ridge
  damping ``lambda = damp * mean(diag E[x~ x~^T])`` (``damp=0`` uses the pseudo-inverse); the bias
  is kept;
* ``method="bias"`` (FLAP's compensation): ``b' = E[y] - W_K E[x~]``, so the output's mean over the
  batches is the original's (for the first pruned layer this is ``b + W[:, R] E[x_R]``, the removed
  columns' mean contribution); a consumer without a bias is left as it is (its class has no bias to
  hold it), with a warning.

Every BatchNorm (eval mode) whose input differs from the original's is re-estimated on the way:
its running statistics are corrected so that, on the batches, each channel of its output has the
original's mean and variance (``batchnorm=False`` leaves them).  This also carries the mean of what
a bias-less convolution lost into the BatchNorm after it.  The relative error of each re-solved
layer's output on the batches, before and after, is kept in ``plan.reconstruction`` (and shown by
:func:`fprune.summary` with the plan).

The result is no longer the original with the removed slices zeroed: it is closer to the
original's output on data like the batches.  Grouped convolutions, ``Conv1d``/``Conv3d``, string
padding and modules called more than once are not re-solved (a warning names them).  Statistics
accumulate in float64; the side-by-side run holds, for every batch, the activations both models
still need, and one ``kept x kept`` matrix for the layer being solved.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from toolz import pipe
    >>> from fprune import apply_patterns, score_wanda, topk_mask
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    >>> batches = [torch.randn(64, 6) for _ in range(4)]
    >>> plan = pipe(net, score_wanda(batches), topk_mask(0.5), reconstruct(batches))
    >>> plan
    Plan(pruned={'0': '6/12'}, values=1)
    >>> before, after = plan.reconstruction["2"]  # relative output error on the batches
    >>> after < before
    True
    >>> x = torch.randn(256, 6)
    >>> plain = pipe(net, score_wanda(batches), topk_mask(0.5), apply_patterns)
    >>> err = lambda m: float((m(x) - net(x)).pow(2).mean())
    >>> err(apply_patterns(plan)) < err(plain)
    True
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
import torch.fx._pytree as fx_pytree
from torch import Tensor, nn
from torch.export import ExportedProgram
from torch.fx import GraphModule, Interpreter, Node
from torch.utils._pytree import tree_flatten

from fprune.calibrate import (Stats, _check, _evaluating, _progress, call_args, misfit, no_batches, non_finite,
                              traced_constants)
from fprune.errors import FpruneWarning, InvalidArgumentError, InvalidTypeError, InvalidWeightError
from fprune.plan import Plan

__all__ = ["Reconstruct", "reconstruct"]

Method = Literal["lstsq", "bias"]


@dataclass(frozen=True, eq=False)
class Reconstruct:
    """The ``Plan -> Plan`` stage :func:`reconstruct` returns."""

    batches: Iterable[Any] = field(repr=False)
    method: Method = "lstsq"
    damp: float = 0.01
    progress: bool = False
    batchnorm: bool = True

    def __repr__(self) -> str:
        extra = "" if self.batchnorm else ", batchnorm=False"
        return f"reconstruct(<batches>, method={self.method!r}, damp={self.damp!r}{extra})"

    def __call__(self, plan: Plan) -> Plan:
        from fprune.rewrite import apply_patterns

        if not isinstance(plan, Plan):
            raise InvalidTypeError(f"{self!r} expects a Plan (e.g. topk_mask(0.5)(score_wanda(b)(model))), "
                                   f"got {type(plan).__name__}")
        analysis = plan.analysis
        modules = dict(analysis.graph.named_modules())
        params = plan.params()
        targets: dict[str, _Target] = {}  # public weight name -> consumer to re-solve
        skipped: list[str] = []
        for name, module in modules.items():
            if name not in analysis.roles:
                continue
            entries = {e["dim"]: e["keep"] for e in params.get(analysis.public_name(f"{name}.weight"), [])}
            if 1 not in entries:
                continue
            if not _solvable(module):
                skipped.append(name)
                continue
            assert isinstance(module, (nn.Linear, nn.Conv2d))
            key = analysis.public_name(f"{name}.weight")
            targets[key] = _Target(name, key, module, entries.get(0))
        norms: dict[str, _Norm] = {}  # public running_mean name -> BatchNorm to correct
        if self.batchnorm:
            for name, module in modules.items():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                    key = analysis.public_name(f"{name}.running_mean")
                    keep = {e["dim"]: e["keep"] for e in params.get(key, [])}.get(0)
                    norms[key] = _Norm(name, key, analysis.public_name(f"{name}.running_var"), module, keep)
        no_bias = sorted(t.name for t in targets.values() if self.method == "bias" and t.module.bias is None)
        targets = {k: t for k, t in targets.items() if t.name not in no_bias}
        if not targets and not norms:
            self._warn_left(skipped, no_bias, bool(norms))
            return plan
        batches = _materialise(self.batches, repr(self), traced_constants(analysis))
        if analysis.source is None:
            dense_model: GraphModule = analysis.graph
            small = apply_patterns(plan)
            assert isinstance(small, GraphModule)
            pruned_model = small.eval()
        else:
            dense_model = analysis.source.program.module()
            program = apply_patterns(plan)
            assert isinstance(program, ExportedProgram)
            pruned_model = program.module()
        exported = analysis.source is not None
        dense = _Walk(dense_model, batches, repr(self), exported)
        pruned = _Walk(pruned_model, batches, repr(self), exported)
        once = {k for k in {**targets, **norms} if dense.keys[k] == 1 and pruned.keys[k] == 1}
        twice = sorted(t.name for k, t in targets.items() if k not in once)
        if twice:
            skipped.extend(twice)
        wanted = {k: v for k, v in {**targets, **norms}.items() if k in once}
        self._warn_left(skipped, no_bias, bool(norms))
        values = dict(plan.values)
        report: dict[str, tuple[float, float]] = {}
        todo = set(wanted)
        mode = _evaluating(dense_model) if analysis.source is None else contextlib.nullcontext()
        bar = _progress(self.progress, repr(self), sum(1 for k in todo if k in targets), unit="layer")
        with torch.no_grad(), mode, bar:
            while todo:
                hit = pruned.until(wanted)
                if hit is None:
                    break
                key = hit
                dense.until({key: None})
                x_dense = dense.inputs()
                y_dense = dense.step()
                x_pruned = pruned.inputs()
                todo.discard(key)
                if key in norms:
                    values.update(self._correct_norm(norms[key], x_dense, x_pruned, pruned_model))
                    pruned.step()
                    continue
                target = targets[key]
                (fqn, value), errors = self._solve(target, y_dense, x_pruned, pruned_model)
                _replace(pruned_model, fqn, value)
                values[fqn] = value
                report[target.name] = errors
                pruned.step()
                bar.update(1)
        return Plan(plan.analysis, plan.masks, plan.options, MappingProxyType(values),
                    MappingProxyType({**plan.reconstruction, **report}))

    def _warn_left(self, skipped: list[str], no_bias: list[str], norms: bool) -> None:
        """Warns of the consumers left as pruned: not re-solvable, or (method='bias') without a bias."""
        if skipped:
            warnings.warn(f"{self!r} re-solves Linear and Conv2d (groups=1, zero padding) consumers called once "
                          f"only; left as pruned: {', '.join(skipped)}", FpruneWarning, stacklevel=3)
        if no_bias:
            after = "; the BatchNorms whose input changed are re-estimated" if norms else ""
            warnings.warn(f"{self!r}: {', '.join(no_bias)} have no bias to hold the removed channels' mean "
                          f"contribution; left as pruned{after} (method='lstsq' re-solves their weights instead)",
                          FpruneWarning, stacklevel=3)

    # ----------------------------------------------------------------------------------

    def _solve(self, target: _Target, ys: list[Any], xs: list[Any], pruned: nn.Module) -> tuple[tuple[str, Tensor], tuple[float, float]]:
        """The consumer's new weight (lstsq) or bias (bias), and its relative output error before, after."""
        module = target.module
        weight_fqn = target.key
        bias_fqn = weight_fqn[: -len("weight")] + "bias"
        current = _tensor(pruned, weight_fqn)
        w0 = current.detach().to(torch.float64).reshape(current.shape[0], -1)
        b0 = _tensor(pruned, bias_fqn).detach().to(torch.float64) if module.bias is not None else None
        f64, device = torch.float64, current.device  # the statistics live beside the model (a GPU's too)
        rows = torch.tensor(target.rows, dtype=torch.long, device=device) if target.rows is not None else None
        k = w0.shape[1]
        gram = torch.zeros(k, k, dtype=f64, device=device)
        cross = torch.zeros(w0.shape[0], k, dtype=f64, device=device)  # E[(y - b) x~^T]
        mean_x = torch.zeros(k, dtype=f64, device=device)
        mean_y = torch.zeros(w0.shape[0], dtype=f64, device=device)
        energy = z_energy = 0.0  # E||y||^2, E||y - b||^2 (sums)
        count = 0
        for y, x in zip(ys, xs):
            x, y = _columns_of(module, x, y)  # [k, rows] and [out, rows]
            if rows is not None:
                y = y.index_select(0, rows)
            energy += float(y.pow(2).sum(dtype=torch.float64))
            if b0 is not None:
                y = y - b0.to(y.dtype)[:, None]
            gram += (x @ x.T).double()  # each batch's products in its precision, summed in float64
            cross += (y @ x.T).double()
            mean_x += x.sum(1, dtype=torch.float64)
            mean_y += y.sum(1, dtype=torch.float64)
            z_energy += float(y.pow(2).sum(dtype=torch.float64))
            count += x.shape[1]
        if not all(bool(torch.isfinite(t).all()) for t in (gram, cross)) or energy != energy or energy == float("inf"):
            self._refuse_non_finite(target, ys, xs)
        n = max(count, 1)
        gram, cross, mean_x, mean_y = gram / n, cross / n, mean_x / n, mean_y / n

        def error(w: Tensor, shift: Tensor | None = None) -> float:
            # E||z - W x~||^2 with z = y - b: E||z||^2 - 2 <W, E[z x~^T]> + <W E[x~ x~^T], W>
            err = z_energy / n - 2 * float((w * cross).sum()) + float(((w @ gram) * w).sum())
            if shift is not None:  # a bias moved by `shift`: E||z - W x~ - s||^2
                err += -2 * float((shift * mean_y).sum()) + 2 * float((shift * (w @ mean_x)).sum()) \
                    + float(shift.pow(2).sum())
            return max(err, 0.0) / max(energy / n, 1e-300)

        before = error(w0)
        if self.method == "bias":
            assert b0 is not None
            shift = mean_y - w0 @ mean_x  # b' - b: E[y] - W_K E[x~] - b
            value, fqn, after = b0 + shift, bias_fqn, error(w0, shift)
        else:
            if self.damp > 0:
                scale = float(gram.diagonal().mean()) or 1.0
                system = gram + self.damp * scale * torch.eye(k, dtype=f64, device=device)
                solved = torch.linalg.solve(system, cross.T).T
            else:
                solved = cross @ torch.linalg.pinv(gram, hermitian=True)
            value, fqn, after = solved.reshape(current.shape), weight_fqn, error(solved)
        if not bool(torch.isfinite(value).all()):
            raise InvalidWeightError(
                f"{self!r}: re-solving {target.name!r} gave NaN or inf (its inputs' statistics are not finite, or "
                "the system is singular); use damp > 0, or more calibration batches")
        return (fqn, value.to(current.dtype)), (before, after)

    def _refuse_non_finite(self, target: _Target, ys: list[Any], xs: list[Any]) -> None:
        """Names the first batch whose input or output at `target` holds NaN or inf (the sums did)."""
        for i, (y, x) in enumerate(zip(ys, xs)):
            for what, t in (("input", x), ("output", y)):
                if not bool(torch.isfinite(t).all()):
                    raise non_finite(repr(self), f"the {what} of {target.name!r}", i)
        raise InvalidArgumentError(  # finite values whose squares overflow float64
            f"{self!r}: the statistics of {target.name!r}'s input overflow; check the scale of the batches")

    def _correct_norm(self, norm: _Norm, dense: list[Any], pruned: list[Any], model: nn.Module) -> dict[str, Tensor]:
        """New running statistics for a BatchNorm whose input changed; nothing if it did not."""
        device = dense[0].device if dense and isinstance(dense[0], Tensor) else None
        keep = torch.tensor(norm.keep, dtype=torch.long, device=device) if norm.keep is not None else None
        picked = [d if keep is None else d.index_select(1, keep) for d in dense]
        if all(_same(p, q) for p, q in zip(picked, pruned)):  # up to rounding: nothing to correct
            return {}
        moments = [_channel_moments(t) for t in (picked, pruned)]
        (m, v), (m2, v2) = moments
        mean, var = _tensor(model, norm.key), _tensor(model, norm.var_key)
        eps = float(norm.module.eps)
        scale = (var.double() + eps).sqrt()
        ratio = torch.where((v > 0) & (v2 > 0), (v2 / v.clamp_min(1e-300)).sqrt(), torch.ones_like(v))
        new_scale = scale * ratio
        new_mean = m2 - (m - mean.double()) * ratio
        new_var = (new_scale * new_scale - eps).clamp_min(0.0)
        if not (bool(torch.isfinite(new_mean).all()) and bool(torch.isfinite(new_var).all())):
            raise InvalidWeightError(f"{self!r}: re-estimating {norm.name!r} gave NaN or inf; check the batches")
        out = {norm.key: new_mean.to(mean.dtype), norm.var_key: new_var.to(var.dtype)}
        for fqn, value in out.items():
            _replace(model, fqn, value)
        return out


@dataclass(frozen=True)
class _Target:
    name: str  # the consumer's module name in the analysis
    key: str  # its weight's public name, which is also its name in the models run
    module: nn.Linear | nn.Conv2d  # the original module: hyperparameters, bias or not
    rows: list[int] | None  # its kept output rows (None: all)


@dataclass(frozen=True)
class _Norm:
    name: str
    key: str  # running_mean's public name
    var_key: str
    module: nn.modules.batchnorm._BatchNorm
    keep: list[int] | None  # its kept channels (None: all)


def _columns_of(module: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The consumer's input as ``[k, rows]``, one column per row of weight inputs (a convolution: per
    unfolded patch), and its output as the matching ``[out, rows]``, in the model's precision (at
    least float32)."""
    dtype = torch.promote_types(x.dtype, torch.float32)  # half and bfloat16 products in float32
    x, y = x.to(dtype), y.to(dtype)
    if isinstance(module, nn.Conv2d):
        patches = torch.nn.functional.unfold(x, module.kernel_size, module.dilation,  # type: ignore[arg-type]
                                             module.padding, module.stride)  # type: ignore[arg-type]
        # [images, k, positions] -> [k, images * positions]: one large product is the fastest
        return (patches.transpose(0, 1).reshape(patches.shape[1], -1),
                y.flatten(2).transpose(0, 1).reshape(y.shape[1], -1))
    return x.reshape(-1, x.shape[-1]).T, y.reshape(-1, y.shape[-1]).T


def _same(a: Any, b: Any) -> bool:
    """Equal up to the rounding of a narrower matmul (another BLAS blocking of the same sums)."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape):
        return False
    eps = 64 * torch.finfo(a.dtype).eps if a.dtype.is_floating_point else 0.0
    return torch.allclose(a, b, rtol=eps, atol=eps * float(a.abs().max()) if a.numel() else 0.0)


def _channel_moments(tensors: list[Any]) -> tuple[Tensor, Tensor]:
    """Per-channel (dim 1) mean and variance over every other dim of every batch, float64."""
    stats = Stats()
    for t in tensors:
        stats.add(t, 1)
    return stats.moments()


def _tensor(model: nn.Module, fqn: str) -> Tensor:
    owner, _, attr = fqn.rpartition(".")
    value = getattr(model.get_submodule(owner), attr)
    assert isinstance(value, Tensor)  # the rewrite keeps every tensor of a module it keeps
    return value


def _replace(model: nn.Module, fqn: str, value: Tensor) -> None:
    """Points `model`'s tensor `fqn` at `value` (never writes into the old tensor: it may be shared)."""
    owner, _, attr = fqn.rpartition(".")
    module = model.get_submodule(owner)
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(value, requires_grad=False)
    elif attr in module._buffers:
        module._buffers[attr] = value
    else:
        setattr(module, attr, value)


def _solvable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))


def _materialise(batches: Iterable[Any], where: str, constants: dict[str, Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    calls = [call_args(batch, constants, where, i) for i, batch in enumerate(batches)]
    if not calls:
        raise no_batches(where)
    return calls


def _node_keys(node: Node) -> tuple[str, ...]:
    """The names a node is found by: a module call's weight and running mean, or the tensors a
    function reads as a weight (argument 1) or a BatchNorm's running mean (argument 3)."""
    if node.op == "call_module":
        return (f"{node.target}.weight", f"{node.target}.running_mean")
    if node.op != "call_function":
        return ()
    keys = []
    if len(node.args) > 1 and isinstance(node.args[1], Node) and node.args[1].op == "get_attr":
        keys.append(str(node.args[1].target))
    if len(node.args) > 3 and isinstance(node.args[3], Node) and node.args[3].op == "get_attr" and _evaluating_bn(node):
        keys.append(str(node.args[3].target))
    return tuple(keys)


def _evaluating_bn(node: Node) -> bool:
    """An exported BatchNorm that normalises with its running statistics (eval mode)."""
    target = str(node.target)
    if "_native_batch_norm_legit_no_training" in target:
        return True
    return target.startswith("aten.batch_norm") and len(node.args) > 5 and node.args[5] is False


class _Walk:
    """Runs a GraphModule node by node over every batch at once, pausing at named nodes."""

    def __init__(self, model: GraphModule, calls: list[tuple[tuple[Any, ...], dict[str, Any]]], where: str,
                 exported: bool) -> None:
        self.nodes = list(model.graph.nodes)
        self.where, self.exported = where, exported
        self.at = 0
        self.keys: Counter[str] = Counter(k for n in self.nodes for k in set(_node_keys(n)))
        last: dict[Node, int] = {}
        for i, node in enumerate(self.nodes):
            for used in node.all_input_nodes:
                last[used] = i
        self.frees: dict[int, list[Node]] = {}
        for node, i in last.items():
            self.frees.setdefault(i, []).append(node)
        self.runs = []
        for i, (args, kwargs) in enumerate(calls):
            run = Interpreter(model, garbage_collect_values=False)
            run.args_iter = iter(_flat_inputs(model, args, kwargs, where, i))
            self.runs.append(run)
        self.current: Node | None = None

    def until(self, wanted: dict[str, Any]) -> str | None:
        """Runs up to the next node found by a name in `wanted` (not running it); its name, or None."""
        while self.at < len(self.nodes):
            node = self.nodes[self.at]
            if node.op == "output":
                return None
            hit = next((k for k in _node_keys(node) if k in wanted), None)
            if hit is not None:
                self.current = node
                return hit
            self.step()
        return None

    def inputs(self) -> list[Any]:
        """The current node's first argument, per batch."""
        node = self.nodes[self.at]
        first = node.args[0]
        return [run.env[first] if isinstance(first, Node) else first for run in self.runs]

    def step(self) -> list[Any]:
        """Runs the current node over every batch; its outputs."""
        node = self.nodes[self.at]
        outputs = []
        attrs = [n for n in node.all_input_nodes if n.op == "get_attr"]
        for i, run in enumerate(self.runs):
            for n in attrs:  # read again: a tensor replaced since (a re-solved weight) is read new
                run.env[n] = run.fetch_attr(str(n.target))
            try:
                run.env[node] = run.run_node(node)
            except (RuntimeError, TypeError, ValueError, IndexError, AssertionError, StopIteration) as exc:
                if isinstance(exc, (InvalidArgumentError, InvalidTypeError)):
                    raise
                raise misfit(self.where, i, exc, exported=self.exported, node=node.name) from exc
            outputs.append(run.env[node])
        for used in self.frees.get(self.at, ()):
            for run in self.runs:
                run.env.pop(used, None)
        self.at += 1
        return outputs


def _flat_inputs(model: GraphModule, args: tuple[Any, ...], kwargs: dict[str, Any], where: str,
                 index: int) -> list[Any]:
    """The values of `model`'s placeholders for ``model(*args, **kwargs)``, in order."""
    placeholders = [n for n in model.graph.nodes if n.op == "placeholder"]
    info = getattr(model.graph._codegen, "pytree_info", None)
    try:
        if info is not None and info.in_spec is not None:  # an ExportedProgram's module: (args, kwargs) leaves
            flat = list(fx_pytree.tree_flatten_spec((args, kwargs), info.in_spec))
        else:
            bound = inspect.signature(model.forward).bind(*args, **kwargs)
            bound.apply_defaults()
            flat = tree_flatten(list(bound.arguments.values()))[0] if info is not None else list(bound.arguments.values())
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise InvalidArgumentError(
            f"{where}: calibration batch {index} does not fit the model ({type(exc).__name__}: {exc}). Fix: give "
            "batches as the model's forward takes them (a tensor, a tuple, or a dict of its arguments)") from exc
    if len(flat) != len(placeholders):
        raise InvalidArgumentError(
            f"{where}: calibration batch {index} gives {len(flat)} inputs, the model takes {len(placeholders)}")
    return flat


def reconstruct(batches: Iterable[Any], method: Method = "lstsq", damp: float = 0.01, *,
                progress: bool = False, batchnorm: bool = True) -> Reconstruct:
    """A ``Plan -> Plan`` stage re-solving each pruned consumer, layer after layer, from calibration batches.

    Args:
        batches: calibration batches: tensors, tuples or dicts of what the model's forward takes
            (iterated once per call).
        method: ``"lstsq"`` (re-solve the kept weights) or ``"bias"`` (FLAP's bias compensation).
        damp: ridge damping of ``lstsq``, relative to the mean input energy (``0``: pseudo-inverse).
        progress: show a progress bar over the layers on stderr.
        batchnorm: correct the running statistics of every BatchNorm whose input changed.

    Raises:
        InvalidArgumentError, InvalidTypeError: bad arguments; when called, empty or misfit batches,
            non-finite activations; InvalidWeightError: a solve that is not finite.

    Example:
        >>> reconstruct([], method="bias")
        reconstruct(<batches>, method='bias', damp=0.01)
    """
    _check(batches, progress, "reconstruct")
    if method not in ("lstsq", "bias"):
        raise InvalidArgumentError(f"reconstruct expects method 'lstsq' or 'bias', got {method!r}")
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not damp >= 0 or damp != damp or damp == float("inf"):
        raise InvalidArgumentError(f"reconstruct expects damp as a finite number >= 0, got {damp!r} (0.01 is usual)")
    if not isinstance(batchnorm, bool):
        raise InvalidTypeError(f"reconstruct expects batchnorm as a bool, got {batchnorm!r}")
    return Reconstruct(batches, method, float(damp), progress, batchnorm)
