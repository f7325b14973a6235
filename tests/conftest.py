import os
import shutil
import subprocess
import sys

import pytest

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as edgeprune._tf, for modules importing TensorFlow first
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IN_CI = os.environ.get("CI") == "true"


def require_tool(name: str) -> str:
    """The path of a system tool a test needs. In CI a missing tool fails the test (CI installs
    them all); elsewhere the test is skipped with the package to install."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is missing in CI: .ci/run must install it")
        pytest.skip(f"{name} is not installed (make test installs it)")
    return path


@pytest.fixture
def cli_run(tmp_path):
    """Runs the real `edgeprune` command in a subprocess; returns CompletedProcess."""

    def _run(*args, cwd=None, timeout=600, env=None):
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "edgeprune", *map(str, args)],
            cwd=cwd or tmp_path, capture_output=True, text=True, timeout=timeout, env=full_env,
        )

    return _run


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder holding tiny.keras, a small CNN trained on real Fashion-MNIST (see core_fixtures)."""
    import core_fixtures

    d = tmp_path_factory.mktemp("tiny")
    core_fixtures.trained_tiny_path(str(d))
    return d
