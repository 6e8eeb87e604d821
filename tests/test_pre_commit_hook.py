"""The repository's ``.pre-commit-hooks.yaml`` run by pre-commit itself in a throwaway git repository:
a staged good migration passes, a staged bad one fails with its finding. The hooks come from a snapshot
of this checkout through a ``repo:`` entry, as a user's would: the ``language: python`` hook builds its
own environment once (pip-installs this package: the slow part), the ``system`` one uses ours."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "dags" / "migrations" / "products_title_to_name"
BIN = Path(sys.executable).parent


def git(cwd: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, input=stdin).stdout


def snapshot_of_this_checkout(target: Path) -> str:
    """This checkout as a git repository of one more commit (its uncommitted and untracked files too,
    as ``pre-commit try-repo`` would take them), so both runs below share one hook environment."""
    git(REPO.parent, "clone", "-q", str(REPO), str(target))
    diff = git(REPO, "diff", "HEAD", "--binary")
    if diff:
        git(target, "apply", "--whitespace=nowarn", stdin=diff)
    for name in git(REPO, "ls-files", "--others", "--exclude-standard", "-z").decode().split("\0"):
        if name:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    git(target, "add", "-A")
    git(target, "commit", "-q", "--allow-empty", "-m", "snapshot for the pre-commit test")
    return git(target, "rev-parse", "HEAD").decode().strip()


def test_the_hooks_pass_a_good_migration_and_fail_a_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }.items():
        monkeypatch.setenv(name, value)
    hooks = tmp_path / "hooks"
    rev = snapshot_of_this_checkout(hooks)
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project / "dags" / "migrations" / "good")
    (project / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {hooks}\n  rev: {rev}\n  hooks:\n"
        "  - id: airflow-expand-lint\n  - id: airflow-expand-lint-system\n"
    )
    (project / "scripts").mkdir()
    (project / "scripts" / "report.sql").write_text("SELECT count(*) FROM products;\n")  # not a migration's
    git(project, "init", "-q")

    def run_hooks() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "pre-commit"), "run"],  # on the staged files, as `git commit` would
            cwd=project,
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
