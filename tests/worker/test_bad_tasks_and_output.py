"""Unknown and disallowed tasks, non-JSON arguments and results, generator output."""

from pathlib import Path

import pytest

import pgqueue
from pgqueue.models import Job
from tests.testapp.tasks import (
    add,
    raises_char,
    returns_char,
    returns_object,
    stream,
    stream_until_file,
)
from tests.worker.conftest import job, status, wait_for

MARKER = Path("/tmp/pgqueue-evil-module-imported")


def test_unregistered_path_fails_without_being_imported(run_burst):
    MARKER.unlink(missing_ok=True)
    result = pgqueue.enqueue("tests.worker.evil_module.run")
    system = pgqueue.enqueue("os.system", ["echo pwned"])
    run_burst()
    for r in (result, system):
        row = job(r.id)
        assert row.status == "failed"
        assert row.attempts == 1
        assert row.errors[0]["exception_class_path"] == "pgqueue.exceptions.TaskNotAllowed"
    assert not MARKER.exists(), "the worker imported a module a job named"


def test_non_json_arguments_are_refused_at_enqueue(transactional_db):
    with pytest.raises(TypeError, match=r"args\[1\] is object"):
        add.enqueue(1, object())
    with pytest.raises(TypeError, match=r"kwargs\['when'\]"):
        pgqueue.enqueue(add, kwargs={"when": {1, 2}})
    with pytest.raises(TypeError, match="nan"):
        add.enqueue(float("nan"), 1)
    assert Job.objects.count() == 0


def test_non_json_result_fails_the_job_clearly(run_burst):
    result = returns_object.enqueue()
    run_burst()
    row = job(result.id)
    assert row.status == "failed"
    assert row.attempts == 1, "not retried: it would fail the same way"
    assert row.errors[0]["exception_class_path"] == "pgqueue.exceptions.ResultNotJSON"
    assert "return value" in row.errors[0]["message"]


@pytest.mark.parametrize(
    ("code", "problem"),
    [(0, "a NUL character"), (0xD800, "an unpaired surrogate (\\ud800)")],
    ids=["nul", "surrogate"],
)
def test_a_result_postgresql_cannot_store_fails_only_its_own_job(run_burst, code, problem):
    """Such a result used to make every write of the worker's outcome batch fail (a NUL:
    DataError, retried forever; a lone surrogate: UnicodeEncodeError, which killed the
    thread that stores outcomes)."""
    bad = returns_char.enqueue(code)
    good = [add.enqueue(i, 1) for i in range(5)]
    run_burst("--concurrency", "8")
    row = job(bad.id)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.errors[0]["exception_class_path"] == "pgqueue.exceptions.ResultNotJSON"
    assert f"the return value['text'] contains {problem}" in row.errors[0]["message"]
    assert [job(r.id).result for r in good] == [i + 1 for i in range(5)]


@pytest.mark.parametrize(
    ("code", "stored"), [(0, "\\x00"), (0xD800, "\\ud800")], ids=["nul", "surrogate"]
)
def test_an_error_message_postgresql_cannot_store_is_stored_escaped(run_burst, code, stored):
    result = raises_char.enqueue(code)
    run_burst()
    row = job(result.id)
    assert (row.status, row.errors[0]["message"]) == ("failed", f"bad {stored} here")
    assert f"ValueError: bad {stored} here" in row.errors[0]["traceback"]


def test_generator_output_is_stored(run_burst):
    result = stream.enqueue(3)
    run_burst()
    row = job(result.id)
    assert (row.output, row.result) == ([{"step": 0}, {"step": 1}, {"step": 2}], 3)


def test_generator_output_is_readable_while_the_job_runs(start_worker, tmp_path):
    gate = tmp_path / "gate"
    result = stream_until_file.enqueue(str(gate))
    worker = start_worker()
    wait_for(
        lambda: pgqueue.get_result(result.id).output == ["started"],
        what="the first value",
        worker=worker,
    )
    assert pgqueue.get_result(result.id).job_status == "running"
    gate.touch()
    wait_for(lambda: status(result.id) == "succeeded", what="the job to finish", worker=worker)
    assert pgqueue.get_result(result.id).output == ["started", "finished"]


def test_allowed_plain_function_runs_by_path(run_burst):
    allowed = pgqueue.enqueue("tests.worker.allowed_jobs.double", [21])
    unhashable = pgqueue.enqueue("tests.worker.allowed_jobs.triple", [14])
    missing = pgqueue.enqueue("tests.worker.allowed_jobs.missing")
    not_callable = pgqueue.enqueue("tests.worker.allowed_jobs.NOT_CALLABLE")
    run_burst()
    assert job(allowed.id).result == 42
    assert pgqueue.get_result(allowed.id).return_value == 42
    assert job(unhashable.id).result == 42, "a callable object whose hash fails still runs"
    for result, message in ((missing, "could not be imported"), (not_callable, "not a function")):
        row = job(result.id)
        assert row.status == "failed"
        assert row.errors[0]["exception_class_path"] == "pgqueue.exceptions.TaskNotAllowed"
        assert message in row.errors[0]["message"]
