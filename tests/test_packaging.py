"""The wheel carries the migrations, and `wasteaudit db upgrade` works from it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_migrations_and_upgrades_a_fresh_database(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(dist.glob("wasteaudit-*.whl"))
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(unpacked)
    assert any(n.startswith("wasteaudit/_migrations/versions/") and n.endswith(".py") for n in names)
    assert "wasteaudit/py.typed" in names

    db = tmp_path / "fresh.db"
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    run = subprocess.run(
        [sys.executable, "-c", "import wasteaudit, sys; assert 'site' in wasteaudit.__file__; from wasteaudit.cli import main; sys.exit(main(sys.argv[1:]))",
         "--database-url", f"sqlite:///{db}", "db", "upgrade"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "wasteaudit schema at" in run.stdout
    import sqlite3

    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert {"wasteaudit_calls", "wasteaudit_runs", "wasteaudit_findings", "wasteaudit_scores", "wasteaudit_alembic_version"} <= tables
