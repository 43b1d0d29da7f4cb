"""A JOB_MODULES module whose consumers get stuck: their claim loop never turns again."""

import asyncio

import jobs.consumer


async def _hang(self: jobs.consumer.Consumer) -> None:
    await asyncio.Event().wait()


jobs.consumer.Consumer.main = _hang  # type: ignore[method-assign]
