"""Doctest collection: fprune.hf's examples need its extra (transformers, safetensors)."""

import importlib.util

collect_ignore_glob = [] if all(importlib.util.find_spec(m) for m in ("transformers", "safetensors")) else ["fprune/hf/*"]
