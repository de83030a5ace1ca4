"""Streaming a checkpoint (issue #17): the result equals fprune.hf.apply on the loaded model, bit for bit.

Tiny random models saved offline in bfloat16 and float32, sharded small so that tensors cross
shards; skipped without the hf extra.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fprune import score_l1
from fprune.cli import main
from fprune.errors import CheckpointError, InvalidArgumentError

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
hf = pytest.importorskip("fprune.hf")
from fprune.hf.checkpoint import INDEX, read_checkpoint  # noqa: E402
from fprune.hf.folder import RECORD  # noqa: E402
from fprune.hf.stream import prune_checkpoint  # noqa: E402

LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=8, vocab_size=64, max_position_embeddings=32)


def _build(name: str, **extra: Any) -> nn.Module:
    torch.manual_seed(0)
    if name == "bert":
        return transformers.BertForSequenceClassification(transformers.BertConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=64,
            max_position_embeddings=32, num_labels=2))
    config_cls, model_cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                             "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
                             "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM),
                             "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM)}[name]
    return model_cls(config_cls(**(LLAMA | extra)))


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out |= safetensors_torch.load_file(str(f))
    return out


CASES = [
    ("llama", dict(tie_word_embeddings=False), torch.bfloat16, dict(kv_heads=0.5, mlp=0.5, hidden=0.25)),
    ("llama", dict(tie_word_embeddings=True), torch.float32, dict(kv_heads=0.5, mlp=0.3, hidden=0.5)),
    ("qwen3", dict(tie_word_embeddings=False), torch.bfloat16, dict(kv_heads=0.5, mlp=0.5)),
    ("gemma", {}, torch.float32, dict(kv_heads=0.5, mlp=0.25)),
    ("llama", dict(tie_word_embeddings=False), torch.bfloat16, dict(heads=0.5, mlp=0.3)),  # query heads within KV heads
    ("qwen3", dict(tie_word_embeddings=False), torch.float32, dict(heads=0.5, kv_heads=0.5)),
    ("mistral", dict(tie_word_embeddings=False), torch.float32, dict(mlp=0.5, hidden=0.25)),
    ("bert", {}, torch.float32, dict(mlp=0.5)),
]


@pytest.mark.parametrize(("name", "extra", "dtype", "widths"), CASES,
                         ids=[f"{c[0]}-{str(c[2])[6:]}-{'-'.join(c[3])}" for c in CASES])
def test_streamed_equals_in_memory_bit_for_bit(name: str, extra: dict[str, Any], dtype: torch.dtype,
                                               widths: dict[str, float], tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    _build(name, **extra).to(dtype).save_pretrained(src, max_shard_size="20KB")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    report = prune_checkpoint(src, out, **widths, max_shard_size=12_000)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # SRC never touched
    assert (out / INDEX).exists() and len(read_checkpoint(out).shards) > 1
    model = type(_build(name, **extra)).from_pretrained(src, dtype="auto").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = hf.apply(hf.widths(**widths)(score_l1(hf.trace(model)))).state_dict()
    streamed = _tensors(out)
    assert set(streamed) <= set(expected)
    for key, value in streamed.items():
        assert value.dtype == expected[key].dtype and torch.equal(value, expected[key]), key
    back = type(model).from_pretrained(out, dtype="auto").eval()
    assert report.widths_after == {k: getattr(back.config, k) for k in report.widths_after}
    assert json.loads((out / RECORD).read_text())["streamed"] is True


@pytest.mark.parametrize(("extra", "dtype", "widths"), [
    (dict(tie_word_embeddings=False), torch.bfloat16, dict(heads=0.5, mlp=0.5, hidden=0.25)),
    (dict(tie_word_embeddings=True), torch.float32, dict(kv_heads=0.5, hidden=0.5)),
    (dict(tie_word_embeddings=False), torch.float32, dict(mlp=0.5)),  # embedding and lm_head unchanged: copied
], ids=["untied-bf16-hidden", "tied-f32-hidden", "untied-mlp"])
def test_large_tensors_written_a_block_of_rows_at_a_time_are_the_same(
        extra: dict[str, Any], dtype: torch.dtype, widths: dict[str, float], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors over ``_BLOCK`` bytes (an 8B model's embedding) are read, sliced and written in blocks
    of rows; with a block of 1 KB here every matrix is, in several blocks: bit for bit the same."""
    from fprune.hf import stream

    src = tmp_path / "src"
    _build("llama", **extra).to(dtype).save_pretrained(src)
    prune_checkpoint(src, tmp_path / "whole", **widths)
    monkeypatch.setattr(stream, "_BLOCK", 1024)
    calls: list[str] = []
    put_rows = stream._put_rows
    monkeypatch.setattr(stream, "_put_rows", lambda place, key, *rest: calls.append(key) or put_rows(place, key, *rest))
    prune_checkpoint(src, tmp_path / "blocks", **widths)
    assert "model.embed_tokens.weight" in calls and len(calls) > 10
    whole, blocks = _tensors(tmp_path / "whole"), _tensors(tmp_path / "blocks")
    assert whole.keys() == blocks.keys() and all(torch.equal(whole[k], blocks[k]) for k in whole)


