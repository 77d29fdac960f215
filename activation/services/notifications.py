"""Tell the customer how their case ended, in the language they last used."""

import logging

from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _

from verification.delivery import deliver_code
from verification.models import Channel

from ..models import ActivationCase, CaseState

logger = logging.getLogger(__name__)


def notify_customer_of_resolution(*, case_id: int) -> bool:
    """Text (or e-mail) the customer that their case is resolved; False if there is no way to."""
    case = ActivationCase.objects.select_related("credit_line__customer").get(pk=case_id)
    customer = case.credit_line.customer
    if customer.phone_number:
        channel, destination = Channel.SMS, str(customer.phone_number)
    elif customer.email:
        channel, destination = Channel.EMAIL, customer.email
    else:
        return False
    names = {"product": case.credit_line.product_name, "reference": case.credit_line.reference}
    with translation.override(customer.preferred_language or settings.LANGUAGE_CODE):
        if case.state == CaseState.ACTIVATED:
            body = _("Activation Rescue: your %(product)s (%(reference)s) is now active.") % names
        elif case.state == CaseState.NEEDS_REVIEW:
            body = (
                _(
                    "Activation Rescue: your request for %(product)s (%(reference)s) is saved. The "
                    "credit system did not finish it, so our staff will; you do not need to retry."
                )
                % names
            )
        else:
            body = (
                _(
                    "Activation Rescue: your activation request for %(product)s (%(reference)s) "
                    "was closed. Sign in to see why and what you can do."
                )
                % names
            )
    deliver_code(channel=channel, destination=destination, body=body)
    return True
