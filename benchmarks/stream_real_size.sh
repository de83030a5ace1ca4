#!/usr/bin/env bash
# Issue #17's streaming benchmark on a real-size config (Llama-3-8B shapes, random bfloat16 weights),
# for a machine with the disk for it: 16 GB of input shards plus about 10 GB of output.
#   bash benchmarks/stream_real_size.sh [DIR]     (DIR: where the checkpoints go; default /tmp/fprune-stream-8b)
# Prints the same lines as bench_stream.py: peak resident set over the imports against the largest
# shard + 0.5 GB, and the time against the floor (read every byte once, write the kept bytes).
# Streaming reads and writes files only, so a GPU, where there is one, is not used.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/fprune-stream-8b}
mkdir -p "$dir"
need=$((28 * 1024 * 1024))  # KiB: the 16 GB input, the output and the floor's file
free=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')
if [ "$free" -lt "$need" ]; then
  echo "stream_real_size.sh: $dir has $((free / 1024 / 1024)) GiB free; needs about 28 GiB" >&2
  exit 1
fi
python=${PYTHON:-.venv/bin/python}
"$python" benchmarks/bench_stream.py --preset llama3-8b --keep-files "$dir"
