"""Peak memory of a real-weights prune: ``fprune.hf.folder.prune_folder`` on a saved Llama.

Issue #15's target: peak memory <= (1 + kept fraction + 0.1) x the model's size.  A random
Llama (default: hidden 1024, 8 layers, 16 heads, 4 KV heads, intermediate 2816, vocab 32000,
float32: about 0.6 GB) is saved to a temporary folder; then two fresh processes run:

* ``imports``: import torch, transformers and fprune.hf, nothing else;
* ``prune``: the same imports, then ``prune_folder(SRC, OUT, kv_heads=0.25, mlp=0.3, hidden=0.25)``
  (check, load with from_pretrained, trace, score_l1, widths, apply, save_pretrained).

Each reports its peak resident set (``ru_maxrss``); the prune's cost is the difference, divided
by the size of the weights on disk, against 1 + kept + 0.1 (kept = the pruned model's share of
the parameters).

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

    result: dict[str, float] = {}
    if mode == "prune":
        report = prune_folder(src, out, kv_heads=0.25, mlp=0.3, hidden=0.25)
        result = {"kept": report.params_after / report.params_before, "bytes": report.bytes_before,
                  "seconds": report.seconds}
    result["maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def _run(mode: str, src: Path, out: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", mode, str(src), str(out)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
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
        transformers.LlamaForCausalLM(config).save_pretrained(src)
        base = _run("imports", src, out)
        pruned = _run("prune", src, out)
    size = pruned["bytes"]
    cost = pruned["maxrss_bytes"] - base["maxrss_bytes"]
    target = 1 + pruned["kept"] + 0.1
    print(f"torch {torch.__version__}, transformers {transformers.__version__}; Llama hidden {args.hidden}, "
          f"{args.layers} layers, float32, {size / 2**20:.0f} MiB of weights")
    print(f"imports alone: peak {base['maxrss_bytes'] / 2**20:.0f} MiB; prune_folder: peak "
          f"{pruned['maxrss_bytes'] / 2**20:.0f} MiB, {pruned['seconds']:.1f} s")
    print(f"prune cost {cost / 2**20:.0f} MiB = {cost / size:.2f}x the model; kept {pruned['kept']:.1%}; "
          f"target <= {target:.2f}x: {'met' if cost / size <= target else 'NOT met'}")


if __name__ == "__main__":
    main()
