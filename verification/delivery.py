"""Hand a code to the channel that carries it."""

import logging

from django.core.mail import send_mail
from django.utils.translation import gettext as _

from .models import Channel
from .sms import SmsDeliveryError, send_sms

logger = logging.getLogger(__name__)


class DeliveryError(Exception):
    """The message did not leave: the gateway refused it or could not be reached."""


def deliver_code(*, channel: str, destination: str, body: str) -> None:
    """Send ``body`` to ``destination`` now; raise ``DeliveryError`` if it cannot be sent."""
    try:
        if channel == Channel.SMS:
            send_sms(to=destination, body=body)
        elif channel == Channel.EMAIL:
            send_mail(
                subject=_("Your Activation Rescue code"),
                message=body,
                from_email=None,
                recipient_list=[destination],
            )
        else:
            raise DeliveryError(f"{channel} does not carry codes")
    except (SmsDeliveryError, OSError) as error:
        logger.warning("Could not deliver a code by %s: %s", channel, error)
        raise DeliveryError(str(error)) from error
