import pytest

from activation.models import ActorType, CaseState
from activation.transitions import transition
from tests.factories import open_failed_case
from verification.sms import LocmemBackend

pytestmark = pytest.mark.django_db


def test_the_customer_gets_an_sms_when_the_case_is_activated(
    customer, django_capture_on_commit_callbacks
):
    case = open_failed_case(customer)
    with django_capture_on_commit_callbacks(execute=True):
        transition(case, to=CaseState.ACTIVATED, actor_type=ActorType.CORE)
    assert len(LocmemBackend.outbox) == 1
    message = LocmemBackend.outbox[0]
    assert message["to"] == str(customer.phone_number)
    assert case.credit_line.reference in message["body"]
    assert "is now active" in message["body"]


def test_the_sms_follows_the_customers_language(customer, django_capture_on_commit_callbacks):
    customer.preferred_language = "zh-hans"
    customer.save()
    case = open_failed_case(customer)
    with django_capture_on_commit_callbacks(execute=True):
        transition(case, to=CaseState.ACTIVATED, actor_type=ActorType.CORE)
    assert "已激活" in LocmemBackend.outbox[0]["body"]


def test_no_sms_while_the_case_is_still_open(customer, django_capture_on_commit_callbacks):
    case = open_failed_case(customer)
    with django_capture_on_commit_callbacks(execute=True):
        transition(case, to=CaseState.PENDING_VERIFICATION, actor_type=ActorType.CUSTOMER)
    assert LocmemBackend.outbox == []