def test_cli_streams_by_default_and_in_memory_gives_the_same(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    _build("llama", tie_word_embeddings=False).save_pretrained(src)
    args = ["--kv-heads", "0.5", "--mlp", "0.5", "--no-progress"]
    assert main(["hf", "prune", str(src), str(tmp_path / "a"), *args, "--max-shard-size", "30KB"]) == 0
    assert main(["hf", "prune", str(src), str(tmp_path / "b"), *args, "--in-memory"]) == 0
    assert json.loads((tmp_path / "a" / RECORD).read_text())["streamed"] is True
    assert "streamed" not in json.loads((tmp_path / "b" / RECORD).read_text())
    a, b = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main(["hf", "prune", str(src), str(tmp_path / "c"), *args, "--max-shard-size", "lots"]) == 2
    assert "expected a size" in capsys.readouterr().err


def test_bad_checkpoints_leave_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _build("llama", tie_word_embeddings=False).save_pretrained(src, max_shard_size="20KB")
    shard = sorted(src.glob("*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[:-3])
    with pytest.raises(CheckpointError, match="truncated"):
        prune_checkpoint(src, tmp_path / "o", mlp=0.5)
    shard.write_bytes(data)
    other = tmp_path / "other"
    _build("llama", tie_word_embeddings=False, num_hidden_layers=3).save_pretrained(other)
    (src / "config.json").write_text((other / "config.json").read_text())  # a config of another model
    with pytest.raises(CheckpointError, match="different models"):
        prune_checkpoint(src, tmp_path / "o", mlp=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "src"]
    with pytest.raises(InvalidArgumentError, match="max_shard_size"):
        prune_checkpoint(other, tmp_path / "o", mlp=0.5, max_shard_size=0)
    (tmp_path / "o").mkdir()
    with pytest.raises(InvalidArgumentError, match="already exists"):
        prune_checkpoint(other, tmp_path / "o", mlp=0.5)


def test_out_is_never_src_or_inside_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _build("llama").save_pretrained(src)
    for run in (prune_checkpoint, hf.folder.prune_folder):
        with pytest.raises(InvalidArgumentError, match="OUT is SRC"):
            run(src, src, mlp=0.5, overwrite=True)
        with pytest.raises(InvalidArgumentError, match="inside SRC"):
            run(src, src / "pruned", mlp=0.5)
    assert sorted(p.name for p in src.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]


def _calibration(tmp_path: Path, rows: int = 6, seq: int = 7) -> tuple[Path, torch.Tensor]:
    from fprune.tensorfile import save_tensors

    ids = torch.randint(0, 64, (rows, seq), generator=torch.Generator().manual_seed(3))
    path = tmp_path / "calib.safetensors"
    save_tensors(path, {"input_ids": ids})
    return path, ids


@pytest.mark.parametrize(("name", "scorer", "widths"), [
    ("llama", "wanda", dict(heads=0.5, mlp=0.5, hidden=0.25)),
    ("llama", "flap", dict(kv_heads=0.5, mlp=0.5)),
    ("gemma", "activation", dict(heads=0.5, mlp=0.5)),  # Gemma's embed_scale: a buffer computed, not saved
    ("qwen3", "wanda", dict(kv_heads=0.5, mlp=0.25)),
])
def test_calibration_scorers_out_of_core_equal_in_memory(name: str, scorer: str, widths: dict[str, float],
                                                         tmp_path: Path) -> None:
    """``--calibration``: the model runs a layer at a time from the checkpoint; the pruned model is the
    one ``score_wanda`` (and kin) give on the loaded model for the same batches."""
    from fprune import score_activation, score_flap, score_wanda

    src = tmp_path / "src"
    _build(name, tie_word_embeddings=False).save_pretrained(src, max_shard_size="20KB")
    path, ids = _calibration(tmp_path)
    report = prune_checkpoint(src, tmp_path / "out", **widths, scorer=scorer, calibration=path, calibration_batch=2)
    model = type(_build(name)).from_pretrained(src, dtype="auto").eval()
    batches = [{"input_ids": ids[i:i + 2]} for i in range(0, len(ids), 2)]
    rule = {"activation": score_activation, "wanda": score_wanda, "flap": score_flap}[scorer](batches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = hf.apply(hf.widths(**widths)(rule(hf.trace(model, seq_len=7, batch=2)))).state_dict()
        by_weights = hf.apply(hf.widths(**widths)(score_l1(hf.trace(model)))).state_dict()
    streamed = _tensors(tmp_path / "out")
    assert all(torch.equal(value, expected[key]) for key, value in streamed.items())
    assert any(not torch.equal(value, by_weights[key]) for key, value in streamed.items())  # not L1's choice
    record = json.loads((tmp_path / "out" / RECORD).read_text())
    assert (record["scorer"], record["calibration"], record["calibration_batch"]) == (scorer, str(path), 2)
    assert report.params_after < report.params_before


def test_calibration_runs_one_layer_at_a_time_and_leaves_the_model_on_meta(tmp_path: Path) -> None:
    from fprune.hf import layered, stream
    from fprune.hf.checkpoint import read_checkpoint as read

    src = tmp_path / "src"
    _build("llama", tie_word_embeddings=False, num_hidden_layers=3).save_pretrained(src)
    _, ids = _calibration(tmp_path)
    ckpt = read(src)
    model = stream._meta_model(src, ckpt)
    reader = stream._Reader(ckpt, model)
    real: list[int] = []
    layers = model.model.layers
    hooks = [layer.register_forward_pre_hook(
        lambda m, a: real.append(sum(not p.is_meta for x in layers for p in x.parameters()) // len(list(m.parameters()))))
        for layer in layers]
    consumers = ["model.layers.0.self_attn.q_proj", "model.layers.2.mlp.down_proj", "lm_head"]
    stats = layered.layer_stats(model, reader, [{"input_ids": ids[:2]}, {"input_ids": ids[2:]}], consumers)
    for h in hooks:
        h.remove()
    reader.close()
    assert real and max(real) <= 1  # at most one layer's weights loaded whenever a layer is called
    assert all(p.is_meta for p in model.parameters()) and all(b.is_meta for b in model.buffers())
    assert {k: v.count for k, v in stats.items()} == {c: 6 * 7 for c in consumers}
    loaded = type(_build("llama")).from_pretrained(src).eval()
    seen: dict[str, torch.Tensor] = {}
    handles = [loaded.get_submodule(c).register_forward_pre_hook(
        lambda m, a, c=c: seen.__setitem__(c, seen.get(c, 0) + a[0].double().abs().reshape(-1, a[0].shape[-1]).sum(0)))
        for c in consumers]
    with torch.no_grad():
        loaded(input_ids=ids[:2], use_cache=False)
        loaded(input_ids=ids[2:], use_cache=False)
    for h in handles:
        h.remove()
    for c in consumers:  # the same sums as the whole model in memory (eager both: to float rounding)
        torch.testing.assert_close(stats[c].total_abs, seen[c], rtol=1e-6, atol=1e-6)


def test_calibration_bad_input(tmp_path: Path) -> None:
    from fprune.errors import InvalidArgumentError
    from fprune.tensorfile import save_tensors

    src = tmp_path / "src"
    _build("llama", tie_word_embeddings=False).save_pretrained(src)
    path, _ = _calibration(tmp_path)
    with pytest.raises(InvalidArgumentError, match="needs calibration batches"):
        prune_checkpoint(src, tmp_path / "a", mlp=0.5, scorer="wanda")
    with pytest.raises(InvalidArgumentError, match="reads weights only"):
        prune_checkpoint(src, tmp_path / "a", mlp=0.5, calibration=path)
    save_tensors(tmp_path / "bad.safetensors", {"tokens": torch.zeros(2, 3, dtype=torch.int64)})
    with pytest.raises(InvalidArgumentError, match="no 'input_ids'"):
        prune_checkpoint(src, tmp_path / "a", mlp=0.5, scorer="wanda", calibration=tmp_path / "bad.safetensors")
    save_tensors(tmp_path / "big.safetensors", {"input_ids": torch.full((2, 3), 64, dtype=torch.int64)})
    with pytest.raises(InvalidArgumentError, match="vocabulary has 64"):
        prune_checkpoint(src, tmp_path / "a", mlp=0.5, scorer="wanda", calibration=tmp_path / "big.safetensors")
    with pytest.raises(InvalidArgumentError, match="cannot read the calibration file"):
        prune_checkpoint(src, tmp_path / "a", mlp=0.5, scorer="flap", calibration=tmp_path / "absent.safetensors")
    broken = _build("llama", tie_word_embeddings=False)
    with torch.no_grad():
        broken.model.layers[1].input_layernorm.weight[0] = float("nan")
    broken.save_pretrained(tmp_path / "nan")
    with pytest.raises(InvalidArgumentError, match=r"model\.layers\.1\.self_attn.* holds NaN or inf"):
        prune_checkpoint(tmp_path / "nan", tmp_path / "a", mlp=0.5, scorer="wanda", calibration=path)
    assert not (tmp_path / "a").exists()


def test_cli_calibration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    _build("llama", tie_word_embeddings=False).save_pretrained(src)
    path, _ = _calibration(tmp_path)
    args = ["--mlp", "0.5", "--scorer", "wanda", "--calibration", str(path), "--calibration-batch", "3", "--no-progress"]
    assert main(["hf", "prune", str(src), str(tmp_path / "a"), *args]) == 0
    assert json.loads((tmp_path / "a" / RECORD).read_text())["calibration_batch"] == 3
    assert main(["hf", "prune", str(src), str(tmp_path / "b"), *args, "--in-memory"]) == 1
    assert "run streamed" in capsys.readouterr().err
    assert main(["hf", "prune", str(src), str(tmp_path / "b"), "--mlp", "0.5", "--scorer", "flap"]) == 1
    assert "needs calibration batches" in capsys.readouterr().err
