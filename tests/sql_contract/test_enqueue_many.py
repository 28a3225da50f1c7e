"""pgqueue.enqueue_many: ids in input order, enqueue()'s defaults, all-or-nothing validation."""

import json
from datetime import UTC, datetime

import psycopg
import pytest

from tests.sql_contract.conftest import claim_ids, count_jobs, enqueue, enqueue_many, job, scalar


def test_ids_follow_input_order_and_each_job_gets_its_own_values(pg):
    ids = enqueue_many(
        pg,
        [
            {"task_path": "a.one"},
            {
                "task_path": "a.two",
                "args": [2],
                "kwargs": {"x": {"nested": True}},
                "queue_name": "q:2",
                "priority": 5,
                "max_attempts": 9,
                "unique_key": "two",
            },
            {"task_path": "a.three", "run_after": "2999-01-01T12:00:00+02:00"},
        ],
    )
    assert len(ids) == 3
    rows = [job(pg, i) for i in ids]
    assert [r["task_path"] for r in rows] == ["a.one", "a.two", "a.three"]
    two = rows[1]
    assert (two["args"], two["kwargs"]) == ([2], {"x": {"nested": True}})
    assert (two["queue_name"], two["priority"], two["max_attempts"], two["unique_key"]) == (
        "q:2",
        5,
        9,
        "two",
    )
    assert rows[2]["status"] == "scheduled"
    assert rows[2]["run_after"] == datetime(2999, 1, 1, 10, 0, tzinfo=UTC)


def test_a_missing_key_takes_enqueues_default(pg):
    with pg.transaction():
        [many] = enqueue_many(pg, [{"task_path": "a.b"}])
        single = enqueue(pg, "a.b")
    differing = {"id", "enqueued_at", "run_after"}
    from_many = {k: v for k, v in job(pg, many).items() if k not in differing}
    from_single = {k: v for k, v in job(pg, single).items() if k not in differing}
    assert from_many == from_single
    assert (from_many["queue_name"], from_many["priority"], from_many["max_attempts"]) == (
        "default",
        0,
        3,
    )
    assert (from_many["args"], from_many["kwargs"], from_many["status"]) == ([], {}, "ready")


AT_THE_LIMITS = [
    {"task_path": "a" * 127 + "." + "b" * 127},
    {"task_path": "a.b", "queue_name": "q" * 64},
    {"task_path": "a.b", "queue_name": "Az09_.:-"},
    {"task_path": "a.b", "priority": -100},
    {"task_path": "a.b", "priority": 100},
    {"task_path": "a.b", "priority": 7.0},
    {"task_path": "a.b", "max_attempts": 1},
    {"task_path": "a.b", "max_attempts": 1_000_000},
    {"task_path": "a.b", "args": ["x" * 1000], "kwargs": {"k": [1, {"n": None}]}},
]


def test_values_at_the_limits_are_stored_as_enqueue_stores_them(pg, subtests):
    """Most jobs take enqueue_many's one-query path, the rest _job_from_json: both must
    store exactly what enqueue() stores."""
    differing = {"id", "enqueued_at", "run_after"}
    for spec in AT_THE_LIMITS:
        with subtests.test(spec=repr(spec)[:70]):
            [many] = enqueue_many(pg, [spec])
            named = {
                k: json.dumps(v) if k in ("args", "kwargs") else v
                for k, v in spec.items()
                if k != "task_path"
            }
            single = enqueue(pg, spec["task_path"], **named)
            from_many = {k: v for k, v in job(pg, many).items() if k not in differing}
            from_single = {k: v for k, v in job(pg, single).items() if k not in differing}
            assert from_many == from_single


def test_json_null_means_the_default_where_enqueue_takes_null(pg):
    [job_id] = enqueue_many(
        pg, [{"task_path": "a.b", "run_after": None, "max_attempts": None, "unique_key": None}]
    )
    row = job(pg, job_id)
    assert (row["status"], row["max_attempts"], row["unique_key"]) == ("ready", 3, None)


def test_a_batch_is_claimed_in_input_order(pg, worker):
    ids = enqueue_many(pg, [{"task_path": "a.b", "args": [i]} for i in range(20)])
    assert ids == sorted(ids)
    assert claim_ids(pg, worker, limit=20) == ids


def test_empty_array_returns_no_ids(pg):
    assert enqueue_many(pg, []) == []
    assert count_jobs(pg) == 0


