"""Survey: what the torch.export front-end reads, and what it does not, on Hugging Face families.

For each transformers family, a tiny model is built from a config with random weights (hidden 64,
2 layers, 4 heads, 2 kv heads where the family has GQA, vocab 256, intermediate 128, 128
positions; nothing is downloaded), exported with ``fprune.export`` and read with
``fprune.analyze``.  The survey reports, per family:

* the export time;
* the blocks of kind ``"unknown"`` over every channel group (the ops that keep channels whole),
  with their reasons and the op each names;
* the ``call_function`` targets of the lifted graph (``fprune.frontends.aten_export.lift``) that
  are still raw ``torch.ops`` OpOverloads, i.e. the aten ops the front-end does not translate;
* whether ``apply_patterns(topk_mask(0.25)(score_l1(program)))`` succeeds, the share of
  parameters kept, and whether the pruned program still runs on the same inputs.

A second table lists every untranslated op once, with the families where it appears, one example
node, the module that called it and the source line that produced it (from the node's
``stack_trace``), so that the op's role in the model can be read off.

Every failure is recorded (exception type and first line) and the survey goes on.

    .venv/bin/python benchmarks/hf_export_survey.py [--family llama --family gpt2 ...] [--seq 16]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

import fprune
from fprune.frontends.aten_export import lift

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, INTER, POS = 256, 64, 2, 4, 2, 128, 128
HEAD_DIM = HIDDEN // HEADS
# ids 0..2 are kept for special tokens so that no config's default (e.g. pad 32000) is out of range
SPECIAL = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
DECODER_COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                      num_key_value_heads=KV_HEADS, intermediate_size=INTER, max_position_embeddings=POS,
                      head_dim=HEAD_DIM, **SPECIAL)
ENCODER_COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                      intermediate_size=INTER, max_position_embeddings=POS, **SPECIAL)

# family -> (model kind, config kwargs).  kind: "causal" (AutoModelForCausalLM), "base" (AutoModel),
# "seq2seq" (AutoModelForSeq2SeqLM, also fed decoder_input_ids).
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("causal", dict(DECODER_COMMON)),
    "mistral": ("causal", dict(DECODER_COMMON, sliding_window=None)),
    "qwen2": ("causal", dict(DECODER_COMMON)),
    "qwen3": ("causal", dict(DECODER_COMMON)),
    "gemma": ("causal", dict(DECODER_COMMON)),
    "gemma2": ("causal", dict(DECODER_COMMON, query_pre_attn_scalar=HEAD_DIM, sliding_window=64)),
    "phi3": ("causal", dict(DECODER_COMMON, original_max_position_embeddings=POS)),
    "olmo2": ("causal", dict(DECODER_COMMON)),
    "granite": ("causal", dict(DECODER_COMMON)),
    "starcoder2": ("causal", dict(DECODER_COMMON)),
    "smollm3": ("causal", dict(DECODER_COMMON)),
    "gpt_neox": ("causal", dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                num_attention_heads=HEADS, intermediate_size=INTER, max_position_embeddings=POS,
                                **SPECIAL)),
    "opt": ("causal", dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                           ffn_dim=INTER, word_embed_proj_dim=HIDDEN, max_position_embeddings=POS, **SPECIAL)),
    "gpt2": ("causal", dict(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=INTER,
                            n_positions=POS, bos_token_id=1, eos_token_id=2)),
    "bert": ("base", dict(ENCODER_COMMON)),
    "roberta": ("base", dict(ENCODER_COMMON, pad_token_id=1, bos_token_id=0)),
    "distilbert": ("base", dict(vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=INTER,
                                max_position_embeddings=POS, pad_token_id=0)),
    "electra": ("base", dict(ENCODER_COMMON, embedding_size=HIDDEN)),
    "t5": ("seq2seq", dict(vocab_size=VOCAB, d_model=HIDDEN, d_kv=HEAD_DIM, d_ff=INTER, num_layers=LAYERS,
                           num_decoder_layers=LAYERS, num_heads=HEADS, pad_token_id=0, eos_token_id=1,
                           decoder_start_token_id=0)),
}


@dataclass
class Result:
    family: str
    attn: str = "?"
    export_s: float | None = None
    error: str | None = None  # where the survey stopped for this family, if it did
    groups: int = 0
    prunable: int = 0
    unknown: list[tuple[str, str, str]] = field(default_factory=list)  # (group, node, message)
    reasons: Counter = field(default_factory=Counter)  # (op, short reason) -> count
    aten: Counter = field(default_factory=Counter)  # untranslated op -> nodes
    blocking_ops: set = field(default_factory=set)  # ops named by an unknown block
    prune: str = "-"


# op -> list of (family, node, module path, source line)
EXAMPLES: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:220]}"


def build(family: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    kind, kwargs = FAMILIES[family]
    cfg = AutoConfig.for_model(family, **kwargs)
    torch.manual_seed(0)
    cls = {"causal": AutoModelForCausalLM, "base": AutoModel, "seq2seq": AutoModelForSeq2SeqLM}[kind]
    model = cls.from_config(cfg).float().eval()
    ids = torch.randint(3, VOCAB, (1, ARGS.seq))
    inputs: dict[str, Any] = {"input_ids": ids}
    if kind == "causal":
        inputs["use_cache"] = False
    elif kind == "seq2seq":
        inputs["decoder_input_ids"] = torch.randint(3, VOCAB, (1, ARGS.seq))
        inputs["use_cache"] = False
    return model, inputs


def op_name(node: torch.fx.Node) -> str:
    """The op a lifted node stands for: ``aten.pow.Tensor_Scalar``, ``method:view``, ``module:Linear``."""
    if node.op == "call_function":
        t = node.target
        if isinstance(t, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
            return str(t)
        return f"{getattr(t, '__module__', '') or ''}.{getattr(t, '__name__', repr(t))}".lstrip(".")
    if node.op == "call_method":
        return f"method:{node.target}"
    if node.op == "call_module":
        return f"module:{node.target}"
    return f"{node.op}:{node.target}"


def source_of(node: torch.fx.Node) -> tuple[str, str]:
    """(calling module path and class, last transformers source line) from the node's meta."""
    stack = node.meta.get("nn_module_stack") or {}
    module = ""
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        module = f"{path} ({cls_name.rsplit('.', 1)[-1]})"
    trace = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in trace.strip().splitlines()]
    code = ""
    for i in range(len(lines) - 1, -1, -1):  # last frame: 'File "...", line N, in fn' then the code line
        if lines[i].startswith("File "):
            m = re.search(r'File "([^"]+)", line (\d+), in (\S+)', lines[i])
            src = lines[i + 1] if i + 1 < len(lines) else ""
            if m:
                code = f"{m.group(1).rsplit('/', 1)[-1]}:{m.group(2)} {m.group(3)}: {src}"
            break
    return module, code


