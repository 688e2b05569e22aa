"""The wheels the GPU check needs that the GPU machine lacks, downloaded here into ``.gpu_bundle/`` (git-ignored).

The GPU machine has its own Python 3.12 with torch, torchvision, transformers, accelerate, peft, onnxruntime, OpenCV,
matplotlib and scipy, but not diffusers, PyAV or ultralytics, and it reaches no registry. Run here, from the
repository root, on a machine with pip access:

    python -m evaluation.bench.gpu_bundle            # -> .gpu_bundle/*.whl (about 45 MiB), the versions used here

then on the GPU machine (the device tool: ``carry=[".gpu_bundle"]``):

    bash evaluation/bench/gpu_check.sh

Each package is pinned to the version installed here (so the GPU runs what the tests ran) and fetched for CPython
3.12 manylinux x86-64 without its dependencies (``--no-deps``: those listed are the only ones missing there). The
bundle and the working tree travel together, under 64 MiB in all: the size is checked.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("diffusers", "av", "ultralytics-opencv-headless", "ultralytics-thop", "lap")
"""What the GPU check imports that the GPU machine's image does not hold (its package list: the device notes)."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
LIMIT_MIB = 64.0
"""What may travel to the GPU machine: the working tree and the bundle together."""


def pinned(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """``name==version`` of each package as installed here."""
    return [f"{name}=={metadata.version(name)}" for name in packages]


def download(folder: Path, requirements: list[str], python: str = "3.12") -> list[Path]:
    """pip-download ``requirements`` for CPython ``python`` on manylinux x86-64 into ``folder``; old wheels of other
    versions are removed first (two versions of one package stop the install there)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp", *platforms, "-d", str(folder), *requirements]
    subprocess.run(command, check=True)
    return sorted(folder.glob("*.whl"))


def tree_mib(root: Path) -> float:
    """MiB of the files git would send (tracked, and untracked but not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            check=True, capture_output=True).stdout.split(b"\0")
    return sum((root / name.decode()).stat().st_size for name in listed if name and (root / name.decode()).is_file()
               ) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(".gpu_bundle"))
    args = parser.parse_args()
    wheels = download(args.dir, pinned())
    bundle = sum(w.stat().st_size for w in wheels) / 2**20
    tree = tree_mib(Path.cwd())
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:6.1f} MiB  {wheel.name}")
    print(f"bundle {bundle:.1f} MiB + working tree {tree:.1f} MiB = {bundle + tree:.1f} MiB (limit {LIMIT_MIB:.0f})")
    if bundle + tree > LIMIT_MIB:
        sys.exit(f"error: {bundle + tree:.1f} MiB would travel, over {LIMIT_MIB:.0f} MiB: remove untracked files "
                 "from the working tree")


if __name__ == "__main__":
    main()
