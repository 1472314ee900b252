"""The recovery bootstep starts after the worker's pool, so no fork copies its thread."""

from __future__ import annotations

from celery.worker import WorkController

from celery_defer.outbox.recovery import RecoveryStep


def test_recovery_starts_after_the_pool_forked_its_processes() -> None:
    # Celery orders steps that declare no dependency by set order, which changes
    # with the classes' identities: try many copies of the step to see every order.
    for copy in range(40):
        step = type(f"RecoveryStepCopy{copy}", (RecoveryStep,), {"name": f"recovery-copy-{copy}"})
        blueprint = WorkController.Blueprint(steps=[step])
        order = [node.name for node in blueprint._finalize_steps(blueprint.claim_steps())]
        assert order.index("celery.worker.components.Pool") < order.index(f"recovery-copy-{copy}"), order
