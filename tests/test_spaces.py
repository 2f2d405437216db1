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
    # the paper's predictive factors from 16 up, as GMF's by SGD or Adam, and the wider
    # tower; GMF by ALS from 64 up (192: Rendle et al.)
    factors = chain[0].params["factors"].branches()
    assert ends == {16, 32, 64, 128} == set(factors["sgd"].args) == set(factors["adam"].args)
    assert 192 in factors["als"].args
    # three GMF families, each with its own learning-rate range (ALS: none, fixed)
    assert set(chain[0].params["lr"].branches()) == {"sgd", "adam", "als"}
    assert chain[0].params["lr"].branches()["als"].kind == "fixed"
    # a NeuMF may end as either pure part: alpha spans 0..1
    assert neumf.params["alpha"].args == (0.0, 1.0)
    assert sum(s.budget_share for s in chain) == pytest.approx(1.0)
    assert neumf.time_budget == "55m"  # the default search ends within an hour


@pytest.mark.parametrize("name", ["neumf8.yaml", "neumf8-wider.yaml", "neumf16.yaml"])
def test_the_paper_table_search_spaces_load(name):
    # docs/RESULTS.md reproduces a row with these; they must stay valid spaces
    chain = spaces.load_chain(REPO / "benchmarks" / "paper_spaces" / name)
    assert [s.model for s in chain] == ["neumf"] and chain[0].max_epochs == 12


def test_no_recipes_drops_every_stages_points_and_changes_the_key():
    shipped = spaces.load_chain(REPO / "search_spaces" / "neumf.yaml")
    bare = spaces.load_chain(REPO / "search_spaces" / "neumf.yaml", {"no_recipes": True})
    assert all(s.searcher.points_to_evaluate for s in shipped)
    assert not any(s.searcher.points_to_evaluate for s in bare)
    assert shipped[0].key("d", {}) != bare[0].key("d", {})
    assert bare[0].searcher.n_startup_trials == shipped[0].searcher.n_startup_trials


def test_a_conditional_param_is_drawn_per_branch_and_recipes_keep_their_value(tmp_path):
    import optuna

    path = write(tmp_path, "gmf.yaml", """
model: gmf
params:
  optimizer: {choice: [sgd, adam]}
  lr: {by: optimizer, sgd: {loguniform: [10.0, 100.0]}, adam: {loguniform: [1.0e-4, 1.0e-2]}}
  momentum: 0.0
searcher: {points_to_evaluate: [{optimizer: adam, lr: 0.001}]}
""")
    stage = spaces.load_chain(path)[0]
    assert stage.optuna_points() == [{"optimizer": "adam", "lr@adam": 0.001}]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {}
    for _ in range(30):
        trial = study.ask()
        lr = stage.define_by_run(trial)["lr"]
        opt = trial.params["optimizer"]
        assert trial.params[f"lr@{opt}"] == lr and f"lr@{'adam' if opt == 'sgd' else 'sgd'}" \
            not in trial.params
        seen.setdefault(opt, []).append(lr)
    assert all(10 <= v <= 100 for v in seen["sgd"]) and all(v <= 0.01 for v in seen["adam"])


def test_pretrain_paths_with_dotdot_resolve_to_the_stage_files(tmp_path):
    (tmp_path / "up").mkdir()
    (tmp_path / "here").mkdir()
    write(tmp_path / "up", "gmf.yaml", "model: gmf\n")
    write(tmp_path / "up", "mlp.yaml", "model: mlp\n")
    write(tmp_path / "here", "neumf.yaml", "model: neumf\npretrain_top: 2\n"
          "pretrain: {gmf: ../up/gmf.yaml, mlp: ../up/mlp.yaml}\n")
    chain = spaces.load_chain(tmp_path / "here" / "neumf.yaml")
    # the chain finds each upstream stage by its path: these must be the same paths
    assert chain[-1].pretrain == {"gmf": chain[0].path, "mlp": chain[1].path}
    assert ".." not in str(chain[-1].pretrain["gmf"])


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
    ("model: gmf\nparams: {lr: {uniform: [0.1, 1]}, factors: {choice: [8, 16]}}\n"
     "searcher: {points_to_evaluate: [{lr: 0.5}]}\n",
     "points_to_evaluate[0]: no value for the searched param factors"),
    ("model: gmf\nparams: {lr: {uniform: [0.1, 1]}}\n"
     "searcher: {points_to_evaluate: [{lr: 2.0}]}\n",
     "points_to_evaluate[0].lr=2.0 is outside its uniform (0.1, 1)"),
    ("model: gmf\nparams: {factors: {choice: [8, 16]}}\n"
     "searcher: {points_to_evaluate: [{factors: 12}]}\n",
     "points_to_evaluate[0].factors=12 is outside its choice [8, 16]"),
    ("model: gmf\nparams: {num_negatives: {randint: [2, 5]}}\n"
     "searcher: {points_to_evaluate: [{num_negatives: 5}]}\n",
     "points_to_evaluate[0].num_negatives=5 is outside its randint"),
    ("model: gmf\nparams: {optimizer: {choice: [sgd, adam]}, lr: {by: optimizer, "
     "sgd: {uniform: [1, 2]}}}\n", "params.lr: give one entry per value of optimizer"),
    ("model: gmf\nparams: {lr: {by: optimizer, sgd: 0.1}}\n",
     "params.lr.by: 'optimizer' must be a choice (or fixed) param listed before lr"),
    ("model: gmf\nmode: min\n", "mode='min': HR and NDCG are better when higher"),
    ("model: gmf\neval: complete\n", "eval='complete'; choose sampled"),
    ("model: gmf\ntime_budget: soon\n", "time_budget: 'soon' is not a duration like 90s"),
    ("model: gmf\nparams: {eval: full}\n", "params.eval is set by the stage itself"),
    ("model: gmf\nmax_concurrent: 0\n", "max_concurrent=0 must be at least 1"),
    ("model: gmf\nbudget_share: 0\n", "budget_share=0 must be at least 0.01"),
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


def test_a_choice_is_checked_with_the_values_its_branches_give_it(tmp_path):
    text = """model: gmf
params:
  optimizer: {choice: [sgd, als]}
  embedding_l2:
    by: optimizer
    sgd: 0.0
    als: {loguniform: [1.0e-3, 1.0e-2]}
  dot_product: true
num_samples: 3
"""
    spaces.load_chain(write(tmp_path, "ok.yaml", text))  # sgd with 0, als with its range
    with pytest.raises(NcfError, match="needs embedding_l2 > 0"):
        spaces.load_chain(write(tmp_path, "bad.yaml", text.replace(
            "als: {loguniform: [1.0e-3, 1.0e-2]}", "als: 0.0")))
