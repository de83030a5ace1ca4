"""The ``fprune`` command line (also ``python -m fprune``).

Commands::

    fprune demo --out DIR                      # the main job: prune a CNN on bundled digits, write a report
    fprune prune MODEL --sparsity 0.5 --scorer l1 --plan plan.json [--save pruned.pt] [--input-shape 1,3,32,32]
                 [--prune-outputs] [--approximate] [--strict] [--ignore-outputs PATTERN] [--ignore-inputs PATTERN]
                 [--per-module PATTERN=SPARSITY]
    fprune apply MODEL plan.json --out pruned.pt [--input-shape 1,3,32,32] [--prune-outputs] [--approximate]
    fprune hf prune SRC OUT [--heads F] [--kv-heads F] [--mlp F] [--hidden F]
                 [--scorer l1|l2|random|activation|wanda|flap] [--calibration FILE] [--calibration-batch N]
                 [--device cpu|cuda] [--seed N] [--per-layer] [--approximate] [--in-memory]
                 [--max-shard-size 1GB] [--overwrite] [--no-progress]  # a Hugging Face model folder, fprune[hf]

``MODEL`` is ``package.module:factory``: a callable taking no arguments that
returns an ``nn.Module`` (or an ``nn.Module`` instance itself); the current
directory is importable.  ``prune`` writes the plan's JSON form and prints the
per-layer summary; ``apply`` loads a saved plan into a freshly built model,
prints the summary and saves the pruned GraphModule with ``torch.save`` (load
it with ``torch.load(path, weights_only=False)``).  ``hf prune`` streams with
:func:`fprune.hf.stream.prune_checkpoint` (``--in-memory``, ``--per-layer`` and
``--approximate`` load the model: :func:`fprune.hf.folder.prune_folder`): OUT is a model
folder that ``from_pretrained`` loads into the class of SRC.  Errors print one line,
``fprune: error: ...``, and exit with status 1; usage errors exit with 2.

``prune`` runs ``score_with(scorer, prune_outputs=, approximate=, strict=)``,
then ``ignore(outputs=[...], inputs=[...])`` with every ``--ignore-outputs``
and ``--ignore-inputs`` pattern, then ``topk_mask(sparsity, per_module={...})``
with the ``--per-module`` items in the order given (the first key matching a
group's producer wins).  A pattern matching no module is an error listing the
closest names.

Example:
    >>> from fprune.cli import main
    >>> main(["prune", "torch.nn:Identity", "--sparsity", "1.5", "--plan", "/dev/null"])
    2
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from fprune.errors import FpruneError, FpruneWarning, InvalidArgumentError, InvalidTypeError
from fprune.analysis import Options
from fprune.masks import topk_mask
from fprune.plan import load_plan, plan_from_scored, score_with
from fprune.rewrite import apply_patterns
from fprune.scores import score_bn_scale, score_fpgm, score_l1, score_l2, score_random
from fprune.select import ignore
from fprune.summary import summary
from fprune.types import Scorer

__all__ = ["main", "build_parser", "load_factory", "SCORERS"]

SCORERS: Mapping[str, Callable[[int], Scorer]] = MappingProxyType(
    {  # CLI name -> (seed -> scorer); Taylor needs gradients from data, so it is not offered here
        "l1": lambda seed: score_l1,
        "l2": lambda seed: score_l2,
        "fpgm": lambda seed: score_fpgm(),
        "bn_scale": lambda seed: score_bn_scale,
        "random": score_random,
    }
)


# --------------------------------------------------------------------------------------
# Argument types


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    try:
        topk_mask(value)
    except FpruneError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"expected positive ints separated by commas, e.g. 1,3,32,32; got {text!r}")
    return shape


def _pattern(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a module name or fnmatch glob, e.g. fc or 'layer4.*'; got ''")
    return text


def _module_sparsity(text: str) -> tuple[str, float]:
    """``PATTERN=SPARSITY`` (``'layer4.*=0.7'``) as the pair (pattern, sparsity)."""
    form = "expected PATTERN=SPARSITY, a module name or fnmatch glob and a number in [0, 1), e.g. 'layer4.*=0.7'"
    pattern, sep, value = text.rpartition("=")
    pattern = pattern.strip()
    if not sep or not pattern:
        raise argparse.ArgumentTypeError(f"{form}; got {text!r}")
    try:
        fraction = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{form}; got {text!r}, whose sparsity {value!r} is not a number") from None
    try:
        topk_mask(fraction)
    except FpruneError:
        raise argparse.ArgumentTypeError(f"{form}; got {text!r}, whose sparsity {value} is not in [0, 1)") from None
    return pattern, fraction


def _names(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _fractions(text: str) -> tuple[float, ...]:
    return tuple(_fraction(p) for p in _names(text))


# --------------------------------------------------------------------------------------
# Models


@contextmanager
def _cwd_importable() -> Iterator[None]:
    """Puts the current directory first on sys.path for one import, as ``python -m`` does."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def load_factory(spec: str) -> nn.Module:
    """Builds the model named by ``package.module:factory`` (``factory`` may be dotted).

    The attribute is called with no arguments unless it is already an ``nn.Module``.

    Raises:
        InvalidArgumentError: the spec is malformed, or the module or attribute does not exist.
        InvalidTypeError: the attribute does not build an ``nn.Module``.

    Example:
        >>> load_factory("torch.nn:Identity")
        Identity()
        >>> load_factory("torch.nn")
        Traceback (most recent call last):
        ...
        fprune.errors.InvalidArgumentError: model 'torch.nn' must be given as package.module:factory ...
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidArgumentError(
            f"model {spec!r} must be given as package.module:factory (a callable returning an nn.Module); "
            "e.g. torchvision.models:resnet18 or mymodels:build"
        )
    try:
        with _cwd_importable():
            obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgumentError(
            f"model {spec!r}: cannot import module {module_name!r} ({exc}); check the name, and run "
            "from the directory that contains it or install its package"
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InvalidArgumentError(
                f"model {spec!r}: {module_name!r} has no attribute {attr!r}; name a function or class "
                "that builds the model"
            )
        obj = getattr(obj, part)
    model = obj if isinstance(obj, nn.Module) else obj() if callable(obj) else obj
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(
            f"model {spec!r} must build an nn.Module; calling it returned {type(model).__name__}. "
            "Fix: point at a function or class that returns the model"
        )
    return model


def _example(shape: tuple[int, ...] | None) -> torch.Tensor | None:
    return None if shape is None else torch.zeros(shape)


@contextmanager
def _report_warnings() -> Iterator[None]:
    """Prints each FpruneWarning once, as ``fprune: warning: ...`` on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FpruneWarning)
        yield
    seen: dict[str, None] = {}
    for w in caught:
        if issubclass(w.category, FpruneWarning):
            seen.setdefault(str(w.message), None)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for message in seen:
        print(f"fprune: warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------
# Commands


def _cmd_demo(args: argparse.Namespace) -> int:
    from fprune.demo import DemoConfig, run_demo

    changes = {k: getattr(args, k) for k in ("seed", "epochs", "finetune_epochs", "methods", "sparsities")
               if getattr(args, k) is not None}
    config = DemoConfig(progress=not args.no_progress, recovery=not args.no_recovery, **changes)
    result = run_demo(args.out, config)
    print(result.table())
    for note in result.notes:
        print(f"fprune: note: {note}", file=sys.stderr)
    extra = " (with the retraining-free recovery table)" if result.recovery else ""
    print(f"fprune: wrote {result.report}{extra} and {result.plot} in {result.seconds:.0f} s", file=sys.stderr)
    return 0


def _per_module(pairs: Sequence[tuple[str, float]]) -> dict[str, float]:
    """The ``--per-module`` items as topk_mask's mapping, in command-line order; a pattern given twice raises."""
    out: dict[str, float] = {}
    for pattern, fraction in pairs:
        if pattern in out:
            raise InvalidArgumentError(
                f"--per-module gives the pattern {pattern!r} twice ({pattern}={out[pattern]:g} and "
                f"{pattern}={fraction:g}). Fix: give each pattern once; the first item matching a group wins."
            )
        out[pattern] = fraction
    return out


def _cmd_prune(args: argparse.Namespace) -> int:
    model = load_factory(args.model)
    example = _example(args.input_shape)
    score = score_with(SCORERS[args.scorer](args.seed), prune_outputs=args.prune_outputs,
                       approximate=args.approximate, strict=args.strict)
    leave_out = ignore(outputs=tuple(args.ignore_outputs or ()), inputs=tuple(args.ignore_inputs or ()))
    rule = topk_mask(args.sparsity, per_module=_per_module(args.per_module or ()))
    with _report_warnings():
        plan = plan_from_scored(rule, leave_out(score(model)))
        pruned = apply_patterns(plan)
    table = summary(model, pruned, example)
    text = plan.to_json()
    Path(args.plan).write_text(text + "\n", encoding="utf-8")
    print(table)
    print(f"fprune: wrote the plan to {args.plan}", file=sys.stderr)
    if args.save:
        torch.save(pruned, args.save)
        print(f"fprune: saved the pruned GraphModule to {args.save} "
              "(load with torch.load(path, weights_only=False))", file=sys.stderr)
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    text = Path(args.plan).read_text(encoding="utf-8")
    model = load_factory(args.model)
    options = Options(prune_outputs=args.prune_outputs, approximate=args.approximate)
    with _report_warnings():
        pruned = apply_patterns(load_plan(text, model, options))
    table = summary(model, pruned, _example(args.input_shape))
    torch.save(pruned, args.out)
    print(table)
    print(f"fprune: saved the pruned GraphModule to {args.out} "
          "(load with torch.load(path, weights_only=False))", file=sys.stderr)
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _size(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    number = text.strip().upper().rstrip("BIKMG")
    unit = text.strip().upper()[len(number):]
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"expected a size such as 1GB, 500MB or 2GiB, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return int(value)


def _cmd_hf_prune(args: argparse.Namespace) -> int:
    from fprune.hf.folder import prune_folder  # imports transformers only when it runs
    from fprune.hf.stream import prune_checkpoint

    if not any((args.heads, args.kv_heads, args.mlp, args.hidden)):
        raise InvalidArgumentError("fprune hf prune: give at least one of --heads, --kv-heads, --mlp, --hidden "
                                   "(each a fraction to remove, e.g. --mlp 0.3)")
    widths = dict(heads=args.heads, kv_heads=args.kv_heads, mlp=args.mlp, hidden=args.hidden)
    loads = args.in_memory or args.per_layer or args.approximate
    if (args.calibration is not None or args.scorer in ("activation", "wanda", "flap")) and loads:
        raise InvalidArgumentError("fprune hf prune: --calibration and the calibration scorers run streamed, a layer "
                                   "at a time; drop --in-memory, --per-layer and --approximate")
    if loads:
        report = prune_folder(args.source, args.out, **widths, scorer=args.scorer, seed=args.seed,
                              uniform=not args.per_layer, approximate=args.approximate, overwrite=args.overwrite,
                              progress=not args.no_progress)
    else:
        report = prune_checkpoint(args.source, args.out, **widths, scorer=args.scorer, seed=args.seed,
                                  max_shard_size=args.max_shard_size, overwrite=args.overwrite,
                                  progress=not args.no_progress, calibration=args.calibration,
                                  calibration_batch=args.calibration_batch, device=args.device)
    print(report.table())
    notes = f"; {len(report.notes)} notes on groups left whole in its fprune.json" if report.notes else ""
    loader = "fprune.hf.load loads it" if args.per_layer else "from_pretrained loads it"
    print(f"fprune: wrote {report.out} in {report.seconds:.1f} s ({loader}){notes}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``fprune`` command.

    Example:
        >>> build_parser().parse_args(["demo", "--out", "d"]).out
        'd'
    """
    from fprune import __version__

    parser = argparse.ArgumentParser(
        prog="fprune", description="Functional, exact structured pruning for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"fprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="prune a small CNN on scikit-learn's bundled digits with every scorer; write a report",
        description="Trains a small residual CNN on scikit-learn's digits, prunes it with L1, L2, FPGM, Taylor and "
                    "random scores at 30/50/70% sparsity, fine-tunes, and writes DIR/report.md and "
                    "DIR/accuracy_vs_macs.png. Needs pip install 'fprune[demo]'.",
    )
    demo.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    demo.add_argument("--seed", type=int, help="seed of the split, initialisation and shuffling (default 0)")
    demo.add_argument("--epochs", type=int, help="training epochs (default 12)")
    demo.add_argument("--finetune-epochs", type=int, help="fine-tune epochs per pruned model (default 3)")
    demo.add_argument("--methods", type=_names, help="comma-separated subset of L1,L2,FPGM,Taylor,random")
    demo.add_argument("--sparsities", type=_fractions, help="comma-separated sparsities (default 0.3,0.5,0.7)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    demo.add_argument("--no-recovery", action="store_true",
                      help="skip the retraining-free recovery table (calibration scorers x reconstruct)")
    demo.set_defaults(run=_cmd_demo)

    model_help = "package.module:factory, a callable returning the nn.Module (the current directory is importable)"
    shape_help = "shape of an example input to count MACs on, e.g. 1,3,32,32 (MACs are left out without it)"
    prune = sub.add_parser(
        "prune", help="prune a model, write the plan JSON and print the summary",
        description="Scores every prunable channel group of MODEL, prunes the given fraction of each, writes the "
                    "plan's JSON form and prints a per-layer summary.",
    )
    prune.add_argument("model", metavar="MODEL", help=model_help)
    prune.add_argument("--sparsity", type=_fraction, required=True, help="fraction of channels to prune, in [0, 1)")
    prune.add_argument("--scorer", choices=tuple(SCORERS), default="l1", help="channel importance (default l1)")
    prune.add_argument("--seed", type=int, default=0, help="seed of the random scorer (default 0)")
    prune.add_argument("--plan", required=True, metavar="PLAN.json", help="where to write the plan")
    prune.add_argument("--save", metavar="PRUNED.pt", help="also save the pruned GraphModule (torch.save)")
    prune.add_argument("--input-shape", type=_shape, metavar="SHAPE", help=shape_help)
    prune.add_argument("--prune-outputs", action="store_true", help="also prune channels that reach the output")
    prune.add_argument("--approximate", action="store_true",
                       help="also prune groups whose removal is not exact (e.g. a LayerNorm over them)")
    prune.add_argument("--strict", action="store_true",
                       help="an op fprune has no rule for, reading a group's channels, is an error (default: "
                            "the group is left unpruned with a warning)")
    prune.add_argument("--ignore-outputs", action="append", type=_pattern, metavar="PATTERN",
                       help="keep the output channels of the modules this name or fnmatch glob selects (a name "
                            "covers the modules inside it); repeatable")
    prune.add_argument("--ignore-inputs", action="append", type=_pattern, metavar="PATTERN",
                       help="keep the input width of the modules this name or glob selects; repeatable")
    prune.add_argument("--per-module", action="append", type=_module_sparsity, metavar="PATTERN=SPARSITY",
                       help="prune this fraction of the groups whose producer the name or glob selects, instead "
                            "of --sparsity; repeatable, the first matching item wins, e.g. 'layer4.*=0.7'")
    prune.set_defaults(run=_cmd_prune)

    apply = sub.add_parser(
        "apply", help="apply a saved plan JSON to a model and save the pruned GraphModule",
        description="Loads PLAN.json into a freshly built MODEL (the architecture it was computed for), prunes it, "
                    "prints the summary and saves the pruned GraphModule with torch.save.",
    )
    apply.add_argument("model", metavar="MODEL", help=model_help)
    apply.add_argument("plan", metavar="PLAN.json", help="a plan written by fprune prune or Plan.to_json()")
    apply.add_argument("--out", required=True, metavar="PRUNED.pt", help="where to save the pruned GraphModule")
    apply.add_argument("--input-shape", type=_shape, metavar="SHAPE", help=shape_help)
    apply.add_argument("--prune-outputs", action="store_true", help="the plan prunes channels that reach the output")
    apply.add_argument("--approximate", action="store_true",
                       help="the plan prunes groups whose removal is not exact (made with prune --approximate)")
    apply.set_defaults(run=_cmd_apply)

    hf = sub.add_parser("hf", help="Hugging Face model folders (needs pip install 'fprune[hf]')",
                        description="Commands on Hugging Face model folders; needs pip install 'fprune[hf]'.")
    hf_sub = hf.add_subparsers(dest="hf_command", metavar="COMMAND")
    hf.set_defaults(run=lambda args: _usage(hf))
    hf_prune = hf_sub.add_parser(
        "prune", help="prune a model folder into another, same class, reloadable",
        description="Loads the model in SRC (a save_pretrained folder), removes the given fraction of each width "
                    "in every layer (the lowest-scored heads, KV groups, MLP channels, hidden channels), and "
                    "writes OUT, which from_pretrained loads into the same class. OUT is written to a temporary "
                    "folder and renamed at the end, so a failure leaves nothing half-written.",
    )
    hf_prune.add_argument("source", metavar="SRC", help="model folder: config.json and safetensors shards")
    hf_prune.add_argument("out", metavar="OUT", help="folder to write the pruned model to (must not exist)")
    for name, what in (("heads", "query heads (with grouped-query attention: evenly within each KV head)"),
                       ("kv-heads", "key/value heads, each with the query heads that read it"),
                       ("mlp", "MLP (intermediate) channels"), ("hidden", "hidden (residual) channels")):
        hf_prune.add_argument(f"--{name}", type=_fraction, default=0.0, metavar="F",
                              help=f"fraction of the {what} to remove in every layer, in [0, 1) (default 0)")
    hf_prune.add_argument("--scorer", choices=("l1", "l2", "random", "activation", "wanda", "flap"), default="l1",
                          help="channel importance (default l1); activation, wanda and flap need --calibration")
    hf_prune.add_argument("--calibration", metavar="FILE", default=None,
                          help="safetensors file of token ids 'input_ids' [rows, seq] for a calibration scorer; the "
                               "model runs over them one layer at a time, holding one layer's weights")
    hf_prune.add_argument("--calibration-batch", type=int, default=8, metavar="N",
                          help="rows of --calibration per batch (default 8)")
    hf_prune.add_argument("--device", default="cpu", help="where the layers run for --calibration (default cpu)")
    hf_prune.add_argument("--seed", type=int, default=0, help="seed of the random scorer (default 0)")
    hf_prune.add_argument("--per-layer", action="store_true",
                          help="rank each width across all layers, so layers keep different counts; OUT then "
                               "loads with fprune.hf.load (plain from_pretrained refuses its shapes)")
    hf_prune.add_argument("--approximate", action="store_true",
                          help="LayerNorm families (BERT, DistilBERT, ViT): prune heads and hidden together, "
                               "inexactly (their classes tie hidden = heads x head size)")
    hf_prune.add_argument("--in-memory", action="store_true",
                          help="load the whole model and check the rebuilt class against the pruned program "
                               "(default: stream tensor by tensor, bit for bit the same; --per-layer and "
                               "--approximate always load it)")
    hf_prune.add_argument("--max-shard-size", type=_size, default=2**30, metavar="SIZE",
                          help="bytes per output shard when streaming, e.g. 1GB, 500MB (default 1GiB)")
    hf_prune.add_argument("--overwrite", action="store_true",
                          help="replace OUT if it exists (only once the new model is fully written)")
    hf_prune.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    hf_prune.set_defaults(run=_cmd_hf_prune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``fprune`` command line; returns the exit status.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 when fprune (or a file operation) reports an error, 2 on a usage error.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        fprune 0.1.0
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status: int = args.run(args)
    except (FpruneError, OSError) as exc:
        print(f"fprune: error: {exc}", file=sys.stderr)
        return 1
    return status
