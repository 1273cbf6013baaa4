"""Durable job storage for the live server: the JobStore protocol and its SQLite implementation."""

from gpuserve.store.base import DoneOutcome, Job, JobStore, SweepEvent
from gpuserve.store.sqlite import SqliteJobStore

__all__ = ["DoneOutcome", "Job", "JobStore", "SqliteJobStore", "SweepEvent"]
