"""ServerSettings: the live server's timings and limits, with Runpod's values as defaults."""

from __future__ import annotations

from dataclasses import dataclass

from gpuserve.core.errors import ConfigError

__all__ = ["MIB", "ServerSettings"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Every interval the server waits on; tests shrink them, production keeps the defaults."""

    poll_timeout_s: float = 20.0  # job-take / job-stop long polls answer within this (SDK gives up at 90 s)
    heartbeat_interval_s: float = 10.0  # what workers are told (RUNPOD_PING_INTERVAL)
    missed_heartbeats: int = 3  # silent for this many intervals -> UNHEALTHY, jobs requeued
    max_retries: int = 3  # requeues after lost workers before a job ends FAILED
    # SIGTERM: running jobs get this long to finish (workers are told the same, less 1 s to post
    # their results); what is still running then is requeued with the attempt counted.
    drain_timeout_s: float = 30.0
    # A held job two heartbeats in a row did not list, this long after its take, is requeued (a
    # lost take reply). None: one heartbeat interval, so a lost reply costs at most two.
    lease_grace_s: float | None = None
    webhook_attempts: int = 3  # one POST plus two retries (Runpod)
    webhook_retry_delay_s: float = 10.0
    webhook_timeout_s: float = 10.0
    tick_interval_s: float = 0.5  # controller pass at least this often (policies may ask for less)
    maintenance_interval_s: float = 0.1  # deadlines (timeouts, ttl, retention) and liveness checks
    run_retention_s: float = 1_800.0  # results of /run kept 30 min
    runsync_retention_s: float = 60.0  # results of /runsync kept 1 min
    default_ttl_s: float = 86_400.0
    max_run_bytes: int = 10 * MIB
    max_runsync_bytes: int = 20 * MIB
    unknown_worker_delay_s: float = 1.0  # a rejected worker's next poll comes no sooner (SDK retries at once)
    # When a submit shows the controller its job: "auto" skips the passes gpuserve.schedule
    # proves would change nothing; "always" runs one per submit; "verify" skips like auto but
    # runs each skipped pass as a preview and counts any that would have acted (tests).
    consult_on_arrival: str = "auto"

    def __post_init__(self) -> None:
        for name in (
            "poll_timeout_s",
            "heartbeat_interval_s",
            "webhook_timeout_s",
            "tick_interval_s",
            "maintenance_interval_s",
            "run_retention_s",
            "runsync_retention_s",
            "default_ttl_s",
            "drain_timeout_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(name, value, "must be positive")
        if self.consult_on_arrival not in ("auto", "always", "verify"):
            raise ConfigError("consult_on_arrival", self.consult_on_arrival, "must be 'auto', 'always' or 'verify'")
        if self.missed_heartbeats < 1:
            raise ConfigError("missed_heartbeats", self.missed_heartbeats, "must be at least 1")
        if self.lease_grace_s is not None and (not isinstance(self.lease_grace_s, int | float) or self.lease_grace_s < 0):
            raise ConfigError("lease_grace_s", self.lease_grace_s, "cannot be negative")
        if self.max_retries < 0:
            raise ConfigError("max_retries", self.max_retries, "cannot be negative")
        if self.webhook_attempts < 1:
            raise ConfigError("webhook_attempts", self.webhook_attempts, "must be at least 1")
        if self.webhook_retry_delay_s < 0:
            raise ConfigError("webhook_retry_delay_s", self.webhook_retry_delay_s, "cannot be negative")

    @property
    def take_lease_grace_s(self) -> float:
        return self.heartbeat_interval_s if self.lease_grace_s is None else self.lease_grace_s

    @property
    def liveness_timeout_s(self) -> float:
        return self.heartbeat_interval_s * self.missed_heartbeats
