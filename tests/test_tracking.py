"""The default SQLite store under concurrent writers."""

import subprocess
import sys
from pathlib import Path

import mlflow

WRITER = """
import sys
from pathlib import Path
from maml_rl.run.build import start_tracker
from tests.conftest import composed
cfg = composed("seed=" + sys.argv[1], "tracking.experiment=concurrency")
tracker = start_tracker(cfg, Path(sys.argv[2]) / sys.argv[1], Path(sys.argv[2]))
for step in range(80):
    tracker.log_metrics({"a": step, "b": -step, "c": 0.5 * step}, step=step)
tracker.finish()
"""

WRITERS = 4  # processes writing to one SQLite store at once, 80 steps of three metrics each


def test_concurrent_jobs_lose_nothing(tmp_path):
    root = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(i), str(tmp_path)], stderr=subprocess.PIPE, cwd=root,
                              text=True) for i in range(WRITERS)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "concurrency"]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["seed"] for r in runs) == [str(i) for i in range(WRITERS)]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.params["inner.lr"] == "0.1"
        for name in "abc":
            assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == list(range(80))
