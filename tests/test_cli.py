"""The fprune command line: prune, apply, demo (a tiny configuration), and its error handling."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.fx import GraphModule

from fprune import Options, apply_patterns, load_plan
from fprune.cli import load_factory, main
from fprune.errors import FpruneError, InvalidArgumentError
from fprune.modules import PrunedLayerNorm

MODELS = '''
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )

def other():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))

def not_a_model():
    return 42

def layers():
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("layer1", nn.Sequential(nn.Linear(4, 8), nn.ReLU()))
    net.add_module("layer2", nn.Sequential(nn.Linear(8, 8), nn.ReLU()))
    net.add_module("layer3", nn.Sequential(nn.Linear(8, 8), nn.ReLU()))
    net.add_module("layer4", nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU()))
    net.add_module("fc", nn.Linear(8, 2))
    return net

def layer_norm():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))

def rms_norm():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.RMSNorm(8, eps=1e-6, elementwise_affine=False), nn.ReLU(),
                         nn.Linear(8, 2))

class Cumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 2)

    def forward(self, x):
        return self.b(torch.cumsum(self.a(x), dim=1))

def unknown_op():
    torch.manual_seed(0)
    return Cumsum()

instance = build()
'''
MOD = "fprune_cli_test_models"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A current directory holding an importable module of model factories."""
    (tmp_path / f"{MOD}.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, MOD, raising=False)
    yield tmp_path
    sys.modules.pop(MOD, None)


def _build() -> torch.nn.Module:
    return load_factory(f"{MOD}:build")


def test_prune_writes_plan_and_prints_summary(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """prune writes a plan that load_plan reads back and prints the per-layer table with MACs."""
    rc = main(["prune", f"{MOD}:build", "--sparsity", "0.5", "--scorer", "l2", "--plan", "plan.json",
               "--input-shape", "1,3,8,8"])
    out, err = capsys.readouterr()
    assert rc == 0
    plan = load_plan((workdir / "plan.json").read_text(), _build())
    assert {k: int(m.sum()) for k, m in plan.masks.items()} == {"0": 4, "3": 8}
    assert "total" in out and "Conv2d" in out and "8→4" in out and "MACs" in out
    assert f"{3 * 8 * 64 * 9:,}" in out  # first conv's MACs before pruning
    assert err.count("fprune: warning: left unpruned: '7'") == 1
    assert "wrote the plan to plan.json" in err


def test_apply_saves_the_pruned_graphmodule(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """apply loads a saved plan into a fresh model and saves the same pruned GraphModule as prune --save."""
    assert main(["prune", f"{MOD}:build", "--sparsity", "0.25", "--scorer", "fpgm", "--plan", "p.json",
                 "--save", "a.pt"]) == 0
    assert main(["apply", f"{MOD}:build", "p.json", "--out", "b.pt", "--input-shape", "2,3,8,8"]) == 0
    out = capsys.readouterr().out
    assert out.count("total") == 2
    a = torch.load(workdir / "a.pt", weights_only=False)
    b = torch.load(workdir / "b.pt", weights_only=False)
    expected = apply_patterns(load_plan((workdir / "p.json").read_text(), _build())).eval()
    assert isinstance(a, GraphModule) and isinstance(b, GraphModule)
    x = torch.randn(2, 3, 8, 8)
    for model in (a.eval(), b.eval()):
        assert model.get_submodule("0").out_channels == 6
        torch.testing.assert_close(model(x), expected(x), rtol=0, atol=0)


def test_apply_plan_of_other_architecture(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A plan for another architecture exits 1 with one error line and writes nothing."""
    assert main(["prune", f"{MOD}:build", "--sparsity", "0.5", "--plan", "p.json"]) == 0
    capsys.readouterr()
    assert main(["apply", f"{MOD}:other", "p.json", "--out", "o.pt"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fprune: error: ") and "architecture it was computed for" in err
    assert not (workdir / "o.pt").exists()


@pytest.mark.parametrize("text", ["hello", '{"format": "nope"}'])
def test_apply_text_that_is_not_a_plan(workdir: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    """A file that is not a plan JSON exits 1 and says what a plan looks like."""
    (workdir / "bad.json").write_text(text)
    assert main(["apply", f"{MOD}:build", "bad.json", "--out", "o.pt"]) == 1
    err = capsys.readouterr().err
    assert "not a plan" in err and "fprune.plan/1" in err
    assert not (workdir / "o.pt").exists()


@pytest.mark.parametrize(
    "spec, words",
    [
        ("no_colon_here", "package.module:factory"),
        ("fprune_no_such_module_xyz:build", "cannot import module"),
        (f"{MOD}:missing", "has no attribute 'missing'"),
        (f"{MOD}:not_a_model", "must build an nn.Module"),
    ],
)
def test_bad_model_spec(workdir: Path, capsys: pytest.CaptureFixture[str], spec: str, words: str) -> None:
    """A model spec that does not build an nn.Module exits 1 with an explanation."""
    assert main(["prune", spec, "--sparsity", "0.5", "--plan", "p.json"]) == 1
    assert words in capsys.readouterr().err
    assert not (workdir / "p.json").exists()


def test_load_factory_accepts_instances(workdir: Path) -> None:
    """An nn.Module attribute is used as is; a factory is called."""
    assert isinstance(load_factory(f"{MOD}:instance"), torch.nn.Sequential)
    with pytest.raises(InvalidArgumentError) as info:
        load_factory("nocolon")
    assert isinstance(info.value, FpruneError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["prune", "m:f", "--sparsity", "1.0", "--plan", "p.json"], "[0, 1)"),
        (["prune", "m:f", "--sparsity", "0.5", "--scorer", "taylor", "--plan", "p.json"], "invalid choice"),
        (["prune", "m:f", "--sparsity", "0.5", "--plan", "p.json", "--input-shape", "1,-3"], "positive ints"),
        (["demo", "--out", "d", "--sparsities", "0.5,1.2"], "[0, 1)"),
        ([], "usage: fprune"),
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    """Malformed arguments exit 2 with argparse's usage message."""
    assert main(argv) == 2
    assert words in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# Choosing what to prune: --strict, --ignore-outputs/-inputs, --per-module, --prune-outputs, --approximate

LAYERS = ("layer1.0", "layer2.0", "layer3.0", "layer4.0", "layer4.2", "fc")


def _widths(workdir: Path, names: tuple[str, ...] = LAYERS) -> dict[str, int]:
    """out_features of the named Linear layers in the saved pruned GraphModule."""
    pruned = torch.load(workdir / "p.pt", weights_only=False)
    return {name: pruned.get_submodule(name).out_features for name in names}


def _kept(workdir: Path, spec: str, *flags: str) -> dict[str, int]:
    """Kept channels per pruned group of the written plan, read back with the options the flags name."""
    options = Options(prune_outputs="--prune-outputs" in flags, approximate="--approximate" in flags)
    plan = load_plan((workdir / "p.json").read_text(), load_factory(spec), options)
    return {k: int(m.sum()) for k, m in plan.masks.items() if not bool(m.all())}


def test_default_prunes_every_hidden_group(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without selection flags every hidden group loses half its channels and the output layer warns."""
    assert main(["prune", f"{MOD}:layers", "--sparsity", "0.5", "--plan", "p.json", "--save", "p.pt"]) == 0
    assert _widths(workdir) == {"layer1.0": 4, "layer2.0": 4, "layer3.0": 4, "layer4.0": 4, "layer4.2": 4, "fc": 2}
    assert "left unpruned: 'fc'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, widths",
    [
        (["--ignore-outputs", "layer2"], {"layer2.0": 8}),
        (["--ignore-outputs", "layer4.*"], {"layer4.0": 8, "layer4.2": 8}),
        (["--ignore-outputs", "layer1", "--ignore-outputs", "layer3.0"], {"layer1.0": 8, "layer3.0": 8}),
        (["--ignore-inputs", "fc"], {"layer4.2": 8}),
        (["--ignore-inputs", "layer[23]"], {"layer1.0": 8, "layer2.0": 8}),
        (["--ignore-outputs", "layer1", "--ignore-inputs", "fc"], {"layer1.0": 8, "layer4.2": 8}),
    ],
    ids=["name", "glob", "repeated", "inputs", "inputs-glob", "both"],
)
def test_ignore_keeps_the_selected_groups_whole(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                flags: list[str], widths: dict[str, int]) -> None:
    """--ignore-outputs/--ignore-inputs leave the selected modules at full width; every other group is pruned."""
    assert main(["prune", f"{MOD}:layers", "--sparsity", "0.5", "--plan", "p.json", "--save", "p.pt", *flags]) == 0
    expected = {name: 4 for name in LAYERS[:-1]} | {"fc": 2} | widths
    assert _widths(workdir) == expected
    assert _kept(workdir, f"{MOD}:layers") == {k: v for k, v in expected.items() if k not in widths and k != "fc"}


@pytest.mark.parametrize(
    "items, widths",
    [
        (["layer4.*=0.75"], {"layer4.0": 2, "layer4.2": 2}),
        (["layer2=0.25", "layer3.0=0"], {"layer2.0": 6, "layer3.0": 8}),
        (["layer4.2=0.125", "layer4=0.75"], {"layer4.0": 2, "layer4.2": 7}),  # the first match wins
        (["layer4=0.75", "layer4.2=0.125"], {"layer4.0": 2, "layer4.2": 2}),
        (["layer[12]* = 0.875"], {"layer1.0": 1, "layer2.0": 1}),
    ],
    ids=["glob", "two", "first-wins", "first-wins-reversed", "spaces"],
)
def test_per_module_gives_exact_kept_counts(workdir: Path, capsys: pytest.CaptureFixture[str],
                                           items: list[str], widths: dict[str, int]) -> None:
    """--per-module items set the sparsity of the groups they match, in order; the rest get --sparsity."""
    flags = [arg for item in items for arg in ("--per-module", item)]
    assert main(["prune", f"{MOD}:layers", "--sparsity", "0.5", "--plan", "p.json", "--save", "p.pt", *flags]) == 0
    expected = {name: 4 for name in LAYERS[:-1]} | {"fc": 2} | widths
    assert _widths(workdir) == expected
    assert _kept(workdir, f"{MOD}:layers") == {k: v for k, v in expected.items() if k != "fc" and v < 8}


def test_ignore_and_per_module_together(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An ignored group stays whole even when a --per-module item matches it."""
    assert main(["prune", f"{MOD}:layers", "--sparsity", "0.5", "--plan", "p.json", "--save", "p.pt",
                 "--ignore-outputs", "layer4.2", "--per-module", "layer4=0.75"]) == 0
    assert _widths(workdir) == {"layer1.0": 4, "layer2.0": 4, "layer3.0": 4, "layer4.0": 2, "layer4.2": 8, "fc": 2}


def test_readme_command_line_example(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's example with the selection flags runs and does what its text says."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    line = next(line for line in readme.splitlines() if line.startswith("fprune prune") and "--per-module" in line)
    argv = shlex.split(line.replace("package.module:factory", f"{MOD}:layers"))
    assert argv[:2] == ["fprune", "prune"] and "--save" not in argv
    assert main([*argv[1:], "--save", "p.pt"]) == 0
    assert _widths(workdir) == {"layer1.0": 8, "layer2.0": 6, "layer3.0": 2, "layer4.0": 4, "layer4.2": 8, "fc": 2}
    assert "left unpruned: 'fc'" in capsys.readouterr().err


def test_prune_outputs_prunes_the_output_layer(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--prune-outputs reaches the plan: the output layer is pruned, no warning, and apply replays it."""
    assert main(["prune", f"{MOD}:layers", "--sparsity", "0.5", "--plan", "p.json", "--save", "p.pt",
                 "--prune-outputs"]) == 0
    assert _widths(workdir)["fc"] == 1
    assert "warning" not in capsys.readouterr().err
    assert _kept(workdir, f"{MOD}:layers", "--prune-outputs")["fc"] == 1
    assert main(["apply", f"{MOD}:layers", "p.json", "--out", "a.pt"]) == 1  # the plan needs --prune-outputs
    assert "fprune: error: " in capsys.readouterr().err
    assert main(["apply", f"{MOD}:layers", "p.json", "--out", "a.pt", "--prune-outputs"]) == 0


def test_approximate_prunes_through_an_inexact_norm(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--approximate reaches the plan: a group under a weightless RMSNorm is pruned; apply needs it too."""
    assert main(["prune", f"{MOD}:rms_norm", "--sparsity", "0.5", "--plan", "p.json", "--save", "p.pt"]) == 0
    assert _widths(workdir, ("0",)) == {"0": 8}
    assert "left unpruned: '0'" in capsys.readouterr().err
    assert main(["prune", f"{MOD}:rms_norm", "--sparsity", "0.5", "--plan", "p.json", "--save", "p.pt",
                 "--approximate"]) == 0
    assert _widths(workdir, ("0",)) == {"0": 4}
    assert torch.load(workdir / "p.pt", weights_only=False).get_submodule("1").normalized_shape == (4,)
    assert "left unpruned: '0'" not in capsys.readouterr().err
    assert main(["apply", f"{MOD}:rms_norm", "p.json", "--out", "a.pt"]) == 1
    assert "fprune: error: " in capsys.readouterr().err
    assert main(["apply", f"{MOD}:rms_norm", "p.json", "--out", "a.pt", "--approximate"]) == 0


def test_layer_norm_is_exact_and_approximate_makes_it_plain(workdir: Path) -> None:
    """A LayerNorm over the pruned channels: a PrunedLayerNorm by default, a plain LayerNorm with --approximate."""
    assert main(["prune", f"{MOD}:layer_norm", "--sparsity", "0.5", "--plan", "p.json", "--save", "p.pt"]) == 0
    norm = torch.load(workdir / "p.pt", weights_only=False).get_submodule("1")
    assert type(norm) is PrunedLayerNorm and norm.normalized_shape == (4,) and norm.full_width == 8
    assert main(["prune", f"{MOD}:layer_norm", "--sparsity", "0.5", "--plan", "p.json", "--save", "p.pt",
                 "--approximate"]) == 0
    norm = torch.load(workdir / "p.pt", weights_only=False).get_submodule("1")
    assert type(norm) is nn.LayerNorm and norm.normalized_shape == (4,)


def test_strict_refuses_an_unknown_op(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--strict turns the unknown-op warning into exit 1 naming group, node and op; nothing is written."""
    assert main(["prune", f"{MOD}:unknown_op", "--sparsity", "0.5", "--plan", "p.json"]) == 0
    err = capsys.readouterr().err
    assert "fprune: warning: left unpruned: 'a'" in err and "node 'cumsum'" in err
    (workdir / "p.json").unlink()
    assert main(["prune", f"{MOD}:unknown_op", "--sparsity", "0.5", "--plan", "p.json", "--save", "p.pt",
                 "--strict"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fprune: error: strict=True: ") and err.count("\n") == 1
    assert "group 'a'" in err and "node 'cumsum'" in err and "Fix:" in err
    assert not (workdir / "p.json").exists() and not (workdir / "p.pt").exists()


def test_strict_passes_a_model_it_understands(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--strict changes nothing where every op is understood."""
    assert main(["prune", f"{MOD}:layers", "--sparsity", "0.5", "--plan", "p.json", "--save", "p.pt", "--strict"]) == 0
    assert _widths(workdir)["layer1.0"] == 4


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--ignore-outputs", "layr4"], "ignore(outputs='layr4'), outputs: 'layr4' matches no module of the model "
                                        "(did you mean "),
        (["--ignore-inputs", "fc2"], "'fc2' matches no module of the model (did you mean 'fc'"),
        (["--per-module", "layer5.*=0.5"], "per_module: 'layer5.*' matches no producer of a channel group"),
        (["--per-module", "fc=0.2", "--per-module", "fc=0.3"], "--per-module gives the pattern 'fc' twice"),
    ],
    ids=["ignore-outputs", "ignore-inputs", "per-module", "per-module-twice"],
)
def test_pattern_errors_exit_1(workdir: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
                               words: str) -> None:
    """A pattern matching no module exits 1 with the library's message and the closest names; nothing is written."""
    assert main(["prune", f"{MOD}:layers", "--sparsity", "0.5", "--plan", "p.json", *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fprune: error: ") and err.count("\n") == 1
    assert words in err and "Fix:" in err
    assert not (workdir / "p.json").exists()


@pytest.mark.parametrize(
    "item, words",
    [
        ("layer4", "got 'layer4'"),
        ("=0.5", "got '=0.5'"),
        ("layer4=", "got 'layer4=', whose sparsity '' is not a number"),
        ("layer4=half", "got 'layer4=half', whose sparsity 'half' is not a number"),
        ("layer4=1.0", "got 'layer4=1.0', whose sparsity 1.0 is not in [0, 1)"),
        ("layer4=nan", "whose sparsity nan is not in [0, 1)"),
    ],
)
def test_malformed_per_module_exits_2(capsys: pytest.CaptureFixture[str], item: str, words: str) -> None:
    """A --per-module item that is not PATTERN=SPARSITY is a usage error naming the item and the expected form."""
    assert main(["prune", "m:f", "--sparsity", "0.5", "--plan", "p.json", "--per-module", item]) == 2
    err = capsys.readouterr().err
    assert "argument --per-module: expected PATTERN=SPARSITY" in err and "e.g. 'layer4.*=0.7'" in err
    assert words in err


def test_empty_ignore_pattern_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An empty --ignore-outputs pattern is a usage error."""
    assert main(["prune", "m:f", "--sparsity", "0.5", "--plan", "p.json", "--ignore-outputs", ""]) == 2
    assert "argument --ignore-outputs: expected a module name or fnmatch glob" in capsys.readouterr().err


def test_python_m_fprune() -> None:
    """python -m fprune runs the same command line."""
    done = subprocess.run([sys.executable, "-m", "fprune", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "fprune 0.1.0"


# --------------------------------------------------------------------------------------
# The demo, in a tiny configuration (the full one runs in benchmarks/RESULTS.md)


def test_demo_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fprune demo writes report.md and the PNG, prints the table and reports the output-layer warning once."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    rc = main(["demo", "--out", str(tmp_path / "out"), "--epochs", "1", "--finetune-epochs", "1",
               "--methods", "L1,Taylor", "--sparsities", "0.5", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("| method | sparsity | params | MACs | latency speedup | accuracy before fine-tune")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["unpruned", "L1", "Taylor"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "\n".join(lines) in report and "accuracy_vs_macs.png" in report
    assert (tmp_path / "out" / "accuracy_vs_macs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert err.count("left unpruned: 'head'") == 1


def test_demo_is_deterministic(tmp_path: Path) -> None:
    """Two runs with the same seed give the same accuracies, params and MACs, and restore torch's state."""
    pytest.importorskip("sklearn")
    from fprune.demo import DemoConfig, SweepRow, run_demo

    config = DemoConfig(epochs=1, finetune_epochs=1, methods=("random",), sparsities=(0.3,), width=8,
                        latency_batch=8, latency_repeats=1, progress=False)
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    first = run_demo(tmp_path / "a", config)
    second = run_demo(tmp_path / "b", config)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)
    assert not torch.are_deterministic_algorithms_enabled()

    def stable(row: SweepRow) -> dict[str, object]:
        return {k: v for k, v in dataclasses.asdict(row).items() if k not in ("latency_ms", "speedup")}

    assert [stable(r) for r in (first.baseline, *first.rows)] == [stable(r) for r in (second.baseline, *second.rows)]
    assert first.rows[0].params < first.baseline.params and first.rows[0].macs < first.baseline.macs
    assert first.recovery == second.recovery
    assert [r.scorer for r in first.recovery] == ["l1", "activation", "wanda", "flap"]
    assert all(0.0 <= acc <= 1.0 for r in first.recovery for acc in (r.none, r.bias, r.lstsq))
    report = first.report.read_text()
    assert "## Retraining-free recovery" in report and first.recovery_table() in report
    assert "--no-recovery" in run_demo(tmp_path / "c", dataclasses.replace(config, recovery=False)).report.read_text()


def test_demo_missing_dependency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Without the demo extra, the demo says to pip install 'fprune[demo]'."""
    from fprune.demo import run_demo
    from fprune.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` raise ImportError
    with pytest.raises(MissingDependencyError) as info:
        run_demo(tmp_path)
    assert isinstance(info.value, ImportError) and isinstance(info.value, FpruneError)
    assert main(["demo", "--out", str(tmp_path)]) == 1
    assert "pip install 'fprune[demo]'" in capsys.readouterr().err


def test_demo_config_is_checked() -> None:
    """Unknown methods and out-of-range sparsities are refused when the config is built."""
    from fprune.demo import DemoConfig

    with pytest.raises(InvalidArgumentError, match="methods among"):
        DemoConfig(methods=("L3",))
    with pytest.raises(InvalidArgumentError, match=r"\[0, 1\)"):
        DemoConfig(sparsities=(1.0,))
    with pytest.raises(InvalidArgumentError, match="epochs"):
        DemoConfig(epochs=0)