BAD_CALLS = [
    # The element is named by its index, counted from 0, whatever comes before it.
    (
        [{"task_path": "a.b"}, {"task_path": "a.c"}, {"task_path": "bad"}],
        r"^pgqueue.enqueue_many: jobs\[2\]: task_path 'bad' is not a dotted Python path",
    ),
    ([{"task_path": "a.b"}, {}], r"jobs\[1\]: task_path NULL"),
    ([{"task_path": 5}], r"jobs\[0\]: task_path"),
    ([{"task_path": "a.b", "queue_nam": "x"}], r"jobs\[0\]: unknown key 'queue_nam'"),
    ([{"task_path": "a.b", "id": 1}], r"jobs\[0\]: unknown key 'id'"),
    ([{"task_path": "a.b", "status": "running"}], r"jobs\[0\]: unknown key 'status'"),
    ([{"task_path": "a.b", "priority": "high"}], r"jobs\[0\]: priority .* got \"high\""),
    ([{"task_path": "a.b", "priority": 1.5}], r"jobs\[0\]: priority .* got 1.5"),
    ([{"task_path": "a.b", "priority": 101}], r"jobs\[0\]: priority"),
    ([{"task_path": "a.b", "priority": None}], r"jobs\[0\]: priority"),
    ([{"task_path": "a.b", "max_attempts": 0}], r"jobs\[0\]: max_attempts .* got 0"),
    ([{"task_path": "a.b", "max_attempts": "3"}], r"jobs\[0\]: max_attempts"),
    ([{"task_path": "a.b", "max_attempts": 2.5}], r"jobs\[0\]: max_attempts"),
    ([{"task_path": "a.b", "max_attempts": 1e10}], r"jobs\[0\]: max_attempts"),
    ([{"task_path": "a.b", "max_attempts": 1000001}], r"jobs\[0\]: max_attempts .* 1000000"),
    ([{"task_path": "a.b", "run_after": "tomorrow-ish"}], r"jobs\[0\]: run_after .* ISO 8601"),
    ([{"task_path": "a.b", "run_after": 12}], r"jobs\[0\]: run_after must be .* string"),
    ([{"task_path": "a.b", "run_after": "infinity"}], r"jobs\[0\]: run_after .* finite"),
    ([{"task_path": "a.b", "args": {}}], r"jobs\[0\]: args must be a JSON array, got object"),
    ([{"task_path": "a.b", "args": None}], r"jobs\[0\]: args must be a JSON array, got null"),
    ([{"task_path": "a.b", "kwargs": []}], r"jobs\[0\]: kwargs must be a JSON object"),
    ([{"task_path": "a.b", "unique_key": 5}], r"jobs\[0\]: unique_key must be a string"),
    ([{"task_path": "a.b", "unique_key": ""}], r"jobs\[0\]: unique_key"),
    ([{"task_path": "a.b", "queue_name": None}], r"jobs\[0\]: queue_name NULL"),
    ([{"task_path": "a.b", "queue_name": "it's"}], r"jobs\[0\]: queue_name 'it''s'"),
    ([{"task_path": "a.b", "queue_name": "*"}], r"jobs\[0\]: queue_name"),
    ([{"task_path": "a.b", "queue_name": "q" * 65}], r"jobs\[0\]: queue_name 'q{65}'"),
    (
        [{"task_path": "a.b", "args": ["x" * 1_048_576]}],
        r"jobs\[0\]: args and kwargs together .* over the limit",
    ),
    (["a.b"], r"jobs\[0\]: must be a JSON object, got string"),
    ([None], r"jobs\[0\]: must be a JSON object, got null"),
    ([[{"task_path": "a.b"}]], r"jobs\[0\]: must be a JSON object, got array"),
    ({"task_path": "a.b"}, r"jobs must be a JSON array of job objects, got object"),
    ("a.b", r"jobs must be a JSON array of job objects, got string"),
]


def test_one_bad_job_rejects_the_whole_call(pg, subtests):
    for jobs, message in BAD_CALLS:
        with subtests.test(jobs=repr(jobs)[:70]):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=message) as info:
                enqueue_many(pg, jobs)
            assert info.value.sqlstate == "22023"
            assert count_jobs(pg) == 0


def test_sql_null_is_rejected(pg):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="jobs must be a JSON array"):
        pg.execute("SELECT pgqueue.enqueue_many(NULL)")


def test_a_bad_job_after_valid_unique_ones_inserts_nothing(pg):
    jobs = [{"task_path": "a.b", "unique_key": f"k{i}"} for i in range(5)]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"jobs\[5\]: priority"):
        enqueue_many(pg, [*jobs, {"task_path": "a.b", "priority": 1000}])
    assert count_jobs(pg) == 0
    assert len(set(enqueue_many(pg, jobs))) == 5


def test_unique_keys_inside_a_batch_and_against_existing_jobs(pg, worker):
    waiting = enqueue(pg, unique_key="k1")
    running = enqueue(pg, unique_key="k-running", priority=100)
    assert claim_ids(pg, worker, limit=1) == [running]
    ids = enqueue_many(
        pg,
        [
            {"task_path": "a.b", "unique_key": "k1"},
            {"task_path": "a.b", "unique_key": "k2"},
            {"task_path": "a.b"},
            {"task_path": "a.b", "unique_key": "k2"},
            {"task_path": "a.b", "unique_key": "k-running"},
            {"task_path": "a.b"},
        ],
    )
    assert ids[0] == waiting
    assert ids[1] == ids[3]
    assert ids[4] == running
    assert len(set(ids)) == 5
    assert count_jobs(pg) == 5
    assert job(pg, ids[1])["unique_key"] == "k2"


def test_ten_thousand_jobs_in_one_call(pg):
    jobs = [
        {"task_path": "a.b", "args": [i], "queue_name": f"q{i % 7}", "priority": i % 201 - 100}
        for i in range(10_000)
    ]
    ids = enqueue_many(pg, jobs)
    assert len(ids) == 10_000 == len(set(ids))
    assert count_jobs(pg) == 10_000
    stored = dict(
        pg.execute(
            "SELECT id, jsonb_build_array(args, queue_name, priority) FROM pgqueue_job"
        ).fetchall()
    )
    for job_id, sent in zip(ids, jobs, strict=True):
        assert stored[job_id] == [sent["args"], sent["queue_name"], sent["priority"]]


def test_accepts_jsonb_built_in_sql(pg):
    ids = scalar(
        pg,
        "SELECT pgqueue.enqueue_many(jsonb_agg(jsonb_build_object('task_path', 'a.b', 'args', "
        "jsonb_build_array(i)) ORDER BY i)) FROM generate_series(1, 3) i",
    )
    assert [job(pg, i)["args"] for i in ids] == [[1], [2], [3]]
