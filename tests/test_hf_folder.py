"""``fprune hf prune SRC OUT`` and the checks of a model folder (issue #15, items 6 and 8).

Tiny random models saved offline with ``save_pretrained``; skipped without the hf extra.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from fprune import score_l1
from fprune.cli import main
from fprune.errors import CheckpointError, InvalidArgumentError, UnsupportedModelError

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
hf = pytest.importorskip("fprune.hf")
from fprune.hf.checkpoint import INDEX, read_checkpoint  # noqa: E402
from fprune.hf.folder import RECORD, prune_folder  # noqa: E402

CONFIG = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, vocab_size=64, max_position_embeddings=32, pad_token_id=0)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG)).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sharded tiny Llama folder with a tokenizer-like file beside the weights."""
    folder = tmp_path_factory.mktemp("src") / "tiny-llama"
    _model().save_pretrained(folder, max_shard_size="20KB")
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 32}')
    return folder


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def test_cli_prunes_a_folder_that_from_pretrained_reloads(saved: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "small"
    rc = main(["hf", "prune", str(saved), str(out), "--kv-heads", "0.5", "--mlp", "0.5", "--hidden", "0.25",
               "--no-progress"])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    assert "hidden_size" in stdout and "% kept" in stdout and "weights on disk" in stdout
    assert "from_pretrained loads it" in stderr
    loaded, info = transformers.LlamaForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert (loaded.config.hidden_size, loaded.config.num_key_value_heads, loaded.config.intermediate_size) == (24, 1, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = hf.apply(hf.widths(kv_heads=0.5, mlp=0.5, hidden=0.25)(score_l1(hf.trace(_model()))))
    ids = torch.randint(1, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(loaded.eval(), ids), _logits(expected, ids))
    assert (out / "tokenizer_config.json").read_text() == '{"model_max_length": 32}'
    record = json.loads((out / RECORD).read_text())
    assert record["before"]["hidden_size"] == 32 and record["after"]["hidden_size"] == 24
    assert record["widths"]["kv_heads"] == 0.5 and record["scorer"] == "l1"
    assert [p.name for p in tmp_path.iterdir()] == ["small"]  # no temporary folder left behind


def test_prune_folder_report(saved: Path, tmp_path: Path) -> None:
    report = prune_folder(saved, tmp_path / "o", mlp=0.25, scorer="random", seed=3)
    assert report.widths_before["intermediate_size"] == 64 and report.widths_after["intermediate_size"] == 48
    assert report.layers == 2 and report.params_after < report.params_before
    assert 0 < report.bytes_after < report.bytes_before
    assert "intermediate_size" in report.table()
    assert json.loads((tmp_path / "o" / RECORD).read_text())["seed"] == 3


def test_existing_out_is_kept_unless_overwrite(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["hf", "prune", str(saved), str(out), "--mlp", "0.5", "--no-progress"]) == 1
    assert "already exists" in capsys.readouterr().err and (out / "mine.txt").read_text() == "keep me"
    assert main(["hf", "prune", str(saved), str(out), "--mlp", "0.5", "--no-progress", "--overwrite"]) == 0
    assert not (out / "mine.txt").exists() and (out / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_a_failed_save_leaves_nothing(saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any, directory: Any, **kwargs: Any) -> None:
        Path(directory).mkdir(parents=True)
        (Path(directory) / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        prune_folder(saved, tmp_path / "o", mlp=0.5)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, words", [
    (["--mlp", "1.0"], "[0, 1)"),
    (["--mlp", "x"], "expected a number"),
    (["--scorer", "fpgm"], "invalid choice"),
])
def test_usage_errors_exit_2(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                             words: str) -> None:
    assert main(["hf", "prune", str(saved), str(tmp_path / "o"), *argv]) == 2
    assert words in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_nothing_to_prune_and_both_head_kinds(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hf", "prune", str(saved), str(tmp_path / "o")]) == 1
    assert "at least one of --heads" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # both head kinds: key/value heads first, then query heads evenly within those kept
    assert main(["hf", "prune", str(saved), str(tmp_path / "o"), "--heads", "0.5", "--kv-heads", "0.5",
                 "--no-progress"]) == 0
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    heads, kv = CONFIG["num_attention_heads"], CONFIG["num_key_value_heads"]
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (heads // 4, kv // 2)


def _shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


@pytest.mark.parametrize("damage, words", [
    (lambda f: _shards(f)[2].unlink(), "lacks 1 of the"),
    (lambda f: _shards(f)[1].write_bytes(_shards(f)[1].read_bytes()[:-7]), "truncated"),
    (lambda f: _shards(f)[0].write_bytes(b"not a safetensors file at all"), "header"),
    (lambda f: _shards(f)[0].write_bytes(_shards(f)[0].read_bytes() + b"\0" * 4), "after its last tensor"),
    (lambda f: (f / "config.json").unlink(), "no config.json"),
    (lambda f: (f / "config.json").write_text("{"), "not readable JSON"),
    (lambda f: (f / INDEX).write_text(json.dumps(
        {"weight_map": {**json.loads((f / INDEX).read_text())["weight_map"], "extra.weight": _shards(f)[0].name}})),
     "'extra.weight'"),
    (lambda f: [p.unlink() for p in _shards(f)] and (f / INDEX).unlink(), "neither model.safetensors"),
])
def test_missing_or_corrupt_files_are_named(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            damage: Any, words: str) -> None:
    src = _copy(saved, tmp_path / "src")
    damage(src)
    with pytest.raises(CheckpointError, match=None) as info:
        read_checkpoint(src)
    assert words in str(info.value)
    assert main(["hf", "prune", str(src), str(tmp_path / "o"), "--mlp", "0.5", "--no-progress"]) == 1
    assert words in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        read_checkpoint(tmp_path / "f")


def test_unknown_family_lists_the_supported_ones(saved: Path, tmp_path: Path) -> None:
    src = _copy(saved, tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
    with pytest.raises(UnsupportedModelError, match="'mamba'.*llama.*fprune.export"):
        prune_folder(src, tmp_path / "o", mlp=0.5)
    with pytest.raises(InvalidArgumentError, match="scorer"):
        prune_folder(saved, tmp_path / "o", mlp=0.5, scorer="taylor")
    with pytest.raises(InvalidArgumentError, match="OUT is SRC"):
        prune_folder(saved, saved, mlp=0.5, overwrite=True)


@given(cut=st.integers(min_value=0, max_value=10**6))
def test_every_truncation_is_caught(cut: int) -> None:
    """Whatever the point a shard is cut at, the header check names the file."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text('{"model_type": "llama"}')
        path = folder / "model.safetensors"
        safetensors_torch.save_file({"a": torch.ones(3, 5), "b": torch.zeros(7, dtype=torch.float16)}, str(path))
        data = path.read_bytes()
        path.write_bytes(data[: cut % len(data)])
        with pytest.raises(CheckpointError, match="model.safetensors"):
            read_checkpoint(folder)


def test_missing_extra_says_how_to_install(saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "safetensors" else real(name, *a))
    assert main(["hf", "prune", str(saved), str(tmp_path / "o"), "--mlp", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "safetensors missing" in err and "pip install 'fprune[hf]'" in err and not (tmp_path / "o").exists()


def test_per_layer_folder_loads_with_hf_load(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    assert main(["hf", "prune", str(saved), str(out), "--mlp", "0.5", "--per-layer", "--no-progress"]) == 0
    stdout, stderr = capsys.readouterr()
    assert "widest of 2 layers" in stdout and "layer 0: intermediate_size" in stdout and "fprune.hf.load" in stderr
    back = hf.load(out)
    widths = [f["intermediate_size"] for f in back.config.fprune_layer_widths]
    assert sum(widths) == 64 and [m.mlp.up_proj.out_features for m in back.model.layers] == widths


def test_approximate_prunes_bert_heads_and_hidden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    src = tmp_path / "bert"
    transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=64,
        max_position_embeddings=32, num_labels=2)).save_pretrained(src)
    assert main(["hf", "prune", str(src), str(tmp_path / "o"), "--heads", "0.5", "--no-progress"]) == 1
    assert "approximate=True" in capsys.readouterr().err
    assert main(["hf", "prune", str(src), str(tmp_path / "o"), "--heads", "0.5", "--approximate", "--no-progress"]) == 0
    back = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "o")
    assert (back.config.num_attention_heads, back.config.hidden_size) == (2, 16)
    assert json.loads((tmp_path / "o" / RECORD).read_text())["approximate"] is True
