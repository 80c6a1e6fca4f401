"""Build step of the Hotpot Python client (metadata is in pyproject.toml).

In the repository (../../proto exists) every build runs gen.sh first: the gRPC stubs are generated from the .proto
files into hotpot/_gen and shipped inside the package, and the version is package.json's. Outside it (an sdist),
the stubs and version.py already in hotpot/_gen are used.
"""

import os
import re
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
IN_REPO = os.path.isdir(os.path.join(ROOT, "proto", "hotpot", "v1"))
GEN = os.path.join(HERE, "hotpot", "_gen")


def generate() -> None:
    if IN_REPO:
        subprocess.run(["bash", os.path.join(HERE, "gen.sh")], check=True)
    elif not os.path.isfile(os.path.join(GEN, "data_pb2.py")):
        raise SystemExit(f"hotpot: no generated stubs in {GEN} and no ../../proto to generate them from")


def version() -> str:
    if IN_REPO:
        path, pattern = os.path.join(ROOT, "package.json"), r'^  "version": "([^"]+)",$'
    else:
        path, pattern = os.path.join(GEN, "version.py"), r'^VERSION = "([^"]+)"$'
    with open(path, encoding="utf-8") as f:
        m = re.search(pattern, f.read(), re.M)
    if not m:
        raise SystemExit(f"hotpot: no version in {path}")
    return m.group(1)


class GenerateThenBuild(build_py):
    def run(self) -> None:
        generate()
        super().run()


class GenerateThenSdist(sdist):
    def run(self) -> None:
        generate()
        super().run()


setup(version=version(), cmdclass={"build_py": GenerateThenBuild, "sdist": GenerateThenSdist})
