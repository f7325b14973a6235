import sys
import subprocess


def test_help_lists_commands_without_importing_tensorflow():
    code = (
        "import sys\n"
        "from edgeprune.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'tensorflow' not in sys.modules, 'edgeprune --help imported tensorflow'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Prune, quantize and export" in r.stdout


def test_unknown_command_is_one_line_exit_2(cli_run):
    r = cli_run("frobnicate")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: No such command 'frobnicate'"), r.stderr


def test_public_api_is_lazy_and_complete():
    code = (
        "import sys, edgeprune\n"
        "assert 'tensorflow' not in sys.modules\n"
        "missing = [n for n in edgeprune.__all__ if not hasattr(edgeprune, n)]\n"
        "assert not missing, missing\n"
        "print(edgeprune.__version__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "0.1.0"
