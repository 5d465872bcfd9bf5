"""Ship the top-level ``conf/`` and the presets ``experiments/*.yaml`` inside the package.

They stay at the repository's top level (the product's layout); a built wheel carries them as
``maml_rl/conf`` and ``maml_rl/experiments``, where ``maml_rl.config`` looks first. An editable
install reads them from the checkout.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = {"conf": "**/*.yaml", "experiments": "*.yaml"}  # top-level dir → files copied into maml_rl/<dir>


class BuildWithConfig(build_py):
    """``build_py`` that also copies ``SHIPPED`` into the built package."""

    def run(self):
        super().run()
        if self.editable_mode:  # the checkout's own files are read in place
            return
        for folder, pattern in SHIPPED.items():
            for source in sorted((ROOT / folder).glob(pattern)):
                target = Path(self.build_lib) / "maml_rl" / folder / source.relative_to(ROOT / folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


setup(cmdclass={"build_py": BuildWithConfig})
