"""The layers' boundaries: the run layer names no plug-in, MLflow stays inside its tracker, and a
second tracker (TensorBoard) records a real sweep through the same protocol."""

import re
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maml_rl.algorithms import ALGORITHMS
from maml_rl.envs import ENVS
from maml_rl.policies import POLICIES
from maml_rl.tracking import TRACKERS

from .conftest import TINY

PACKAGE = Path(__file__).resolve().parents[1] / "maml_rl"
COMMON_WORDS = {"none"}  # the null tracker's name is an English word


def test_the_run_layer_and_the_app_name_no_plugin():
    names = {e.name for registry in (ENVS, ALGORITHMS, POLICIES, TRACKERS) for e in registry} - COMMON_WORDS
    pattern = re.compile(r"\b(" + "|".join(sorted(names, key=len, reverse=True)) + r")\b", re.IGNORECASE)
    found = [f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}"
             for path in [*sorted((PACKAGE / "run").glob("*.py")), PACKAGE / "app.py"]
             for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_mlflow_is_imported_only_by_its_tracker():
    found = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
             if re.search(r"^\s*(import mlflow|from mlflow)", path.read_text(), re.MULTILINE)]
    assert found == ["tracking/mlflow.py"]


def run_app(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m maml_rl`` in this process's Python, printing at the end which tracking libraries it loaded."""
    code = ("import runpy, sys; sys.argv = ['maml_rl', *sys.argv[1:]]; "
            "runpy.run_module('maml_rl', run_name='__main__', alter_sys=True); "
            "print('loaded:', sorted(m for m in ('mlflow', 'tensorboard') if m in sys.modules))")
    return subprocess.run([sys.executable, "-c", code, *overrides], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


def test_tracking_none_never_loads_mlflow(tmp_path):
    proc = run_app(tmp_path, *TINY, "tracking=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded: []" in proc.stdout and not (tmp_path / "mlflow.db").exists()


def test_a_tensorboard_sweep_records_every_job_and_no_mlflow(tmp_path):
    proc = run_app(tmp_path, "--multirun", *TINY, "seed=0,1", "tracking=tensorboard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded: ['tensorboard']" in proc.stdout and not (tmp_path / "mlflow.db").exists()
    (sweep,) = tmp_path.glob("multirun/*/*")
    runs = sorted(p.parent for p in sweep.glob("*/tensorboard/*/events.out.tfevents.*"))
    assert [r.name for r in runs] == ["maml-trpo-navigation-s0", "maml-trpo-navigation-s1"]
    for run in runs:
        events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
        assert [e.step for e in events.Scalars("post_adaptation_return")] == [0, 1]
        assert {"train/kl", "time/env_steps_per_second", "train/objective"} <= set(events.Tags()["scalars"])
        assert len(events.Images("learning_curve")) == 3  # after iterations 1 and 2 (checkpoint_every=1), and the last
        assert {"params/text_summary", "tags/text_summary", "status/text_summary"} <= set(events.Tags()["tensors"])
    assert f"tensorboard --logdir {sweep}   then" in proc.stdout  # the sweep dir: every job in one view


def module_imports(path: Path) -> set[str]:
    """The package modules a module imports, at its top or inside a function (a lazy import is a dependency too)."""
    import ast

    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("maml_rl")}


def test_the_package_has_no_import_cycle():
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {m: {d for d in module_imports(p) if d in modules and d != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for dep in graph[module]:
            if state.get(dep) == 1:
                raise AssertionError(" -> ".join([*trail[trail.index(dep):], dep]) if dep in trail else dep)
            if dep not in state:
                visit(dep, [*trail, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
