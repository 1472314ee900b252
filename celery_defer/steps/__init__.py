"""Steps (SPEC section 6): work done once per run, kept across its attempts.

``run_steps`` is the API (:class:`Steps`, ``ctx.step``); ``memo`` keeps results
and in-step defers (one Redis hash per run, a dict for eager runs); ``current``
finds the attempt's steps for ``celery_defer.step``; ``requeue`` puts a parent
run back on the queue for a ``step.sleep``.
"""
