"""The surge benchmark's floor activation: its steps, each doing one write and nothing else.

A settled activation needs at least a customer's request (the submit), a task that calls the core
(the delivery) and a task that sends the customer a message. ``/_bench/floor-submit`` and these
two tasks are those steps with all the product's work taken out: each writes one row, the request
queues the delivery after its commit as the submit does, the delivery asks the core for a credit
line (the simulator's cheapest authorised call) and queues the message. What the floor activation
costs across all processes is the price of the steps themselves (HTTP, Celery, the core's call),
the part of an activation no change to our code can remove.
"""

from celery import shared_task
from django.db import connection

from activation.core.client import CoreClient
from portal.queue import enqueue_on_commit


def write_one_row() -> None:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_probe (created_at) VALUES (now())")


@shared_task(ignore_result=True)
def floor_delivery() -> None:
    """The delivery at its floor: one call to the core, one write, the message queued."""
    with CoreClient.from_settings() as core:
        core.get_credit_line("BENCH-FLOOR")
    write_one_row()
    enqueue_on_commit("bench.tasks.floor_message")


@shared_task(ignore_result=True)
def floor_message() -> None:
    """The customer's message at its floor: one write."""
    write_one_row()
