"""The view that places an order and defers work after its transaction commits."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from celery_defer.django import defer_on_commit
from tests.django_project.shop.models import Order
from tests.django_project.shop.tasks import audit, order_placed


@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order = Order.objects.create(
            email=request.POST["email"], total_cents=int(request.POST["total_cents"])
        )
        # A DeferTask run that defers the receipt: sent only if the order is committed.
        order_placed.delay_on_commit(order.pk)
        # A defer made from the view itself, through a relay run sent on commit.
        defer_on_commit("audit", function=audit, data={"order_id": order.pk, "event": "placed"})
        if request.POST.get("reject"):
            transaction.set_rollback(True)
            return JsonResponse({"rejected": order.pk}, status=422)
    return JsonResponse({"order": order.pk}, status=201)
