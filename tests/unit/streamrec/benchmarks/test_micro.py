"""``streamrec bench --micro`` runs its steps on a small workload (no Kafka)."""

from streamrec.benchmarks.load import prepare_workload
from streamrec.benchmarks.micro import run_micro


def test_every_step_is_timed_on_a_small_workload(tmp_path):
    workload = prepare_workload(300, 200, 3_000, seed=1, cache_dir=tmp_path / "cache", dim=16)
    costs = run_micro(workload, batch_size=200, budget_s=0.01)
    assert {"decode_batch (+ key check)", "process_batch (whole core, per event)",
            "naive handle_event (whole core, per event)"} <= set(costs)
    assert all(value > 0 for value in costs.values())
