"""Redis key names. What each key holds is told once, in the header of `lua/_lib.lua`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one pool's store; `prefix` is the pool's own hash tag, such as
    `{mq:default}` (`Settings.pool_prefix`), so that every script touches one Cluster slot."""

    prefix: str

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def ready(self, cid: str) -> str:
        return f"{self.prefix}:ready:{cid}"

    def active(self, cid: str) -> str:
        return f"{self.prefix}:active:{cid}"

    def wake(self, cid: str) -> str:
        return f"{self.prefix}:wake:{cid}"

    def worker(self, cid: str) -> str:
        return f"{self.prefix}:worker:{cid}"

    def delayed(self, pool: str) -> str:
        return f"{self.prefix}:delayed:{pool}"

    def workers(self, pool: str) -> str:
        return f"{self.prefix}:workers:{pool}"

    def draining(self, pool: str) -> str:
        return f"{self.prefix}:draining:{pool}"

    def load(self, pool: str) -> str:
        return f"{self.prefix}:load:{pool}"

    def queued(self, pool: str) -> str:
        return f"{self.prefix}:queued:{pool}"

    def control(self, pool: str) -> str:
        return f"{self.prefix}:control:{pool}"

    def running(self, pool: str) -> str:
        return f"{self.prefix}:running:{pool}"

    def starts(self, pool: str) -> str:
        return f"{self.prefix}:starts:{pool}"

    def parked(self, pool: str, name: str) -> str:
        return f"{self.prefix}:parked:{pool}:{name}"

    def group(self, pool: str, group: str) -> str:
        return f"{self.prefix}:group:{pool}:{group}"

    def groups(self, pool: str) -> str:
        return f"{self.prefix}:groups:{pool}"

    def gstarts(self, pool: str, group: str) -> str:
        return f"{self.prefix}:gstarts:{pool}:{group}"

    def grouped(self, pool: str) -> str:
        return f"{self.prefix}:grouped:{pool}"

    def sweep(self, pool: str) -> str:
        return f"{self.prefix}:sweep:{pool}"

    def logs(self, job_id: str) -> str:
        return f"{self.prefix}:logs:{job_id}"

    def index(self, status: str | None = None) -> str:
        return f"{self.prefix}:index" if status is None else f"{self.prefix}:index:{status}"

    def minute(self, pool: str, minute: int) -> str:
        return f"{self.prefix}:minute:{pool}:{minute}"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}:dlq"

    @property
    def expiring(self) -> str:
        return f"{self.prefix}:expiring"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"


@dataclass(frozen=True, slots=True)
class Shared:
    """The keys no pool owns: the pool registry, the schedulers, node names and sign-ins;
    `prefix` is the service's hash tag, such as `{mq}` (`Settings.prefix`)."""

    prefix: str

    def node(self, name: str) -> str:
        return f"{self.prefix}:node:{name}"

    def logins(self, client: str) -> str:
        return f"{self.prefix}:logins:{client}"

    @property
    def pools(self) -> str:
        return f"{self.prefix}:pools"

    @property
    def schedulers(self) -> str:
        return f"{self.prefix}:schedulers"

    @property
    def schedule(self) -> str:
        return f"{self.prefix}:schedule"
