"""The torch.export path on timm: models torch.fx cannot read, and one plan whatever the front-end.

Runs only under the benchmark environment ``.venv-bench`` (timm installed ``--no-deps`` beside a
CPU torch; see ``benchmarks/setup_bench_env.sh``).  Nothing is downloaded (``pretrained=False``).
All models are float64 and in eval mode; the input is ``torch.randn(1, 3, H, W)`` at the model's
default resolution (``default_cfg["input_size"]``).

* **Part A** -- timm models torch.fx cannot trace (``crossvit_tiny_240``, ``twins_svt_small``,
  ``mobilevit_xxs``, ``mobilevitv2_050``, ``tiny_vit_5m_224``) and ``vit_small_patch16_224`` (the
  timing target), pruned through ``fprune.export``: the export call, analysis+score+mask
  (``topk_mask(0.3)(score_l1(program))``, as ``bench_export.py``) and ``apply_patterns`` (a new
  ExportedProgram) are timed (median of --reps, torch threads 1) and reported as ratios to the
  export; parameters kept, groups found / prunable (``analyze(program).groups``) and the exactness
  error ``max |new_program.module()(x) - zeroed(x)|``, ``zeroed`` being the original with every
  slice of ``plan.params()`` set to zero (``tests/model_strategies.zero_slices``).  Also records the
  exception ``fprune.trace(model)`` raises (torch.fx cannot read them).
* **Part B** -- timm models both front-ends read: the plan JSON from torch.fx
  (``topk_mask(0.3)(score_l1(model))``) and from torch.export (the same on ``fprune.export``) must
  be byte-identical; when not, the first differing parameter entry is printed.

A failure inside fprune is recorded (type, message, last fprune frame) and the run goes on.

    .venv-bench/bin/python benchmarks/bench_export_timm.py [--reps 3] [--markdown OUT.md]
"""

from __future__ import annotations

import sys
import types

# torchvision from PyPI is CUDA-linked: these two modules register kernels through its C
# extension.  Stub them before anything imports torchvision (timm does).
for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(_name, types.ModuleType(_name))

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded at run time

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fprune  # noqa: E402
from fprune import analyze, apply_patterns, export, score_l1, topk_mask  # noqa: E402
from bench_export import _median  # noqa: E402

PART_A = ["crossvit_tiny_240", "twins_svt_small", "mobilevit_xxs", "mobilevitv2_050", "tiny_vit_5m_224",
          "vit_small_patch16_224"]
FX_UNREADABLE = set(PART_A[:5])
PART_B = ["resnet18", "vit_tiny_patch16_224", "mobilenetv3_small_100", "regnetx_002", "efficientnet_b0",
          "convnext_atto", "deit_tiny_patch16_224"]
FPRUNE_DIR = str(Path(fprune.__file__).resolve().parent)


def _zero_slices(model: torch.nn.Module, params: dict[str, list[dict[str, Any]]]) -> torch.nn.Module:
    """``tests/model_strategies.zero_slices``, used when that module cannot be imported (it needs
    hypothesis, which ``.venv-bench`` lacks); same body."""
    try:
        from model_strategies import zero_slices

        return zero_slices(model, params)
    except ImportError:
        pass
    copy_ = copy.deepcopy(model).double()
    tensors = dict(copy_.named_parameters()) | dict(copy_.named_buffers())
    with torch.no_grad():
        for fqn, entries in params.items():
            tensor = tensors[fqn]
            for entry in entries:
                removed = torch.ones(tensor.shape[entry["dim"]], dtype=torch.bool)
                removed[entry["keep"]] = False
                tensor.index_fill_(entry["dim"], removed.nonzero().squeeze(1), 0.0)
    return copy_


