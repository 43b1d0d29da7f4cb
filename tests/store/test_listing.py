"""What the store keeps for watching: the listing's indexes, each job's tries and log lines,
per-minute history and the event stream, against a real Valkey with explicit server times."""

from __future__ import annotations

import json

import pytest
import redis
from test_store import T0, K, S, claim, enqueue, finish, register

from jobs.store import LOG_LINE_BYTES, LOG_LINES, Outcome, Page, SyncStore, calls


@pytest.fixture
def st(store: redis.Redis) -> SyncStore:
    return SyncStore(store, S)


def page(st: SyncStore, cursor: str | None = None, limit: int = 7, **filters: str) -> Page:
    return st.run(
        calls.list_jobs(
            K,
            limit=limit,
            budget=2000,
            data_bytes=1 << 20,
            cursor=cursor,
            **filters,  # type: ignore[arg-type]
        )
    )


def every_page(st: SyncStore, limit: int = 7, **filters: str) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        got = page(st, cursor, limit, **filters)
        ids += [str(row["id"]) for row in got.rows]
        if got.cursor is None:
            return ids
        cursor = got.cursor


def test_the_listing_pages_newest_first_and_a_cursor_never_repeats_or_skips_a_job(
    st: SyncStore,
) -> None:
    register(st, "a", T0)
    expected = []
    for i in range(40):  # several jobs share each millisecond
        enqueue(st, f"j{i:02d}", T0 + i // 6, name="even" if i % 2 == 0 else "odd")
        expected.append(f"j{i:02d}")
    listed = every_page(st)
    assert sorted(listed) == sorted(expected) and len(set(listed)) == len(listed)
    created = [int(st.redis.hget(K.job(i), "createdAt")) for i in listed]
    assert created == sorted(created, reverse=True)
    # a job enqueued between two pages does not shift the next page
    first = page(st)
    enqueue(st, "late", T0 + 100)
    rest = every_page_from(st, first.cursor)
    assert len(first.rows) + len(rest) == 40 and "late" not in rest


def every_page_from(st: SyncStore, cursor: str | None) -> list[str]:
    ids: list[str] = []
    while cursor is not None:
        got = page(st, cursor)
        ids += [str(row["id"]) for row in got.rows]
        cursor = got.cursor
    return ids


def test_the_listing_filters_by_status_name_pool_and_text(st: SyncStore) -> None:
    register(st, "a", T0)
    for i in range(10):
        enqueue(st, f"j{i}", T0 + i, name="even" if i % 2 == 0 else "odd",
                data=json.dumps({"city": "Zürich" if i == 3 else "Bern"}, ensure_ascii=False))  # fmt: skip
    tries = {t.id: t for t in claim(st, "a", T0 + 20, n=2)}  # j0 and j1
    finish(st, "a", tries["j0"], Outcome.DEAD, T0 + 21, payload="ValueError: Disk Full")
    assert every_page(st, status="dead") == ["j0"]
    assert every_page(st, status="active") == ["j1"]
    assert set(every_page(st, status="queued")) == {f"j{i}" for i in range(2, 10)}
    assert every_page(st, name="odd") == ["j9", "j7", "j5", "j3", "j1"]
    assert every_page(st, pool="nowhere") == []
    assert every_page(st, q="disk full") == ["j0"]  # the error, any case
    assert every_page(st, q="zürich") == ["j3"]  # the data
    assert every_page(st, q="j8") == ["j8"]  # the id
    assert every_page(st, status="queued", name="odd", q="zür") == ["j3"]


def test_one_listing_call_examines_a_bounded_part_of_the_index(st: SyncStore) -> None:
    register(st, "a", T0)
    for i in range(40):
        enqueue(st, f"j{i}", T0 + i)
    got = st.run(calls.list_jobs(K, q="matches-nothing", limit=10, budget=15, data_bytes=1 << 20))
    # nothing matched within the budget: no rows, and a cursor to go on from
    assert got.rows == [] and got.cursor is not None
    assert got.cursor.split(":", 1)[1] == "j25"  # 15 entries examined, newest first


def test_each_try_is_kept_with_its_outcome_consumer_and_error(st: SyncStore) -> None:
    register(st, "a", T0)
    enqueue(st, "j", T0, attempts=3)
    (t1,) = claim(st, "a", T0)
    finish(st, "a", t1, Outcome.FAILED, T0 + 5, payload="KeyError: 'x'" + "!" * 2000)
    st.run(calls.heartbeat(K, S, cid="a", pool="p", instance="i-a", now=T0 + 10))
    (t2,) = claim(st, "a", T0 + 2000)
    # its consumer dies; another takes its jobs back: a crash, not a try
    register(st, "b", T0 + 2000)
    st.run(calls.heartbeat(K, S, cid="b", pool="p", instance="i-b", now=T0 + 20_000))
    st.run(calls.sweep(K, S, pool="p", cid="b", now=T0 + 20_000))
    (t3,) = st.run(calls.claim(K, S, cid="b", pool="p", instance="i-b", n=1, now=T0 + 20_001)).tries
    finish(st, "b", t3, Outcome.COMPLETED, T0 + 20_050, payload="null")
    tries = json.loads(st.redis.hget(K.job("j"), "tries"))
    assert [(t["attempt"], t["consumer"], t["outcome"]) for t in tries] == [
        (1, "a", "failed"),
        (2, "a", "crashed"),
        (2, "b", "completed"),
    ]
    assert tries[0]["error"].startswith("KeyError") and len(tries[0]["error"]) == 500
    assert (tries[2]["startedAt"], tries[2]["endedAt"]) == (T0 + 20_001, T0 + 20_050)
    assert t2.attempt == 2 and t3.attempt == 2


def test_a_jobs_log_keeps_its_last_lines_and_refuses_a_try_that_lost_the_job(
    st: SyncStore,
) -> None:
    register(st, "a", T0)
    enqueue(st, "j", T0)
    (t,) = claim(st, "a", T0)
    for i in range(LOG_LINES + 20):
        line = f"line {i} " + "x" * LOG_LINE_BYTES
        text = line.encode()[:LOG_LINE_BYTES].decode()
        assert st.run(calls.log(K, job_id="j", token=t.token, text=text, lines=LOG_LINES, now=T0))
    assert not st.run(calls.log(K, job_id="j", token="0-0", text="late", lines=LOG_LINES))
    lines = [json.loads(raw) for raw in st.redis.lrange(K.logs("j"), 0, -1)]
    assert len(lines) == LOG_LINES and lines[0]["text"].startswith("line 20 ")
    assert sum(len(line["text"].encode()) for line in lines) <= 64 * 1024
    finish(st, "a", t, Outcome.COMPLETED, T0 + 1, payload="null")
    assert 0 < st.redis.pttl(K.logs("j")) <= st.redis.pttl(K.job("j")) + 10


def test_history_counts_each_pools_finished_tries_per_minute(st: SyncStore) -> None:
    register(st, "a", T0)
    minute = T0 // 60_000
    for i in range(4):
        enqueue(st, f"j{i}", T0, attempts=1)
    t = claim(st, "a", T0)
    finish(st, "a", t[0], Outcome.COMPLETED, T0 + 1, payload="null")
    finish(st, "a", t[1], Outcome.COMPLETED, T0 + 60_000, payload="null")
    finish(st, "a", t[2], Outcome.FAILED, T0 + 60_000, payload="E")  # its last try: dead
    first = st.redis.hgetall(K.minute("p", minute))
    second = st.redis.hgetall(K.minute("p", minute + 1))
    assert first == {"completed": "1"}
    assert second == {"completed": "1", "failed": "1", "deadLettered": "1"}
    assert 0 < st.redis.pttl(K.minute("p", minute)) <= S.history_seconds * 1000


def test_every_status_change_is_told_to_the_event_stream(st: SyncStore, store: redis.Redis) -> None:
    register(st, "a", T0)
    enqueue(st, "j", T0, attempts=2)
    (t1,) = claim(st, "a", T0)
    st.run(calls.progress(K, job_id="j", token=t1.token, value="50", now=T0 + 1))
    finish(st, "a", t1, Outcome.FAILED, T0 + 2, payload="E", retry_delay=0.0)
    (t2,) = claim(st, "a", T0 + 3)
    finish(st, "a", t2, Outcome.FAILED, T0 + 4, payload="E")
    st.run(calls.dlq_retry(K, job_id="j", now=T0 + 5))
    st.run(calls.cancel(K, S, job_id="j", now=T0 + 6))
    events = [fields for _, fields in store.xrange(K.events)]
    assert [(e["type"], e["status"]) for e in events] == [
        ("enqueued", "queued"),
        ("started", "active"),
        ("progress", "active"),
        ("failed", "failed"),
        ("started", "active"),
        ("dead", "dead"),
        ("queued", "queued"),
        ("cancelled", "cancelled"),
    ]
    assert all(e["id"] == "j" and e["pool"] == "p" and e["name"] == "noop" for e in events)
    assert events[2]["progress"] == "50" and events[4]["attempt"] == "2"


def test_queued_and_active_jobs_have_no_index_of_their_own_and_older_ones_go_at_register(
    st: SyncStore,
) -> None:
    st.redis.zadd(K.index("queued"), {"old": T0})  # as versions before INDEXED kept them
    st.redis.zadd(K.index("active"), {"old": T0})
    register(st, "a", T0)
    enqueue(st, "q", T0)
    enqueue(st, "r", T0 + 1)
    claim(st, "a", T0 + 2, n=1)
    assert not st.redis.exists(K.index("queued"), K.index("active"))
    assert every_page(st, status="active") == ["q"] and every_page(st, status="queued") == ["r"]
