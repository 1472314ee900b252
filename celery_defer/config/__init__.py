"""The ``create_defer`` config: its typed shape, durations, key paths, schemas, flow keys.

``options`` validates a config into ``FunctionOptions``; the other modules each
check one kind of value in it.
"""
