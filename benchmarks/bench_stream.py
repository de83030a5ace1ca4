"""Streaming a checkpoint larger than the work it needs: issue #17's benchmark.

A synthetic Llama (default: hidden 2048, 24 layers, intermediate 5632, 16 heads, 4 KV heads, vocab
32000, bfloat16: 1.2B parameters, about 2.4 GB) is written with random weights in 1 GB shards;
then, each in a fresh process, with the page cache warm for both (the checkpoint is read once
before either runs):

* **stream**: ``prune_checkpoint(SRC, OUT, heads/kv_heads=0.25, mlp=0.3, hidden=0.25)``;
* **floor**: what any streaming pruner must do: import transformers, build the model on the meta
  device from the config, read every input byte once and write as many bytes as the pruned
  checkpoint holds.

Each reports its peak resident set over its resident set after the imports (Linux ``VmHWM`` reset
through ``/proc/self/clear_refs``) and its time.  Targets: peak <= the largest input shard + 0.5 GB;
time <= 2x the floor.

    .venv/bin/python benchmarks/bench_stream.py [--hidden 2048] [--layers 24] [--keep-files DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1]) * 1024
    return 0.0


def _child(mode: str, src: str, out: str, kept_bytes: str) -> None:
    import torch
    import transformers

    from fprune.hf.stream import prune_checkpoint

    after = _rss("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = time.perf_counter()
    result: dict[str, float] = {}
    if mode == "stream":
        report = prune_checkpoint(src, out, kv_heads=0.25, mlp=0.3, hidden=0.25)
        result["bytes_after"] = report.bytes_after
        result["kept"] = report.params_after / report.params_before
    else:
        config = transformers.AutoConfig.from_pretrained(src)
        with torch.device("meta"):
            transformers.AutoModelForCausalLM.from_config(config)
        total, budget = 0, int(kept_bytes)
        Path(out).mkdir(parents=True, exist_ok=True)
        with open(Path(out) / "floor.bin", "wb") as sink:
            for shard in sorted(Path(src).glob("*.safetensors")):
                with open(shard, "rb") as f:
                    while chunk := f.read(1 << 24):
                        total += len(chunk)
                        if budget > 0:
                            sink.write(chunk[:budget])
                            budget -= min(budget, len(chunk))
        result["bytes_read"] = total
    result["seconds"] = time.perf_counter() - start
    result["peak_over_imports"] = _rss("VmHWM") - after
    print(json.dumps(result))


def _run(*args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--keep-files", help="write the checkpoints here and keep them (default: a temp dir)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    import torch
    import transformers

    root = Path(args.keep_files or tempfile.mkdtemp())
    src = root / "src"
    try:
        if not (src / "config.json").exists():
            config = transformers.LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate,
                                              num_hidden_layers=args.layers, num_attention_heads=16,
                                              num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False,
                                              max_position_embeddings=2048)
            torch.manual_seed(0)
            t0 = time.perf_counter()
            model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
            model.save_pretrained(src, max_shard_size="1GB")
            del model
            print(f"wrote the synthetic checkpoint in {time.perf_counter() - t0:.0f} s")
        shards = sorted(src.glob("*.safetensors"))
        size, largest = sum(f.stat().st_size for f in shards), max(f.stat().st_size for f in shards)
        for f in shards:  # warm the page cache for both runs
            with open(f, "rb") as h:
                while h.read(1 << 24):
                    pass
        shutil.rmtree(root / "out", ignore_errors=True)
        stream = _run("stream", str(src), str(root / "out"), "0")
        floor = _run("floor", str(src), str(root / "floor"), str(int(stream["bytes_after"])))
        print(f"torch {torch.__version__}, transformers {transformers.__version__}; Llama hidden {args.hidden}, "
              f"{args.layers} layers, bfloat16: {size / 1e9:.2f} GB in {len(shards)} shards (largest "
              f"{largest / 1e9:.2f} GB); kept {stream['kept']:.1%} ({stream['bytes_after'] / 1e9:.2f} GB)")
        target = largest + 0.5e9
        print(f"stream: {stream['seconds']:.1f} s, peak over imports {stream['peak_over_imports'] / 1e9:.2f} GB "
              f"(target <= {target / 1e9:.2f} GB: {'met' if stream['peak_over_imports'] <= target else 'NOT met'})")
        ratio = stream["seconds"] / floor["seconds"]
        print(f"floor: {floor['seconds']:.1f} s, peak over imports {floor['peak_over_imports'] / 1e9:.2f} GB; "
              f"stream / floor = {ratio:.2f}x (target <= 2x: {'met' if ratio <= 2 else 'NOT met'})")
    finally:
        if not args.keep_files:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
