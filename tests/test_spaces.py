"""Space files are checked before Ray starts: one line naming the file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ncf_tune import spaces
from ncf_tune.errors import NcfError

REPO = Path(__file__).resolve().parent.parent

GMF = """
model: gmf
params:
  factors: {choice: [8, 16]}
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  num_negatives: {randint: [2, 9]}
  batch_size: {qrandint: [128, 1024, 128]}
  alpha: {uniform: [0.2, 0.8]}
  l2: 0.0
num_samples: 3
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_shipped_spaces_load_as_a_chain_in_dependency_order():
    chain = spaces.load_chain(REPO / "search_spaces" / "neumf.yaml")
    assert [s.model for s in chain] == ["gmf", "mlp", "neumf"]
    neumf = chain[-1]
    assert set(neumf.pretrain) == {"gmf", "mlp"} and "factors" not in neumf.params
    ends = {int(v.split(",")[-1]) for v in chain[1].params["layers"].args}
    # the paper's predictive factors, as GMF's, and the wider tower of docs/RESULTS.md
    assert ends == {8, 16, 32, 64, 128}
    assert_points_inside_ranges(chain)


@pytest.mark.parametrize("name", ["neumf8.yaml", "neumf8-wider.yaml", "neumf16.yaml"])
def test_the_paper_table_search_spaces_load(name):
    # docs/RESULTS.md reproduces a row with these; they must stay valid spaces
    chain = spaces.load_chain(REPO / "benchmarks" / "paper_spaces" / name)
    assert [s.model for s in chain] == ["neumf"] and chain[0].max_epochs == 12
    assert_points_inside_ranges(chain)


def assert_points_inside_ranges(chain: list[spaces.Stage]) -> None:
    for stage in chain:  # the recipes tried first are inside the ranges searched
        for point in stage.searcher.points_to_evaluate:
            for key, value in point.items():
                param = stage.params[key]
                if param.kind == "choice":
                    value = ",".join(map(str, value)) if isinstance(value, list) else value
                    assert value in param.args, (stage.name, key)
                elif param.kind in ("uniform", "loguniform", "randint"):
                    assert param.args[0] <= value <= param.args[1], (stage.name, key)


def test_distributions_become_tune_domains(tmp_path):
    from ray import tune

    stage = spaces.parse(write(tmp_path, "gmf.yaml", GMF))
    space = stage.tune_space()
    assert isinstance(space["lr"], tune.search.sample.Float)
    assert isinstance(space["num_negatives"], tune.search.sample.Integer)
    assert space["l2"] == 0.0
    assert stage.params["batch_size"].args == (128, 1024, 128)


def test_overrides_replace_every_stages_budget(tmp_path):
    write(tmp_path, "gmf.yaml", GMF)
    write(tmp_path, "mlp.yaml", "model: mlp\nnum_samples: 7\n")
    top = write(tmp_path, "neumf.yaml", "model: neumf\npretrain: {gmf: gmf.yaml, mlp: mlp.yaml}\n")
    chain = spaces.load_chain(top, {"num_samples": 2, "max_epochs": 3, "data": None})
    assert [(s.num_samples, s.max_epochs) for s in chain] == [(2, 3)] * 3


def test_stage_key_changes_with_spec_data_and_upstream(tmp_path):
    stage = spaces.parse(write(tmp_path, "gmf.yaml", GMF))
    key = stage.key("data1", {})
    assert key == spaces.parse(tmp_path / "gmf.yaml").key("data1", {})
    assert key != stage.key("data2", {})
    assert key != stage.key("data1", {"gmf": "abc"})
    write(tmp_path, "gmf.yaml", GMF.replace("num_samples: 3", "num_samples: 4"))
    assert key != spaces.parse(tmp_path / "gmf.yaml").key("data1", {})


