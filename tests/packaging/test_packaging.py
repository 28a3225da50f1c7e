"""The wheel and the editable install both carry sql/ and migrations/ inside the package."""

import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_carries_sql_and_migrations(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("pgqueue-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for sql in (ROOT / "sql").glob("*.sql"):
        assert f"pgqueue/sql/{sql.name}" in names
    for migration in (ROOT / "migrations").glob("0*.py"):
        assert f"pgqueue/migrations/{migration.name}" in names
    assert {
        "pgqueue/py.typed",
        "pgqueue/management/commands/pgqueue_worker.py",
        "pgqueue/drivers/postgresql.py",
    } <= names
    assert not any(name.startswith(("tests/", "examples/", "bench/")) for name in names)


def test_installed_package_finds_its_sql_and_migrations():
    assert (
        files("pgqueue.sql")
        .joinpath("0001_initial.sql")
        .read_text()
        .startswith("-- pgqueue SQL API")
    )
    import pgqueue.migrations

    assert Path(pgqueue.migrations.__file__).parent.joinpath("0001_initial.py").exists()
