"""The repository's ``.pre-commit-hooks.yaml`` run by pre-commit itself in a throwaway git repository:
staged good migration passes, a staged bad one fails with its finding. ``try-repo`` installs this
checkout (its uncommitted changes too) the way a user's ``repo:`` entry would: the ``language: python``
hook builds its own environment (about a minute and a half here), the ``system`` one uses ours."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "dags" / "migrations" / "products_title_to_name"
BIN = Path(sys.executable).parent


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_the_hooks_pass_a_good_migration_and_fail_a_bad_one(tmp_path: Path) -> None:
    project = tmp_path / "project"
    good = project / "dags" / "migrations" / "good"
    shutil.copytree(EXAMPLE, good)
    git(project, "init", "-q")
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }

    def run_hooks() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "pre-commit"), "try-repo", str(REPO)],  # every hook of .pre-commit-hooks.yaml
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )

    git(project, "add", "-A")
    passed = run_hooks()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.count("Passed") == 2, passed.stdout
    git(project, "commit", "-q", "-m", "good migration")

    bad = project / "dags" / "migrations" / "bad"
    shutil.copytree(EXAMPLE, bad)
    expand = bad / "expand.sql"
    expand.write_text(expand.read_text() + "\nCREATE INDEX idx_products_title ON products (title);\n")
    git(project, "add", "-A")
    failed = run_hooks()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert failed.stdout.count("Failed") == 2, failed.stdout
    line = len(expand.read_text().splitlines())
    assert failed.stdout.count(f"bad/expand.sql:{line}: EX201 builds idx_products_title") == 2
