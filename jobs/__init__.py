"""Jobs: the registry decorator, the job context, and the queue API.

from jobs import job

@job
async def resize(ctx, data): ...
"""

from jobs.context import JobContext, Retry
from jobs.errors import JobInputError
from jobs.registry import job

__all__ = ["JobContext", "JobInputError", "Retry", "job"]