@pytest.mark.parametrize("text, expect", [
    ("model: [gmf\n", "line 2 not valid YAML"),
    ("- gmf\n", "expected a mapping"),
    ("model: gmf\nnum_sample: 3\n", "unknown key 'num_sample'; did you mean 'num_samples'?"),
    ("model: svd\n", "model='svd'"),
    ("model: gmf\npretrain_top: 2\n", "pretrain_top=2 is for a NeuMF stage with pretrain"),
    ("model: neumf\npretrain_top: 0\n", "pretrain_top=0 must be at least 1"),
    ("model: gmf\nnum_samples: lots\n", "num_samples='lots' is not an integer"),
    ("model: gmf\nparams: {lr: {uniform: [0.1, 0.01]}}\n", "low 0.1 must be below high 0.01"),
    ("model: gmf\nparams: {lr: {loguniform: [0, 0.01]}}\n", "loguniform: low 0 must be > 0"),
    ("model: gmf\nparams: {factors: {choice: []}}\n", "params.factors.choice is empty"),
    ("model: gmf\nparams: {lr: {logunif: [0.1, 1]}}\n", "did you mean 'loguniform'?"),
    ("model: gmf\nparams: {learning_rate: 0.1}\n", "params: unknown key 'learning_rate'"),
    ("model: gmf\nparams: {lr: -1}\n", "lr=-1.0 must be > 0"),
    ("model: gmf\nparams: {factors: {choice: [8, 0]}}\n", "factors=0 must be at least 1"),
    ("model: gmf\nparams: {epochs: 3}\n", "params.epochs is set by the stage"),
    ("model: gmf\nparams: {biases: maybe}\n", "biases='maybe' is not bool"),
    ("model: gmf\nparams: {num_negatives: {randint: [1.5, 4]}}\n", "randint takes integers"),
    ("model: gmf\nresources: {cpu: 1, tpu: 1}\n", "resources: unknown key 'tpu'"),
    ("model: gmf\nscheduler: {type: hyperband}\n", "scheduler.type='hyperband'"),
    ("model: gmf\nmetric: auc\n", "metric='auc'"),
    ("model: gmf\npretrain: {mlp: mlp.yaml}\n", "a GMF stage can pretrain from nothing"),
    ("model: neumf\npretrain: {gmf: missing.yaml, mlp: missing.yaml}\n",
     "pretrain.gmf: file"),
    ("model: gmf\nsearcher: {points_to_evaluate: [{lr: 0.1}]}\n",
     "points_to_evaluate[0].lr is not a searched param"),
])
def test_bad_space_files_fail_with_one_line_naming_file_and_key(tmp_path, text, expect):
    path = write(tmp_path, "space.yaml", text)
    with pytest.raises(NcfError) as err:
        spaces.load_chain(path)
    msg = str(err.value)
    assert expect in msg and str(path) in msg and "\n" not in msg


def test_cyclic_and_wrong_model_upstreams_are_refused(tmp_path):
    write(tmp_path, "a.yaml", "model: mlp\npretrain: {gmf: b.yaml}\n")
    write(tmp_path, "b.yaml", "model: gmf\n")
    write(tmp_path, "c.yaml", "model: neumf\npretrain: {gmf: a.yaml, mlp: a.yaml}\n")
    with pytest.raises(NcfError, match="pretrain.gmf names a.yaml, a MLP stage"):
        spaces.load_chain(tmp_path / "c.yaml")
    # a cycle: x (mlp) pretrains from y, y claims to be gmf but pretrains from x
    write(tmp_path, "x.yaml", "model: mlp\npretrain: {gmf: y.yaml}\n")
    write(tmp_path, "y.yaml", "model: mlp\npretrain: {gmf: x.yaml}\n")
    with pytest.raises(NcfError, match="pretrain cycle x.yaml -> y.yaml -> x.yaml"):
        spaces.load_chain(tmp_path / "x.yaml")


def test_search_cli_refuses_a_bad_space_before_starting_ray(tmp_path):
    path = write(tmp_path, "bad.yaml", "model: gmf\nparams: {lr: {uniform: [1, 0]}}\n")
    p = subprocess.run([sys.executable, "-m", "ncf_tune.search", "--space", str(path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"error: {path}: params.lr.uniform: low 1 must be below high 0"]
    assert not (tmp_path / "results").exists()
