"""Perplexity right after pruning, without fine-tuning: scorers x recovery on a byte-level Llama (issue #16).

A ``LlamaForCausalLM`` (vocab 256: a token is a byte; hidden 128, intermediate 352, 4 layers, 8
query heads over 2 key/value heads of size 16, untied, float32) is trained here with AdamW for
``--steps`` steps on random windows of the Python standard library's own ``.py`` sources
(``sysconfig.get_paths()["stdlib"]`` without ``site-packages``, files of at most 256 KB, sorted;
every 10th file is held out; each side shuffled with the seed, then the first ``--train-mb`` MB and
``--eval-kb`` KB taken).  Held-out perplexity is ``exp`` of the mean next-byte cross-entropy over
the non-overlapping ``--seq-len`` windows of the held-out text.  Then, with one program
``hf.trace(model, seq_len=S, batch=8)`` and ``calib`` = ``--calib`` batches ``{"input_ids": 8 x S}``
of training windows (the scorers and ``reconstruct`` see the same ones), for every width setting,
scorer and recovery:

    pipe(program, scorer, hf.widths(**setting), [reconstruct(calib, method)], hf.apply)

and the perplexity of that ``LlamaForCausalLM``.  Settings: ``mlp=0.5``, ``hidden=0.25`` and
``heads=0.25`` (each key/value head keeps 3 of its 4 query heads: 6 of 8).  ``LlamaConfig``
refuses 6 heads at hidden 128 (it requires ``hidden_size % num_attention_heads == 0``, though
``head_dim`` is explicit), so that setting is built with ``hf.widths(heads=0.25,
valid_config=False)`` and ``apply_patterns``: the pruned ExportedProgram, which computes the same
function the class would, is evaluated over the held-out windows in batches of its traced 8 (the
last batch padded with repeats that are not counted).  Scorers: l1, activation (mean |X|), wanda, flap.  Recovery: none, bias
(FLAP's compensation: Llama's Linears have no bias, so it leaves them as pruned), lstsq
(``damp=0.01``).  Each scorer scores the program once; its scores serve every setting.

Checked and printed: (1) lstsq at least halves the excess ``ppl / ppl_dense - 1`` of plain
pruning, at every setting (the best scorer with lstsq against the best without; each scorer's
ratio is in the table); (2) the best activation-aware scorer beats L1 without recovery at 2 of
the 3 settings; (3) ``reconstruct``'s median time is at most 5x one forward pass of the dense
model over the calibration batches.

Torch-Pruning, where it is importable, prunes the same trained model at each setting with L1
magnitude (``GroupMagnitudeImportance(p=1)``, its LLM example's recipe: ``pruning_ratio_dict`` on
the MLP's gate/up projections, on the embedding for the hidden width, ``num_heads`` with
``head_pruning_ratio`` for the KV groups), each in a child process killed after ``--tp-timeout``
seconds (it has been seen to hang on grouped-query attention).  It is not a dependency; e.g.
``.venv/bin/pip install --no-deps --target /tmp/tp torch-pruning==1.6.1`` and ``PYTHONPATH=/tmp/tp``.

    .venv/bin/python benchmarks/bench_lm.py [--steps 900] [--calib 8] [--seed 0] [--tp-timeout 120]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import pathlib
import platform
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from toolz import pipe
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM

from fprune import apply_patterns, hf, reconstruct, score_activation, score_flap, score_l1, score_wanda
from fprune.plan import Plan

CALIB_BATCH = 8
EVAL_BATCH = 64
MAX_FILE_BYTES = 256 * 1024


def stdlib_text(train_bytes: int, eval_bytes: int, seed: int) -> tuple[Tensor, Tensor, int]:
    """Train and held-out byte streams from the standard library's sources, split by file."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(f for f in root.rglob("*.py")
                   if "site-packages" not in f.relative_to(root).parts and f.stat().st_size <= MAX_FILE_BYTES)
    held, train = files[::10], [f for i, f in enumerate(files) if i % 10]

    def stream(chosen: list[pathlib.Path], budget: int) -> Tensor:
        chosen = list(chosen)
        random.Random(seed).shuffle(chosen)
        parts: list[bytes] = []
        size = 0
        for f in chosen:
            if size >= budget:
                break
            parts.append(f.read_bytes() + b"\n")
            size += len(parts[-1])
        return torch.frombuffer(bytearray(b"".join(parts)[:budget]), dtype=torch.uint8).long()

    return stream(train, train_bytes), stream(held, eval_bytes), len(files)


