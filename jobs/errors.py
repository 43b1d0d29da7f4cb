"""Errors of the queue layer; the HTTP layer maps each to a status code."""

from __future__ import annotations


class QueueError(Exception):
    """Base of the errors a caller of the queue API can act on."""

    code = "queue_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidJob(QueueError):
    """The job cannot be accepted as given (unknown name or pool, bad option)."""

    code = "invalid"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class Unavailable(QueueError):
    """The pool cannot take the job now: no live consumer, backlog full, or Redis down."""

    code = "unavailable"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class NotReplicated(Unavailable):
    """The job was written, but fewer replicas than ACK_REPLICAS acknowledged it in time: it
    may be lost in a failover, or exist and run. Retrying with the same jobId is safe."""

    code = "not_replicated"


class NotFound(QueueError):
    code = "not_found"


class Conflict(QueueError):
    code = "conflict"


class JobInputError(ValueError):
    """Raised by a job whose data cannot be processed: it is dead-lettered without retries."""
