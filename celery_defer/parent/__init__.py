"""The parent side: ``defer()`` and its capture, ``DeferTask``, the attempt lifecycle.

Data flows ``call_site`` (the rules of one call) -> ``capture`` (the attempt's
buffer) -> ``attempt`` (recorded in the outbox as the body returns, sent when the
run finalizes) -> ``task`` (the Celery hooks that drive it) and ``worker_signals``
(the ends Celery reports from the worker's main process).
"""
