"""The demo's tasks: each shows one thing pgqueue does."""

import time

from django.tasks import task


@task
def send_receipt(order_id: int) -> str:
    """A plain task: it runs once and returns a JSON value."""
    return f"receipt for order {order_id} sent"


@task(takes_context=True, max_attempts=5)
def charge_card(context, order_id: int) -> str:
    """Fails on its first two attempts (a flaky payment gateway), then succeeds on retry."""
    if context.attempt < 3:
        raise ConnectionError(f"payment gateway timed out (attempt {context.attempt})")
    return f"order {order_id} charged on attempt {context.attempt}"


@task
def build_report(steps: int):
    """A generator task: each value it yields is stored while it runs."""
    for step in range(1, steps + 1):
        time.sleep(0.05)
        yield {"step": step, "of": steps}
    return f"report built in {steps} steps"


@task
def send_reminder(order_id: int) -> str:
    """Enqueued with a delay: it does not run before its run_after."""
    return f"reminder for order {order_id}"


@task
def restock(item: str) -> str:
    """Enqueued at different priorities to show that higher priority runs first."""
    return f"restocked {item}"