def windows(text: Tensor, seq_len: int, count: int, generator: torch.Generator) -> Tensor:
    """`count` windows of `seq_len` bytes at random offsets of `text`."""
    starts = torch.randint(0, len(text) - seq_len, (count,), generator=generator)
    return torch.stack([text[s:s + seq_len] for s in starts.tolist()])


def build_model(seq_len: int) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=max(256, seq_len), tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def train(model: nn.Module, text: Tensor, *, steps: int, seq_len: int, batch: int, lr: float, seed: int) -> float:
    """AdamW with linear warm-up and cosine decay on random windows; returns the seconds taken."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min((i + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(i, steps) / steps))))
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        ids = windows(text, seq_len, batch, generator)
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    return time.perf_counter() - start


def perplexity(model: nn.Module, held_out: Tensor) -> float:
    """exp of the mean next-byte cross-entropy over the given windows."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(held_out), EVAL_BATCH):
            ids = held_out[i:i + EVAL_BATCH]
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                           reduction="sum"))
    return math.exp(total / (held_out.shape[0] * (held_out.shape[1] - 1)))


def unigram_perplexity(train_text: Tensor, held_out: Tensor) -> float:
    """Perplexity of the training bytes' frequencies (add-one smoothed) on the held-out windows."""
    counts = torch.bincount(train_text, minlength=256).double() + 1
    log_p = (counts / counts.sum()).log()
    return math.exp(-float(log_p[held_out[:, 1:].reshape(-1)].mean()))


def program_perplexity(program: Any, held_out: Tensor) -> float:
    """:func:`perplexity` of a pruned ExportedProgram, which runs its traced batch of CALIB_BATCH windows."""
    module = program.module()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(held_out), CALIB_BATCH):
            ids = held_out[i:i + CALIB_BATCH]
            real = len(ids)
            if real < CALIB_BATCH:  # padded with repeats of the first window, not counted
                ids = torch.cat([ids, ids[:1].expand(CALIB_BATCH - real, -1)])
            logits = module(input_ids=ids, use_cache=False).logits[:real, :-1]
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:real, 1:].reshape(-1),
                                           reduction="sum"))
    return math.exp(total / (held_out.shape[0] * (held_out.shape[1] - 1)))


def evaluator(setting: hf.Widths) -> Callable[[Plan, Tensor], float]:
    """How a plan of `setting` is evaluated: in its own class, or as the pruned program (valid_config=False)."""
    if setting.valid_config:
        return lambda plan, held_out: perplexity(hf.apply(plan), held_out)
    return lambda plan, held_out: program_perplexity(apply_patterns(plan), held_out)


def torch_pruning_child(label: str, state: str, held: str, seq_len: int) -> None:
    """Prunes the saved model with Torch-Pruning at one setting; prints its perplexity as JSON."""
    import torch_pruning as tp  # type: ignore[import-not-found]

    warnings.simplefilter("ignore")
    model: Any = build_model(seq_len)
    model.load_state_dict(torch.load(state))
    model.eval()
    held_out = torch.load(held)
    layers = list(model.model.layers)
    before = sum(p.numel() for p in model.parameters())
    extra: dict[str, Any] = {}
    if label.startswith("mlp="):
        ratio = float(label.partition("=")[2])
        extra["pruning_ratio_dict"] = {m: ratio for layer in layers for m in (layer.mlp.gate_proj, layer.mlp.up_proj)}
        extra["ignored_layers"] = [model.lm_head, model.model.embed_tokens, *(layer.self_attn for layer in layers)]
    elif label.startswith("hidden="):
        extra["pruning_ratio_dict"] = {model.model.embed_tokens: float(label.partition("=")[2])}
    else:  # heads=F: its head pruning at that ratio over q, k and v (num_heads of each)
        extra["num_heads"] = {m: n for layer in layers for m, n in ((layer.self_attn.q_proj, 8),
                                                                    (layer.self_attn.k_proj, 2),
                                                                    (layer.self_attn.v_proj, 2))}
        extra |= {"prune_num_heads": True, "prune_head_dims": False,
                  "head_pruning_ratio": float(label.partition("=")[2]), "ignored_layers": [model.lm_head]}
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, example_inputs=held_out[:1], importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=0.0, output_transform=lambda out: out.logits, **extra)
    pruner.step()
    seconds = time.perf_counter() - start
    kept = sum(p.numel() for p in model.parameters()) / before
    print(json.dumps({"ppl": perplexity(model, held_out), "seconds": seconds, "kept": kept}))


