"""The installable package: a wheel built from the checkout runs outside it."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_installed_outside_the_checkout_trains_and_loads_its_policy(tmp_path):
    source = tmp_path / "source"  # a copy: the build's own build/ dir never meets the checkout's files
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "outputs",
                                                                  "multirun", "mlruns", "mlflow.db*", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("maml_rl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"maml_rl/conf/config.yaml", "maml_rl/conf/env/navigation.yaml", "maml_rl/experiments/smoke.yaml"} <= set(names)
    assert not [n for n in names if n.startswith("maml_rl/experiments/") and n.endswith(".py")]  # scripts stay out
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    launch = tmp_path / "elsewhere"
    launch.mkdir()
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "maml_rl", "experiment=smoke", "num_iterations=2", "threads=1"],
                          cwd=launch, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoint = proc.stdout.split("checkpoint: ")[1].split()[0]
    assert checkpoint.startswith(str(launch)) and (launch / "mlflow.db").is_file()
    code = ("import maml_rl, sys; p = maml_rl.load_policy(sys.argv[1]); "
            "print(maml_rl.__file__, type(p).__name__, p.obs_dim)")
    out = subprocess.run([sys.executable, "-c", code, checkpoint], cwd=launch, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0].startswith(str(tmp_path / "site")) and out[1:] == ["GaussianMLPPolicy", "2"]