def _failure(exc: BaseException) -> str:
    """``Type: first line of message @ last fprune frame (file:line)``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(FPRUNE_DIR)]
    where = (f"{os.path.relpath(frames[-1].filename, Path(FPRUNE_DIR).parent)}:{frames[-1].lineno}"
             if frames else "no fprune frame")
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(msg) > 300:
        msg = msg[:300] + "..."
    return f"{type(exc).__name__}: {msg} @ {where}"


def _build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval().double()
    _, h, w = model.default_cfg["input_size"]
    x = torch.randn(1, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return model, x


def _quiet(fn: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _block_summary(groups: Any) -> str:
    """The reasons of the groups kept whole, counted by kind and op (``node 'x' (op 'target')``)."""
    import collections
    import re

    reasons: collections.Counter[str] = collections.Counter()
    for g in groups:
        if g.prunable():
            continue
        kinds = set()
        for b in g.blocks:
            if b.kind == "fold":  # tolerated by default
                continue
            op = re.search(r"\((\w+) '([^']*)'\)", b.message)
            kinds.add(f"{b.kind}: {op.group(2) if op else b.node}")
        reasons.update(kinds)
    return ", ".join(f"{k} x{n}" for k, n in reasons.most_common(6))


def part_a(reps: int, out: list[str], failures: list[str]) -> None:
    blocked: dict[str, str] = {}
    out.append("## Part A: timm models torch.fx cannot read, through torch.export (float64)\n")
    out.append(f"torch {torch.__version__}, threads 1, median of {reps}; analysis+score+mask = "
               "`topk_mask(0.3)(score_l1(program))`\n")
    out.append("| model | input | fx trace | export s | analysis+score+mask s | ratio | apply s | ratio "
               "| params kept | groups (prunable/found) | max err |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in PART_A:
        row: dict[str, str] = {}
        stage = "build"
        try:
            model, x = _build(name)
            row["input"] = "x".join(map(str, x.shape[1:]))
            stage = "fprune.trace"
            try:
                _quiet(lambda: fprune.trace(model))
                row["fx"] = "traced" + (" (UNEXPECTED)" if name in FX_UNREADABLE else "")
            except Exception as exc:  # noqa: BLE001
                row["fx"] = f"fails: {type(exc).__name__}"
                failures.append(f"[A {name}] expected fx failure: {_failure(exc)}"
                                + (f" <- {type(exc.__cause__).__name__}: "
                                   f"{str(exc.__cause__).strip().splitlines()[0][:200]}" if exc.__cause__ else ""))
            stage = "export"
            t_export, ep = _median(lambda: _quiet(lambda: export(model, (x,))), reps)
            row["export"] = f"{t_export:.3f}"
            stage = "analyze"
            groups = _quiet(lambda: analyze(ep)).groups
            row["groups"] = f"{sum(g.prunable() for g in groups)}/{len(groups)}"
            blocked[name] = _block_summary(groups)
            stage = "score+mask"
            t_plan, plan = _median(lambda: _quiet(lambda: topk_mask(0.3)(score_l1(ep))), reps)
            row["plan"], row["plan_r"] = f"{t_plan:.3f}", f"{t_plan / t_export:.2f}x"
            stage = "apply_patterns"
            t_apply, small = _median(lambda: _quiet(lambda: apply_patterns(plan)), reps)
            row["apply"], row["apply_r"] = f"{t_apply:.3f}", f"{t_apply / t_export:.2f}x"
            before = sum(t.numel() for t in ep.state_dict.values())
            after = sum(t.numel() for t in small.state_dict.values())
            row["kept"] = f"{after / before:.1%}"
            stage = "run pruned program"
            params = plan.params()
            ref = _zero_slices(model, params)
            with torch.no_grad():
                got, want = small.module()(x), ref(x)
            err = float((got - want).abs().max())
            row["err"] = f"{err:.1e}" + (" **>1e-9**" if err > 1e-9 else "")
        except Exception as exc:  # noqa: BLE001
            failures.append(f"[A {name}] {stage}: {_failure(exc)}")
            row.setdefault("err", f"FAILED in {stage}")
        g = row.get
        out.append(f"| {name} | {g('input', '-')} | {g('fx', '-')} | {g('export', '-')} | {g('plan', '-')} | "
                   f"{g('plan_r', '-')} | {g('apply', '-')} | {g('apply_r', '-')} | {g('kept', '-')} | "
                   f"{g('groups', '-')} | {g('err', '-')} |")
        print(out[-1], flush=True)
    out.append("\nGroups kept whole, by reason (kind: op; a group counts once per reason):\n")
    out.extend(f"- {name}: {why}" for name, why in blocked.items())


def _first_difference(a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]) -> str:
    for key in list(a) + [k for k in b if k not in a]:
        if key not in b:
            return f"`{key}` only in fx: {json.dumps(a[key])[:200]}"
        if key not in a:
            return f"`{key}` only in export: {json.dumps(b[key])[:200]}"
        if a[key] != b[key]:
            return f"`{key}` fx {json.dumps(a[key])[:150]} vs export {json.dumps(b[key])[:150]}"
    if list(a) != list(b):
        return f"same entries, different order: fx {list(a)[:5]}... vs export {list(b)[:5]}..."
    return "same parsed content (formatting only)"


def part_b(out: list[str], failures: list[str]) -> None:
    out.append("\n## Part B: one plan whatever the front-end (torch.fx vs torch.export, float64)\n")
    out.append("| model | fx groups (prunable/found) | export groups (prunable/found) | pruned params (fx/export) "
               "| JSON byte-identical | first difference |")
    out.append("|---|---:|---:|---:|---|---|")
    for name in PART_B:
        stage = "build"
        cells = ["-", "-", "-", "-", ""]
        try:
            model, x = _build(name)
            stage = "fx plan"
            fx_groups = _quiet(lambda: analyze(model)).groups
            cells[0] = f"{sum(g.prunable() for g in fx_groups)}/{len(fx_groups)}"
            fx_plan = _quiet(lambda: topk_mask(0.3)(score_l1(model)))
            stage = "export"
            ep = _quiet(lambda: export(model, (x,)))
            stage = "export plan"
            ex_groups = _quiet(lambda: analyze(ep)).groups
            cells[1] = f"{sum(g.prunable() for g in ex_groups)}/{len(ex_groups)}"
            ex_plan = _quiet(lambda: topk_mask(0.3)(score_l1(ep)))
            stage = "to_json"
            a, b = fx_plan.to_json(), ex_plan.to_json()
            pa, pb = json.loads(a)["params"], json.loads(b)["params"]
            cells[2] = f"{len(pa)}/{len(pb)}"
            if a == b:
                cells[3] = "yes"
            else:
                cells[3] = "**NO**"
                cells[4] = _first_difference(pa, pb)
                fx_names = {g.name: g for g in fx_groups}
                ex_names = {g.name: g for g in ex_groups}
                same = True
                for gname in list(fx_names) + [k for k in ex_names if k not in fx_names]:
                    fg, eg = fx_names.get(gname), ex_names.get(gname)
                    if (fg is None or eg is None or fg.prunable() != eg.prunable() or fg.size != eg.size
                            or set(fg.members) != set(eg.members)):
                        same = False
                        def desc(g: Any) -> str:
                            if g is None:
                                return "absent"
                            return f"prunable={g.prunable()} size={g.size} members={len(g.members)} why={g.why_not()[:200]!r}"
                        cells[4] += f"; first differing group `{gname}`: fx {desc(fg)} | export {desc(eg)}"
                        break
                if same:
                    cells[4] += "; groups agree (same names, sizes, prunability, member sets; member order differs)"
        except Exception as exc:  # noqa: BLE001
            failures.append(f"[B {name}] {stage}: {_failure(exc)}")
            cells[3] = cells[3] if cells[3] != "-" else f"FAILED in {stage}"
        out.append(f"| {name} | " + " | ".join(cells) + " |")
        print(out[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--markdown", help="also write the tables and failures to this file")
    parser.add_argument("--part", choices=["A", "B", "both"], default="both")
    ns = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import timm

    out: list[str] = [f"# fprune torch.export on timm {timm.__version__} (torch {torch.__version__})\n"]
    failures: list[str] = []
    t0 = time.perf_counter()
    if ns.part in ("A", "both"):
        part_a(ns.reps, out, failures)
    if ns.part in ("B", "both"):
        part_b(out, failures)
    out.append("\n## Failures and expected torch.fx failures\n")
    out.extend(f"- {f}" for f in failures) if failures else out.append("none")
    out.append(f"\ntotal {time.perf_counter() - t0:.0f} s")
    text = "\n".join(out)
    print("\n" + text)
    if ns.markdown:
        Path(ns.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
