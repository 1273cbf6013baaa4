"""ServerSettings: the live server's timings and limits, with Runpod's values as defaults."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gpuserve.core.errors import ConfigError

__all__ = ["MB", "MIB", "ServerSettings"]

MIB = 1024 * 1024
# Runpod documents its payload limits in decimal megabytes (10 MB /run, 20 MB /runsync, 30 MB load
# balancer); gpuserve enforces them as written: 10 MB is 10,000,000 bytes.
MB = 1_000_000


@dataclass(frozen=True)
class ServerSettings:
    """Every interval the server waits on; tests shrink them, production keeps the defaults."""

    poll_timeout_s: float = 20.0  # job-take / job-stop long polls answer within this (SDK gives up at 90 s)
    heartbeat_interval_s: float = 10.0  # what workers are told (RUNPOD_PING_INTERVAL)
    missed_heartbeats: int = 3  # silent for this many intervals -> UNHEALTHY, jobs requeued
    max_retries: int = 3  # requeues after lost workers before a job ends FAILED
    # Runpod's account-wide worker limit across endpoints (5 at the default balance); None: none.
    account_max_workers: int | None = 5
    # SIGTERM: running jobs get this long to finish (workers are told the same, less 1 s to post
    # their results); what is still running then is requeued with the attempt counted.
    drain_timeout_s: float = 30.0
    # A held job two heartbeats in a row did not list, this long after its take, is requeued (a
    # lost take reply). None: one heartbeat interval, so a lost reply costs at most two.
    lease_grace_s: float | None = None
    webhook_attempts: int = 3  # one POST plus two retries (Runpod)
    webhook_retry_delay_s: float = 10.0
    webhook_timeout_s: float = 10.0
    # Networks (CIDR) a webhook may reach besides public addresses: loopback, private, link-local
    # and reserved ranges are refused by default (SSRF: a job must not make the server call its
    # own network). Tests allow ("127.0.0.0/8",).
    webhook_allowed_networks: tuple[str, ...] = ()
    tick_interval_s: float = 0.5  # controller pass at least this often (policies may ask for less)
    maintenance_interval_s: float = 0.1  # deadlines (timeouts, ttl, retention) and liveness checks
    run_retention_s: float = 1_800.0  # results of /run kept 30 min
    runsync_retention_s: float = 60.0  # results of /runsync kept 1 min
    default_ttl_s: float = 86_400.0
    max_run_bytes: int = 10 * MB
    max_runsync_bytes: int = 20 * MB
    # Job inputs and outputs (JSON) the SQLite store keeps in memory: one larger than
    # spill_payload_bytes, or any once max_payload_bytes_in_memory are held, is read from the
    # database when needed (a take, a /status) instead. None: that limit off.
    max_payload_bytes_in_memory: int | None = 100 * MB
    spill_payload_bytes: int | None = 100_000
    unknown_worker_delay_s: float = 1.0  # a rejected worker's next poll comes no sooner (SDK retries at once)
    # When a submit shows the controller its job: "auto" skips the passes gpuserve.schedule
    # proves would change nothing; "always" runs one per submit; "verify" skips like auto but
    # runs each skipped pass as a preview and counts any that would have acted (tests).
    consult_on_arrival: str = "auto"
    # Load-balancing endpoints: how often each worker's health path is polled, how long one
    # poll may take, how many failed polls in a row (a status other than 200/204, or no answer
    # once it has answered) make it UNHEALTHY, and how long a worker that never answered may
    # take to start (Runpod: misconfigured ports give 502s for 8 min). 30 MB bodies (Runpod).
    lb_health_interval_s: float = 1.0
    lb_health_timeout_s: float = 2.0
    lb_unhealthy_after: int = 3
    lb_start_timeout_s: float = 480.0
    max_lb_body_bytes: int = 30 * MB
    # Who may scrape /metrics: "none" (anyone, as Prometheus scrapers expect) or "admin" (an admin key,
    # sent as `Authorization: Bearer KEY`: Prometheus' `authorization` scrape setting).
    metrics_auth: str = "none"
    # The URL workers are given for the worker API; None: this server's own. With several replicas,
    # one any replica answers (the reverse proxy's), so a worker keeps working when its server dies.
    worker_url: str | None = None
    # Workers outlive this server, for another replica on the shared store to adopt (Ray: detached
    # actors). Set by the Platform when its store is shared; a server alone keeps them tied to itself.
    adoptable_workers: bool = False

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
            "lb_health_interval_s",
            "lb_health_timeout_s",
            "lb_start_timeout_s",
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
        if self.lb_unhealthy_after < 1:
            raise ConfigError("lb_unhealthy_after", self.lb_unhealthy_after, "must be at least 1")
        if self.max_retries < 0:
            raise ConfigError("max_retries", self.max_retries, "cannot be negative")
        if self.account_max_workers is not None and self.account_max_workers < 0:
            raise ConfigError("account_max_workers", self.account_max_workers, "cannot be negative")
        if self.webhook_attempts < 1:
            raise ConfigError("webhook_attempts", self.webhook_attempts, "must be at least 1")
        for network in self.webhook_allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ConfigError("webhook_allowed_networks", network, f"must be a CIDR network ({exc})") from None
        if self.metrics_auth not in ("none", "admin"):
            raise ConfigError("metrics_auth", self.metrics_auth, "must be 'admin' or 'none'")
        if self.worker_url is not None and not self.worker_url.startswith(("http://", "https://")):
            raise ConfigError("worker_url", self.worker_url, "must be an http:// or https:// URL")
        for name in ("max_payload_bytes_in_memory", "spill_payload_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(name, value, "must be a whole number of bytes (0 or more), or null for no limit")
        if self.webhook_retry_delay_s < 0:
            raise ConfigError("webhook_retry_delay_s", self.webhook_retry_delay_s, "cannot be negative")

    @property
    def take_lease_grace_s(self) -> float:
        return self.heartbeat_interval_s if self.lease_grace_s is None else self.lease_grace_s

    @property
    def liveness_timeout_s(self) -> float:
        return self.heartbeat_interval_s * self.missed_heartbeats
