"""The exceptions swf-pool raises. Each class's docstring is its default message.

    SwfError
    ├── ConfigError            bad settings: a value out of range, an unknown option
    │   └── InvalidDsn         a connection string that cannot be parsed
    ├── ValidationError        bad input to the API; nothing was written
    │   ├── InvalidPayload     a payload or result that is not JSON
    │   ├── InvalidSchedule    a cron expression or time zone that cannot be used
    │   └── InvalidConnection  a caller's connection this client cannot write through
    ├── DatabaseError          the database could not be used
    │   ├── ConnectError       the server cannot be reached or refuses us
    │   ├── DataRejected       the database refused a value (a constraint, bad text, too
    │   │                      long for an index); also a ValidationError
    │   ├── SchemaNotReady     the schema is missing or not migrated
    │   ├── UndecodableRun     a stored run whose times or JSON cannot be read
    │   └── MigrationError     a migration could not be applied
    ├── RunNotFound            no such run (or it is soft-deleted)
    ├── RunAlreadyFinished     the run is succeeded, failed or cancelled
    ├── RunNotRetryable        only a failed or cancelled run can be retried
    ├── WaitTimeout            the run did not finish within the wait's timeout
    └── ScheduleNotFound       no such schedule (or it is deleted)

`PermanentError` is raised by handlers, not by swf-pool: it fails a run at once, without retry.
"""

from __future__ import annotations


class SwfError(Exception):
    """swf-pool error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(SwfError, ValueError):
    """Invalid configuration."""


class InvalidDsn(ConfigError):
    """Invalid connection string."""


class ValidationError(SwfError, ValueError):
    """Invalid input."""


class InvalidPayload(ValidationError):
    """The payload is not JSON-serializable."""


class DatabaseError(SwfError):
    """The database could not be used."""


class ConnectError(DatabaseError):
    """Cannot connect to the database."""


class DataRejected(DatabaseError, ValidationError):
    """The database refused the data (a constraint or a value it cannot store)."""


class SchemaNotReady(DatabaseError):
    """The workflow schema is missing or not migrated (run `swf-pool migrate up`)."""


class MigrationError(DatabaseError):
    """A migration failed."""


class UndecodableRun(DatabaseError):
    """A run in the database cannot be decoded (a time or JSON written in no known form)."""


class RunNotFound(SwfError, LookupError):
    """Workflow run not found."""


class RunAlreadyFinished(SwfError):
    """Workflow run is already finished."""


class RunNotRetryable(SwfError):
    """Only a failed or cancelled run can be retried."""


class InvalidConnection(ValidationError):
    """The connection given cannot be used by this client (another backend's, a closed one,
    one whose transaction has failed, or one to another database)."""


class ClientClosed(ConfigError):
    """The client is closed: open a new one (`with Client(...) as client:` closes it at the
    end of the block)."""


class WaitTimeout(SwfError, TimeoutError):
    """The run did not finish within the wait's timeout."""


class InvalidSchedule(ValidationError):
    """Invalid cron expression or time zone."""


class ScheduleNotFound(SwfError, LookupError):
    """Schedule not found."""


class PermanentError(Exception):
    """Raised by a handler to fail its run at once, whatever attempts are left."""
