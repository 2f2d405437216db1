"""A two-node Ray cluster on this machine (one CPU each) runs a tiny chain, with trials,
checkpoints and the chain's hand-off in --storage given as a URI."""

from __future__ import annotations

import csv

import ray
from conftest import make_ratings, write_dat
from ray.cluster_utils import Cluster

from ncf_tune import search

GMF = """
model: gmf
data: {data}
params: {{factors: 4, batch_size: 64, lr: {{choice: [0.01, 0.02]}}}}
num_samples: 2
max_epochs: 2
scheduler: {{type: none}}
"""
MLP = GMF.replace("model: gmf", "model: mlp").replace("factors: 4", "layers: [8, 4]")
NEUMF = """
model: neumf
data: {data}
pretrain: {{gmf: gmf.yaml, mlp: mlp.yaml}}
params: {{batch_size: 64, lr: {{choice: [0.001, 0.002]}}}}
num_samples: 2
max_epochs: 1
scheduler: {{type: none}}
"""


def test_two_node_cluster_runs_the_chain_on_both_nodes_through_storage(tmp_path):
    ratings = write_dat(tmp_path / "ratings.dat", make_ratings(num_users=80, num_items=150))
    for name, text in (("gmf", GMF), ("mlp", MLP), ("neumf", NEUMF)):
        (tmp_path / f"{name}.yaml").write_text(text.format(data=ratings))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        summaries = search.run_chain(tmp_path / "neumf.yaml", results_dir=tmp_path / "r",
                                     experiment="e", address=cluster.address,
                                     storage=f"file://{tmp_path}/shared")
        assert not ray.is_initialized()  # the search left the cluster it joined
        ray.init(address=cluster.address)
        nodes = {n["NodeID"][:12] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert [s.stage for s in summaries] == ["gmf", "mlp", "neumf"]
    assert len(nodes) == 2
    used = set()
    # trials live in the storage, results/ holds only the stage results
    assert not list((tmp_path / "r" / "e").glob("*/tune"))
    assert (tmp_path / "r" / "e" / "neumf" / "best_model.pt").is_file()
    for progress in (tmp_path / "shared" / "e").glob("*/tune/*/progress.csv"):
        with open(progress) as f:
            used |= {row["node"] for row in csv.DictReader(f)}
    assert used == nodes  # trials ran on both nodes
    # NeuMF trials loaded the upstream winners from the storage, wherever they ran
    assert summaries[-1].statuses["completed"] == 2
    neumf = summaries[-1].best_config
    assert neumf["pretrain_gmf"] == f"file://{tmp_path}/shared/e/gmf/best_model.pt"
    assert neumf["pretrain_mlp"] == f"file://{tmp_path}/shared/e/mlp/best_model.pt"
