"""The scripts as one function library: loaded by whoever calls first, again after the server
lost it, and side by side with another version's library."""

from __future__ import annotations

import asyncio
import json

import redis
import redis.asyncio
from helpers import Valkey

from jobs.settings import Settings
from jobs.store import Keys, Store, SyncStore, calls, library
from jobs.store.batch import Batcher

S = Settings(pools={"p": 1}, key_prefix="lib")
K = Keys(S.pool_prefix("p"))
T0 = 1_800_000_000_000


def enqueue_call(job_id: str) -> calls.Call[calls.Written]:
    return calls.enqueue(
        K, S, job_id=job_id, name="noop", pool="p", data="{}", delay_ms=0, priority=0,
        attempts=1, timeout=30.0, backoff=json.dumps({"type": "fixed", "delay": 1}), now=T0,
    )  # fmt: skip


def loaded(store: redis.Redis) -> list[str]:
    # each library comes as a flat list: library_name, <name>, engine, LUA, ...
    return [entry[1] for entry in store.function_list()]


def test_a_blocking_store_loads_the_library_on_its_first_call_and_again_after_a_flush(
    store: redis.Redis,
) -> None:
    store.function_flush()
    st = SyncStore(store, S)
    st.run(calls.register(K, S, cid="c1", pool="p", instance="i", info="{}", now=T0))
    assert loaded(store) == [library.library()[0]]
    store.function_flush()  # a server that lost its data (no persistence, restarted)
    assert st.run(enqueue_call("a")).outcome == "created"
    assert loaded(store) == [library.library()[0]]


def test_an_asyncio_store_and_a_batch_load_the_library_after_a_flush(
    store: redis.Redis, valkey: Valkey
) -> None:
    SyncStore(store, S).run(
        calls.register(K, S, cid="c1", pool="p", instance="i", info="{}", now=T0)
    )

    async def main() -> tuple[list[str], list[str]]:
        client = redis.asyncio.Redis.from_url(valkey.url, decode_responses=True)
        try:
            st = Store(client, S)
            store.function_flush()
            batch = await asyncio.gather(*(st.run(enqueue_call(f"b{i}")) for i in range(5)))
            store.function_flush()
            claimed = await st.run(calls.claim(K, S, cid="c1", pool="p", instance="i", n=8, now=T0))
            return [w.outcome for w in batch], [t.id for t in claimed.tries]
        finally:
            await client.aclose()

    outcomes, ids = asyncio.run(main())
    assert outcomes == ["created"] * 5
    assert sorted(ids) == [f"b{i}" for i in range(5)]


def test_two_versions_of_the_library_live_side_by_side(store: redis.Redis) -> None:
    """A rolling deploy: the old version's functions stay while the new one loads its own."""
    library.load(store)
    name, text = library.library()
    old = name[:-4] + "0ld0"
    store.function_load(text.replace(name, old))
    library.load(store)  # already there: not an error
    assert sorted(loaded(store)) == sorted([name, old])
    st = SyncStore(store, S)
    st.run(calls.register(K, S, cid="c1", pool="p", instance="i", info="{}", now=T0))
    assert st.run(enqueue_call("v")).outcome == "created"
    store.function_delete(old)


def test_a_batcher_answers_every_caller_when_the_server_refuses_the_call(
    store: redis.Redis, valkey: Valkey
) -> None:
    async def main() -> list[BaseException | None]:
        client = redis.asyncio.Redis.from_url(valkey.url, decode_responses=True)
        try:
            batcher = Batcher(client)
            answers = await asyncio.gather(
                *(batcher("enqueue", ["k"], ["too few arguments"]) for _ in range(3)),
                return_exceptions=True,
            )
            return [a if isinstance(a, BaseException) else None for a in answers]
        finally:
            await client.aclose()

    errors = asyncio.run(main())
    assert all(isinstance(e, redis.ResponseError) for e in errors), errors
