"""Where the repository and its standard folders are, for the tools that default to them.

Example:
    >>> (REPO_ROOT / "networks" / "__init__.py").is_file()
    True
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNS_DIR = REPO_ROOT / "runs"
DATA_DIR = REPO_ROOT / "data"
EVALUATION_DIR = REPO_ROOT / "evaluation"