def torch_pruning_rows(model: nn.Module, held_out: Tensor, labels: list[str], seq_len: int,
                       timeout: float) -> dict[str, str]:
    """Torch-Pruning's perplexity per setting (or why there is none), each in a child process."""
    if importlib.util.find_spec("torch_pruning") is None:
        return {}
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        state, held = f"{tmp}/model.pt", f"{tmp}/held.pt"
        torch.save(model.state_dict(), state)
        torch.save(held_out, held)
        for label in labels:
            command = [sys.executable, __file__, "--tp-child", label, state, held, str(seq_len)]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                out[label] = f"no result in {timeout:.0f} s (killed)"
                continue
            if done.returncode:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                out[label] = f"raised: {last[:120]}"
                continue
            found = json.loads(done.stdout.strip().splitlines()[-1])
            out[label] = f"{found['ppl']:.3f} ({found['kept']:.1%} of the parameters kept, {found['seconds']:.2f} s)"
    return out


def timed(stage: Callable[[Plan], Plan], plan: Plan) -> tuple[Plan, float]:
    start = time.perf_counter()
    out = stage(plan)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=900, help="training steps (default 900)")
    parser.add_argument("--seq-len", type=int, default=128, help="window length in bytes (default 128)")
    parser.add_argument("--batch", type=int, default=32, help="training windows per step (default 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (default 3e-3)")
    parser.add_argument("--calib", type=int, default=8,
                        help=f"calibration batches of {CALIB_BATCH} windows (default 8)")
    parser.add_argument("--train-mb", type=float, default=4.0, help="training text in MB (default 4)")
    parser.add_argument("--eval-kb", type=float, default=200.0, help="held-out text in KB (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tp-timeout", type=float, default=120.0,
                        help="seconds before a Torch-Pruning run is killed (default 120)")
    parser.add_argument("--tp-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tp_child:
        label, state, held, seq_len = args.tp_child
        torch_pruning_child(label, state, held, int(seq_len))
        return
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    seq = args.seq_len
    train_text, eval_text, n_files = stdlib_text(int(args.train_mb * 1e6), int(args.eval_kb * 1e3), args.seed)
    held_out = eval_text[: len(eval_text) // seq * seq].reshape(-1, seq)
    model = build_model(seq)
    train_seconds = train(model, train_text, steps=args.steps, seq_len=seq, batch=args.batch, lr=args.lr,
                          seed=args.seed)
    dense = perplexity(model, held_out)
    generator = torch.Generator().manual_seed(args.seed + 1)
    calib: list[dict[str, Tensor]] = [{"input_ids": windows(train_text, seq, CALIB_BATCH, generator)}
                                      for _ in range(args.calib)]
    forwards = []
    with torch.no_grad():
        for _ in range(3):
            start = time.perf_counter()
            for b in calib:
                model(**b, use_cache=False)
            forwards.append(time.perf_counter() - start)
    forward = statistics.median(forwards)

    program = hf.trace(model, seq_len=seq, batch=CALIB_BATCH)
    scorers: dict[str, Any] = {"l1": score_l1, "activation": score_activation(calib), "wanda": score_wanda(calib),
                               "flap": score_flap(calib)}
    scored = {name: scorer(program) for name, scorer in scorers.items()}
    settings = [hf.widths(mlp=0.5), hf.widths(heads=0.25, valid_config=False), hf.widths(hidden=0.25)]
    note = ("heads=0.25 keeps 6 of 8 query heads (3 per key/value head), which LlamaConfig refuses at hidden 128; "
            "its rows evaluate the pruned ExportedProgram (apply_patterns), the same function")

    params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, Python "
          f"{platform.python_version()}, torch threads {torch.get_num_threads()}")
    print(f"data: {n_files} stdlib .py files, every 10th held out; {len(train_text) / 1e6:.1f} MB train, "
          f"{held_out.numel() / 1e3:.0f} KB held out ({len(held_out)} windows of {seq})")
    print(f"model: LlamaForCausalLM, {params / 1e6:.2f}M parameters, trained {args.steps} steps x {args.batch} "
          f"windows of {seq} in {train_seconds:.0f} s")
    print(f"dense held-out perplexity {dense:.3f} (unigram {unigram_perplexity(train_text, held_out):.2f}); "
          f"{len(calib)} calibration batches of {CALIB_BATCH} x {seq} from the training text")
    if note:
        print(f"attention: {note}")
    print()
    print("| setting | scorer | none | bias | lstsq | (lstsq/dense-1)/(none/dense-1) |")
    print("|---|---|---:|---:|---:|---:|")

    def excess(ppl: float) -> float:
        return ppl / dense - 1

    results: dict[tuple[str, str], dict[str, float]] = {}
    solve_times: dict[str, list[float]] = {"bias": [], "lstsq": []}
    for setting in settings:
        label = repr(setting).removeprefix("widths(").removesuffix(")").removesuffix(", valid_config=False")
        evaluate = evaluator(setting)
        for name in scorers:
            plan = setting(scored[name])
            row = {"none": evaluate(plan, held_out)}
            for method in ("bias", "lstsq"):
                solved, seconds = timed(reconstruct(calib, method), plan)
                solve_times[method].append(seconds)
                row[method] = evaluate(solved, held_out)
            results[label, name] = row
            print(f"| {label} | {name} | {row['none']:.3f} | {row['bias']:.3f} | {row['lstsq']:.3f} | "
                  f"{excess(row['lstsq']) / excess(row['none']):.2f} |")

    labels = list(dict.fromkeys(label for label, _ in results))
    print(f"\ndense: {dense:.3f}")
    if all(r["bias"] == r["none"] for r in results.values()):
        print("bias: identical to none in every row (no Linear of Llama has a bias to hold the compensation)")
    print("\nTargets:")
    met = 0
    for label in labels:
        rows = {name: results[label, name] for name in scorers}
        best_none = min(rows, key=lambda n: rows[n]["none"])
        best_lstsq = min(rows, key=lambda n: rows[n]["lstsq"])
        ratio = excess(rows[best_lstsq]["lstsq"]) / excess(rows[best_none]["none"])
        halved = sum(excess(r["lstsq"]) <= 0.5 * excess(r["none"]) for r in rows.values())
        met += ratio <= 0.5
        print(f"- (1) {label}: best lstsq ({best_lstsq}, {rows[best_lstsq]['lstsq']:.3f}) vs best none "
              f"({best_none}, {rows[best_none]['none']:.3f}): excess ratio {ratio:.2f} "
              f"{'<=' if ratio <= 0.5 else '>'} 0.5; {halved}/{len(rows)} scorers halve their own")
    print(f"  (1) lstsq halves the excess at all {len(labels)} settings: {'met' if met == len(labels) else 'NOT met'} "
          f"({met}/{len(labels)})")
    wins = 0
    for label in labels:
        aware = min(("activation", "wanda", "flap"), key=lambda n: results[label, n]["none"])
        l1, other = results[label, "l1"]["none"], results[label, aware]["none"]
        wins += other < l1
        print(f"- (2) {label}: best activation-aware {aware} {other:.3f} vs l1 {l1:.3f} (none): "
              f"{'beats' if other < l1 else 'does not beat'} L1")
    print(f"  (2) beats L1 at >= 2 of {len(labels)} settings: {'met' if wins >= 2 else 'NOT met'} "
          f"({wins}/{len(labels)})")
    lstsq_median = statistics.median(solve_times["lstsq"])
    bias_median = statistics.median(solve_times["bias"])
    print(f"- (3) reconstruct: lstsq median {lstsq_median:.2f} s = {lstsq_median / forward:.1f}x, bias median "
          f"{bias_median:.2f} s = {bias_median / forward:.1f}x one forward pass over the calibration batches "
          f"({forward:.3f} s, median of 3): <= 5x {'met' if lstsq_median <= 5 * forward else 'NOT met'}")
    tp_rows = torch_pruning_rows(model, held_out, labels, seq, args.tp_timeout)
    if not tp_rows:
        print("\nTorch-Pruning: not run (not importable here; see the module docstring)")
    for label, found in tp_rows.items():
        print(f"- Torch-Pruning {label}, L1 magnitude, no recovery: {found} (fprune l1 none: "
              f"{results[label, 'l1']['none']:.3f})")
    print(f"total time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