SUFFIX = re.compile(r";\s*leave (the producing module|this group) out of the masks.*$")


def shape_arg(node: torch.fx.Node) -> str:
    """The size list of a view/reshape, or the index of a getitem, as written in the lifted graph."""
    arg = node.args[1] if len(node.args) > 1 else None
    if isinstance(arg, tuple):  # an index
        return ", ".join(":" if a == slice(None) else (f"{a.start or ''}:{'' if a.stop is None or a.stop >= sys.maxsize else a.stop}"
                                                      if isinstance(a, slice) else str(a))
                         for a in arg)
    return str(list(arg)) if isinstance(arg, (list, tuple)) else str(arg)


def shorten(message: str) -> str:
    msg = re.sub(r"^node '[^']*' \([^)]*\):\s*", "", message)
    msg = SUFFIX.sub("", msg)
    msg = msg.replace("reads pruned channels and fprune has no exact rule for this op", "no rule")
    return msg[:140]


def survey(family: str) -> Result:
    res = Result(family)
    try:
        model, inputs = build(family)
        res.attn = str(getattr(model.config, "_attn_implementation", "?"))
    except Exception as exc:  # noqa: BLE001 - the survey records every failure
        res.error = f"build: {first_line(exc)}"
        return res
    try:
        t = time.perf_counter()
        program = fprune.export(model, kwargs=inputs)
        res.export_s = time.perf_counter() - t
    except Exception as exc:  # noqa: BLE001
        cause = exc.__cause__
        res.error = f"export: {first_line(exc)}" + (f" (cause {first_line(cause)})" if cause else "")
        return res

    # untranslated aten ops of the lifted graph
    try:
        lifted = lift(program).graph
        nodes = {n.name: n for n in lifted.graph.nodes}
        for n in lifted.graph.nodes:
            if n.op == "call_function" and isinstance(n.target, (torch._ops.OpOverload,
                                                                  torch._ops.HigherOrderOperator)):
                name = op_name(n) if isinstance(n.target, torch._ops.OpOverload) else f"hop:{n.target}"
                res.aten[name] += 1
                if not any(e[0] == family for e in EXAMPLES[name]):
                    EXAMPLES[name].append((family, n.name, *source_of(n)))
    except Exception as exc:  # noqa: BLE001
        res.error = f"lift: {first_line(exc)}"
        return res

    # unknown blocks of the analysis
    try:
        analysis = fprune.analyze(program)
        res.groups = len(analysis.groups)
        res.prunable = sum(g.prunable() for g in analysis.groups)
        for g in analysis.groups:
            for b in g.blocks:
                if b.kind != "unknown":
                    continue
                res.unknown.append((g.name, b.node, b.message))
                node = nodes.get(b.node)
                op = op_name(node) if node is not None else f"?{b.node}"
                why = shorten(b.message)
                if node is not None and op in ("method:view", "method:reshape", "_operator.getitem"):
                    why += f" [{shape_arg(node)}]"
                res.reasons[(op, why)] += 1
                res.blocking_ops.add(op)
                if node is not None and op not in res.aten:  # a translated op with no rule
                    if not any(e[0] == family for e in EXAMPLES[op]):
                        EXAMPLES[op].append((family, node.name, *source_of(node)))
    except Exception as exc:  # noqa: BLE001
        res.error = f"analyze: {first_line(exc)}"

    # pruning the way bench_export.py does it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = fprune.topk_mask(0.25)(fprune.score_l1(program))
            small = fprune.apply_patterns(plan)
        before = sum(t.numel() for t in program.state_dict.values())
        after = sum(t.numel() for t in small.state_dict.values())
        pruned = sum(1 for m in plan.masks.values() if not bool(m.all()))
        res.prune = f"ok, {after / before:.1%} params kept, {pruned} groups pruned"
        try:
            with torch.no_grad():
                out = small.module()(**inputs)
            logits = getattr(out, "logits", None)
            if logits is None:
                logits = getattr(out, "last_hidden_state", out)
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            res.prune += f"; runs ({tuple(logits.shape)})"
        except Exception as exc:  # noqa: BLE001
            res.prune += f"; pruned program fails to run: {first_line(exc)}"
    except Exception as exc:  # noqa: BLE001
        res.prune = f"FAILED {first_line(exc)}"
    return res


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", action="append", choices=list(FAMILIES))
    parser.add_argument("--seq", type=int, default=16)
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    ARGS = parser.parse_args()
    torch.set_num_threads(1)
    import transformers

    families = ARGS.family or list(FAMILIES)
    results: list[Result] = []
    start = time.perf_counter()
    for fam in families:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                results.append(survey(fam))
            except Exception as exc:  # noqa: BLE001 - never stop the survey
                results.append(Result(fam, error=f"survey: {first_line(exc)}"))
                if ARGS.verbose:
                    traceback.print_exc()
        print(f"# {fam}: {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)

    print(f"# fprune export survey: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"threads 1, seq {ARGS.seq}, hidden {HIDDEN}, {LAYERS} layers, {HEADS}/{KV_HEADS} heads, "
          f"vocab {VOCAB}, intermediate {INTER}; total {time.perf_counter() - start:.0f}s")
    print()
    print("| family | attn | export s | groups (prunable) | unknown blocks (count) | distinct unknown reasons "
          "(op: reason ×n) | untranslated aten ops (×nodes; **bold** = named by an unknown block) | prune result |")
    print("|---|---|---:|---:|---:|---|---|---|")
    for r in results:
        if r.error and r.export_s is None:
            print(f"| {r.family} | {r.attn} | - | - | - | - | - | {cell(r.error)} |")
            continue
        reasons = "<br>".join(f"`{op}`: {cell(why)} ×{n}" for (op, why), n in sorted(r.reasons.items())) or "none"
        aten = ", ".join((f"**`{op}`**" if op in r.blocking_ops else f"`{op}`") + f"×{n}"
                         for op, n in sorted(r.aten.items())) or "none"
        extra = f" ({cell(r.error)})" if r.error else ""
        print(f"| {r.family} | {r.attn} | {r.export_s:.2f} | {r.groups} ({r.prunable}) | {len(r.unknown)} | "
              f"{reasons}{extra} | {aten} | {cell(r.prune)} |")

    print()
    print("## Every untranslated op / unknown-block op, once")
    print()
    print("| op | families (untranslated ×nodes; **bold** = blocks a group there) | example: family, node, "
          "calling module | source line |")
    print("|---|---|---|---|")
    ops = sorted(set(EXAMPLES) | {op for r in results for op in r.aten} | {op for r in results for op in r.blocking_ops})
    for op in ops:
        fams = []
        for r in results:
            if op in r.aten or op in r.blocking_ops:
                label = f"{r.family}×{r.aten[op]}" if op in r.aten else r.family
                fams.append(f"**{label}**" if op in r.blocking_ops else label)
        ex = EXAMPLES.get(op, [])
        first = ex[0] if ex else ("?", "?", "", "")
        print(f"| `{op}` | {', '.join(fams)} | {first[0]}, `{first[1]}`, {cell(first[2])} | `{cell(first[3])}` |")


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
