"""Peak memory of a real-weights prune: ``fprune.hf.folder.prune_folder`` on a saved Llama.

Issue #15's target: peak memory <= (1 + kept fraction + 0.1) x the model's size.  A random
Llama (default: hidden 1024, 8 layers, 16 heads, 4 KV heads, intermediate 2816, vocab 32000,
float32: about 0.6 GB) is saved to a temporary folder; then two fresh processes run:

* ``imports``: import torch, transformers and fprune.hf, nothing else;
* ``prune``: the same imports, then ``prune_folder(SRC, OUT, kv_heads=0.25, mlp=0.3, hidden=0.25)``
  (check, load with from_pretrained, trace, score_l1, widths, apply, save_pretrained);
* ``stream``: the same with ``prune_checkpoint`` (issue #17: a meta-device graph, tensors read one
  at a time), against its target: peak <= the largest input shard + 0.5 GB.

Each resets its peak resident set after the imports (Linux ``/proc/self/clear_refs``) and reports
the peak (``VmHWM``) over its resident set after the imports: the prune's own cost, divided by the
size of the weights on disk, against 1 + kept + 0.1 (kept = the pruned model's share of the
parameters); ``ru_maxrss`` (never reset, so at least the imports' peak) is printed too.

    .venv/bin/python benchmarks/bench_hf_memory.py [--hidden 1024] [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def _child(mode: str, src: str, out: str) -> None:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from fprune.hf.folder import prune_folder
    from fprune.hf.stream import prune_checkpoint

    result: dict[str, float] = {"after_imports": _rss("VmRSS")}
    try:  # Linux: reset the peak (VmHWM) to the current resident set, so the peak is the work's own
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    if mode in ("prune", "stream"):
        run = prune_folder if mode == "prune" else prune_checkpoint
        report = run(src, out, kv_heads=0.25, mlp=0.3, hidden=0.25)
        result |= {"kept": report.params_after / report.params_before, "bytes": report.bytes_before,
                   "seconds": report.seconds}
    result["maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["hwm_bytes"] = _rss("VmHWM")
    print(json.dumps(result))


def _rss(field: str) -> float:
    """A /proc/self/status memory figure in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.0


def _run(mode: str, src: Path, out: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", mode, str(src), str(out)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--shard", default="200MB", help="max_shard_size of the saved model (default 200MB)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    import torch
    import transformers

    config = transformers.LlamaConfig(hidden_size=args.hidden, intermediate_size=args.hidden * 11 // 4,
                                      num_hidden_layers=args.layers, num_attention_heads=16, num_key_value_heads=4,
                                      vocab_size=32000, max_position_embeddings=256, tie_word_embeddings=False)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(config).save_pretrained(src, max_shard_size=args.shard)
        largest = max(f.stat().st_size for f in src.glob("*.safetensors"))
        base = _run("imports", src, out)
        pruned = _run("prune", src, out)
        streamed = _run("stream", src, Path(tmp) / "out2")
    size = pruned["bytes"]
    cost = pruned["hwm_bytes"] - pruned["after_imports"]  # the peak over the resident set after the imports
    target = 1 + pruned["kept"] + 0.1
    print(f"torch {torch.__version__}, transformers {transformers.__version__}; Llama hidden {args.hidden}, "
          f"{args.layers} layers, float32, {size / 2**20:.0f} MiB of weights")
    print(f"imports alone: ru_maxrss {base['maxrss_bytes'] / 2**20:.0f} MiB, resident after them "
          f"{base['after_imports'] / 2**20:.0f} MiB; prune_folder: ru_maxrss {pruned['maxrss_bytes'] / 2**20:.0f} MiB, "
          f"{pruned['seconds']:.1f} s")
    print(f"prune cost {cost / 2**20:.0f} MiB = {cost / size:.2f}x the model; kept {pruned['kept']:.1%}; "
          f"target <= {target:.2f}x: {'met' if cost / size <= target else 'NOT met'}")
    stream_cost = streamed["hwm_bytes"] - streamed["after_imports"]
    print(f"prune_checkpoint (streamed): peak {streamed['maxrss_bytes'] / 2**20:.0f} MiB, cost "
          f"{stream_cost / 2**20:.0f} MiB = {stream_cost / size:.2f}x the model, {streamed['seconds']:.1f} s; largest "
          f"input shard {largest / 2**20:.0f} MiB; target <= shard + 512 MiB = {(largest + 2**29) / 2**20:.0f} MiB: "
          f"{'met' if stream_cost <= largest + 2**29 else 'NOT met'}")


if __name__ == "__main__":
    main()
