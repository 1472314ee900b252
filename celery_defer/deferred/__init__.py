"""The deferred side: the Celery task that runs a deferred function.

``message`` parses what the outbox sent (the boundary with the parent side);
``function`` runs one attempt: ``claims`` (never twice) -> ``admission`` (flow
control) -> ``handler_call`` -> finish or ``retries``. ``create`` registers a
function on an app; ``context`` is what its handler receives.
"""
