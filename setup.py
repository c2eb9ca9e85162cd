"""Ships the top-level configs/ inside the built package as normlab/configs/.

The metadata is in pyproject.toml. configs/ stays at the top of the checkout (users browse it;
the Makefile, docs and tests use it), so a wheel (`pip install .`) gets a copy at build time and
`normlab.cli.CONFIG_DIR` reads that copy; an editable install (`make install`) builds nothing
here and reads the checkout's configs/. The sdist carries configs/ through MANIFEST.in.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIGS = Path(__file__).resolve().parent / "configs"


class BuildPyWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads the checkout's configs/ in place
        target = Path(self.build_lib, "normlab", "configs")
        for source in sorted(CONFIGS.rglob("*.yaml")):
            dest = target / source.relative_to(CONFIGS)
            self.mkpath(str(dest.parent))
            self.copy_file(str(source), str(dest))


setup(cmdclass={"build_py": BuildPyWithConfigs})
