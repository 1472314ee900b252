"""An order, and the records its deferred runs write."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    email = models.CharField(max_length=200)
    total_cents = models.IntegerField()
    receipt_sent = models.BooleanField(default=False)


class AuditEntry(models.Model):
    order_id = models.IntegerField()
    event = models.CharField(max_length=50)
    run_id = models.CharField(max_length=64)
    parent_task = models.CharField(max_length=200)
