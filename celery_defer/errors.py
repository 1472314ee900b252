"""The exceptions of celery_defer: one root, specific subclasses under it."""

from __future__ import annotations

import datetime as dt

from celery.exceptions import Ignore


class CeleryDeferError(Exception):
    """Something went wrong in celery_defer."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(CeleryDeferError):
    """A deferred function's config or a celery_defer setting is invalid.

    Attributes:
        key: the config key or setting at fault, when there is one.
    """

    def __init__(self, message: str | None = None, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class StoreUnavailableError(CeleryDeferError):
    """The Redis that holds celery_defer's state could not be reached."""


class PublishError(CeleryDeferError):
    """The broker did not take every message of a run; those it did are named.

    Attributes:
        sent: the defer ids whose messages the broker took.
    """

    def __init__(self, message: str | None = None, *, sent: list[str]) -> None:
        super().__init__(message)
        self.sent = sent


class NonRetriableError(CeleryDeferError):
    """Raised by a handler to fail the deferred run now, without a retry."""


class RetryAfterError(CeleryDeferError):
    """Raised by a handler to retry the deferred run after ``delay``.

    Args:
        delay: seconds, a ``timedelta``, a duration string such as ``"30s"``, or
            an aware or naive-UTC ``datetime`` at which to retry.
        message: optional text for logs.
    """

    def __init__(
        self,
        delay: float | int | str | dt.timedelta | dt.datetime,
        message: str | None = None,
    ) -> None:
        super().__init__(message or f"retry requested after {delay!r}")
        self.delay = delay


class DeferredRunTimeoutError(NonRetriableError):
    """The deferred run passed its ``timeouts.start`` or ``timeouts.finish``."""


class StepResultError(NonRetriableError):
    """A step's ``fn`` returned a value that is not JSON-serialisable; the run fails without retries.

    Attributes:
        step_id: the step (with its implicit index, e.g. ``"charge:1"``).
        run_id: the run it belongs to.
    """

    def __init__(self, message: str | None = None, *, step_id: str = "", run_id: str = "") -> None:
        super().__init__(message)
        self.step_id = step_id
        self.run_id = run_id


class CallSkipped(CeleryDeferError):
    """A ``defer()`` call broke a call-site rule and was skipped; the message says which.

    Never seen by callers: ``defer()`` logs it and returns.
    """


class SchemaRejected(CeleryDeferError, ValueError):
    """The data did not pass the deferred function's schema."""


class AsyncSchemaError(CeleryDeferError, TypeError):
    """The schema validates asynchronously, which a synchronous call site cannot await."""


class KeyExpressionError(NonRetriableError, ValueError):
    """A key expression could not be evaluated for an event; retrying would not help."""


class MalformedMessageError(NonRetriableError):
    """A message sent to a deferred function is not one ``defer()`` makes."""


class RedisServerError(CeleryDeferError):
    """The private redis-server of the tests or the example could not be found or started."""


class Requeued(Ignore, CeleryDeferError):  # type: ignore[misc]
    """The attempt put its message back on the queue for later; the run goes on.

    Celery acknowledges the current message without a result (an ``Ignore``);
    the message sent in its place carries the run.
    """


class DuplicateRun(Ignore, CeleryDeferError):  # type: ignore[misc]
    """A copy of a deferred run that already finalized: acknowledged, not run."""


class DirectStartError(CeleryDeferError, TypeError):
    """A deferred function was started some other way than ``defer()`` or ``.start()``."""
