"""`ruff check .` passes with the settings in pyproject.toml (the lint this project holds itself to)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes_with_the_committed_config():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[tool.ruff]" in (ROOT / "pyproject.toml").read_text()
