"""The outbox: where a parent run's defers wait until the run finalizes.

``record`` is the stored form of one ``defer()`` call (the boundary with the
parent side); ``redis_outbox`` keeps records durably, ``memory_outbox`` is its
twin for eager runs; ``dispatch`` sends a finalized run's records through
``publish`` and clears them; ``recovery`` sends what a dead worker left.
"""
