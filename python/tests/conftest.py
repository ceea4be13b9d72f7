import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cli():
    """Runs the streamsgd command line (STREAMSGD_BIN, else target/release/streamsgd)."""
    exe = os.environ.get("STREAMSGD_BIN") or str(ROOT / "target" / "release" / "streamsgd")
    if not os.path.exists(exe):
        exe = shutil.which("streamsgd")
    if exe is None:
        pytest.fail("the streamsgd binary is needed: cargo build --release, or set STREAMSGD_BIN")

    def run(*args):
        out = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
        assert out.returncode == 0, f"{args}: {out.stderr}"
        return out.stdout

    return run
