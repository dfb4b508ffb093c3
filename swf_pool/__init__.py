"""swf-pool: a durable system of record for intent, with a multiprocessing worker pool."""

from .client import Client
from .coordinator import Pool, PoolStats
from .errors import (
    ConfigError,
    ConnectError,
    DatabaseError,
    DataRejected,
    InvalidDsn,
    InvalidPayload,
    InvalidSchedule,
    MigrationError,
    PermanentError,
    RunAlreadyFinished,
    RunNotFound,
    ScheduleNotFound,
    SchemaNotReady,
    SwfError,
    ValidationError,
)
from .handlers import Registry, Run
from .models import Audit, Event, EventType, RunRecord, Status, Submitted
from .retry import Exponential, Fixed, GoBackoff, NoRetry, RetryPolicy
from .schedules import MissedPolicy, Schedule
from .ticker import Ticker

__all__ = [
    "Audit",
    "Client",
    "ConfigError",
    "ConnectError",
    "DataRejected",
    "DatabaseError",
    "Event",
    "EventType",
    "Exponential",
    "Fixed",
    "GoBackoff",
    "InvalidDsn",
    "InvalidPayload",
    "InvalidSchedule",
    "MigrationError",
    "MissedPolicy",
    "NoRetry",
    "PermanentError",
    "Pool",
    "PoolStats",
    "Registry",
    "RetryPolicy",
    "Run",
    "RunAlreadyFinished",
    "RunNotFound",
    "RunRecord",
    "Schedule",
    "ScheduleNotFound",
    "SchemaNotReady",
    "Status",
    "Submitted",
    "SwfError",
    "Ticker",
    "ValidationError",
]
