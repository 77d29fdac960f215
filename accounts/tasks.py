"""Celery tasks for accounts: each takes ids, calls one service, and owns only its retry policy."""

from celery import shared_task

from . import services


@shared_task(ignore_result=True)
def send_password_reset_code(*, phone_number: str) -> None:
    """Text the reset code asked for on the password-reset page (if the number is a customer's)."""
    services.send_password_reset_code(phone_number=phone_number)
