"""swf-pool: a durable system of record for intent, with a multiprocessing worker pool."""

from importlib.metadata import PackageNotFoundError, version

from .aclient import AsyncClient
from .client import Client
from .coordinator import Pool
from .errors import (
    ClientClosed,
    ConfigError,
    ConnectError,
    DatabaseError,
    DataRejected,
    InvalidConnection,
    InvalidDsn,
    InvalidPayload,
    InvalidSchedule,
    MigrationError,
    PermanentError,
    RunAlreadyFinished,
    RunNotFound,
    RunNotRetryable,
    ScheduleNotFound,
    SchemaNotReady,
    SwfError,
    ValidationError,
    WaitTimeout,
)
from .handlers import Registry, Run
from .metrics import MetricsCollector, PrometheusMetrics
from .models import Audit, Event, EventType, QueueStats, RunRecord, Status, Submitted, TypeStats
from .poolstats import PoolStats
from .retry import Exponential, Fixed, GoBackoff, NoRetry, RetryPolicy
from .schedules import MissedPolicy, Schedule
from .ticker import Ticker

try:
    __version__ = version("swf-pool")  # declared once, in pyproject.toml
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "unknown"

__all__ = [
    "AsyncClient",
    "Audit",
    "Client",
    "ClientClosed",
    "ConfigError",
    "ConnectError",
    "DataRejected",
    "DatabaseError",
    "Event",
    "EventType",
    "Exponential",
    "Fixed",
    "GoBackoff",
    "InvalidConnection",
    "InvalidDsn",
    "InvalidPayload",
    "InvalidSchedule",
    "MetricsCollector",
    "MigrationError",
    "MissedPolicy",
    "NoRetry",
    "PermanentError",
    "Pool",
    "PoolStats",
    "PrometheusMetrics",
    "QueueStats",
    "Registry",
    "RetryPolicy",
    "Run",
    "RunAlreadyFinished",
    "RunNotFound",
    "RunNotRetryable",
    "RunRecord",
    "Schedule",
    "ScheduleNotFound",
    "SchemaNotReady",
    "Status",
    "Submitted",
    "SwfError",
    "Ticker",
    "TypeStats",
    "ValidationError",
    "WaitTimeout",
]
