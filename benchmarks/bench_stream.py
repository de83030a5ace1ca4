"""Streaming a checkpoint larger than the work it needs: issue #17's benchmark.

A synthetic Llama (default: hidden 2048, 24 layers, intermediate 5632, 16 heads, 4 KV heads, vocab
32000, bfloat16: 1.2B parameters, about 2.4 GB) is written with random weights in 1 GB shards;
then, each in a fresh process, with the page cache warm for both (the checkpoint is read once
before either runs):

* **stream**: ``prune_checkpoint(SRC, OUT, heads=0.25, mlp=0.3, hidden=0.25)`` (``heads``: 3 of the
  4 query heads of each key/value head kept);
* **floor**: what any streaming pruner must do: import transformers, build the model on the meta
  device from the config, read every input byte once and write as many bytes as the pruned
  checkpoint holds.

Each reports its peak resident set over its resident set after the imports (Linux ``VmHWM`` reset
through ``/proc/self/clear_refs``) and its time.  Targets: peak <= the largest input shard + 0.5 GB;
time <= 2x the floor.

The checkpoint is written tensor by tensor from the meta model's shapes (normal(0, 0.02) weights,
norms of ones), one shard in memory at a time, so a real-size config needs disk, not RAM:
``--preset llama3-8b`` (hidden 4096, 32 layers, intermediate 14336, 32 heads, 8 KV heads, vocab
128256: 16 GB in bfloat16, about 26 GB of disk with the output) is the run for a larger machine
(``benchmarks/stream_real_size.sh`` checks the disk first).

With ``--calib-rows N`` a third process streams with ``scorer="wanda"`` over N random rows of
token ids (``--calibration``, batches of 8), the model run a decoder layer at a time; its peak
is held to the same target.

    .venv/bin/python benchmarks/bench_stream.py [--hidden 2048] [--layers 24] [--preset llama3-8b] [--keep-files DIR]
                                                [--calib-rows 64]
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
from typing import Any


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
    if mode == "stream" or mode.startswith("wanda:"):
        calibration = mode.partition(":")[2] or None
        report = prune_checkpoint(src, out, heads=0.25, mlp=0.3, hidden=0.25,
                                  **({"scorer": "wanda", "calibration": calibration} if calibration else {}))
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


PRESETS = {  # name -> (hidden, layers, intermediate, heads, kv heads, vocab)
    "1.2b": (2048, 24, 5632, 16, 4, 32000),
    "llama3-8b": (4096, 32, 14336, 32, 8, 128256),
}


def _write_checkpoint(src: Path, config: Any, shard_bytes: int = 10**9) -> None:
    """Random bfloat16 weights for `config`'s Llama, written shard by shard with an index."""
    import torch
    import transformers
    from safetensors.torch import save_file

    with torch.device("meta"):
        shapes = [(k, v.shape) for k, v in transformers.LlamaForCausalLM(config).state_dict().items()]
    src.mkdir(parents=True, exist_ok=True)
    config.architectures = ["LlamaForCausalLM"]  # as save_pretrained of the model writes it
    config.save_pretrained(src)
    generator = torch.Generator().manual_seed(0)
    groups: list[list[tuple[str, torch.Size]]] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = 2 * shape.numel()
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: (torch.ones(shape) if name.endswith("norm.weight") else
                          torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
                   for name, shape in group}
        save_file(tensors, str(src / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
        del tensors
    total = 2 * sum(shape.numel() for _, shape in shapes)
    (src / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def _run(*args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", choices=sorted(PRESETS), default="1.2b",
                        help="the Llama shape (default 1.2b); --hidden, --layers, --intermediate override it")
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--intermediate", type=int)
    parser.add_argument("--keep-files", help="write the checkpoints here and keep them (default: a temp dir)")
    parser.add_argument("--calib-rows", type=int, default=0,
                        help="also stream with scorer='wanda' over this many random rows of --calib-seq token ids "
                             "(batches of 8), one layer at a time (default 0: not run)")
    parser.add_argument("--calib-seq", type=int, default=128, help="tokens per calibration row (default 128)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    import torch
    import transformers

    hidden, layers, intermediate, heads, kv_heads, vocab = PRESETS[args.preset]
    hidden, layers = args.hidden or hidden, args.layers or layers
    intermediate = args.intermediate or intermediate
    root = Path(args.keep_files or tempfile.mkdtemp())
    src = root / "src"
    try:
        if not (src / "config.json").exists():
            config = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=intermediate,
                                              num_hidden_layers=layers, num_attention_heads=heads,
                                              num_key_value_heads=kv_heads, vocab_size=vocab,
                                              tie_word_embeddings=False, max_position_embeddings=2048,
                                              dtype="bfloat16")
            t0 = time.perf_counter()
            _write_checkpoint(src, config)
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
        print(f"torch {torch.__version__}, transformers {transformers.__version__}; Llama hidden {hidden}, "
              f"{layers} layers, intermediate {intermediate}, {heads} heads over {kv_heads} KV heads, vocab {vocab}, bfloat16: {size / 1e9:.2f} GB in {len(shards)} shards (largest "
              f"{largest / 1e9:.2f} GB); kept {stream['kept']:.1%} ({stream['bytes_after'] / 1e9:.2f} GB)")
        target = largest + 0.5e9
        print(f"stream: {stream['seconds']:.1f} s, peak over imports {stream['peak_over_imports'] / 1e9:.2f} GB "
              f"(target <= {target / 1e9:.2f} GB: {'met' if stream['peak_over_imports'] <= target else 'NOT met'})")
        ratio = stream["seconds"] / floor["seconds"]
        print(f"floor: {floor['seconds']:.1f} s, peak over imports {floor['peak_over_imports'] / 1e9:.2f} GB; "
              f"stream / floor = {ratio:.2f}x (target <= 2x: {'met' if ratio <= 2 else 'NOT met'})")
        if args.calib_rows:
            from fprune.tensorfile import save_tensors

            ids = torch.randint(0, vocab, (args.calib_rows, args.calib_seq), generator=torch.Generator().manual_seed(0))
            save_tensors(root / "calib.safetensors", {"input_ids": ids})
            shutil.rmtree(root / "out-wanda", ignore_errors=True)
            wanda = _run(f"wanda:{root / 'calib.safetensors'}", str(src), str(root / "out-wanda"), "0")
            print(f"wanda over {args.calib_rows} x {args.calib_seq} tokens, a layer at a time: {wanda['seconds']:.1f} s "
                  f"({wanda['seconds'] / stream['seconds']:.2f}x the l1 stream), peak over imports "
                  f"{wanda['peak_over_imports'] / 1e9:.2f} GB (target <= {target / 1e9:.2f} GB: "
                  f"{'met' if wanda['peak_over_imports'] <= target else 'NOT met'})")
    finally:
        if not args.keep_files:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
