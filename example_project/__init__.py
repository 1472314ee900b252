"""A small shop built on celery_defer: ``celery -A example_project worker``.

Importing the package registers every task: the deferred functions
(:mod:`example_project.functions`) and the parent task ``order_placed``
(:mod:`example_project.orders`). ``python -m example_project`` runs the demo.
"""

from __future__ import annotations

from example_project import functions, orders
from example_project.app import app

__all__ = ["app", "functions", "orders"]
