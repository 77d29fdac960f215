"""What one pass through the checkpoint costs in queries, and that history does not raise it.

Measured with the default rule set v1, after one warm-up evaluation (the rule set's rules and
the staff's network ranges are then cached in the process, as they are in a running server):

- sign-in or code request, nothing fired: 9 queries; a code submit: 10 (it also reads where the
  code was asked for);
- a rule fired: +1 (the fired rules are written); a decision other than allow: +1 (whether staff
  vouched for the case). The dearest pass, a code submit that steps up, is 12.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from risk.facts import ClientFacts
from risk.models import Decision, Device, Evaluation, KnownDevice, Moment
from risk.services import evaluate, trust_device
from tests.factories import CustomerFactory, open_failed_case

from .conftest import IPHONE_FACTS, IPHONE_UA, PIXEL_FACTS, PIXEL_UA

pytestmark = pytest.mark.django_db

CHEAPEST = 9  # sign-in or code request that fires nothing
DEAREST = 12  # code submit that fires rules and steps up

OWN_PHONE = "a" * 32
NEW_PHONE = "b" * 32


def facts(device: str, *, user_agent: str = PIXEL_UA, posted: dict = PIXEL_FACTS) -> ClientFacts:
    return ClientFacts(
        ip_address="203.0.113.10",
        device_key=device,
        device_cookie="valid",
        user_agent=user_agent,
        accept_language="en-US,en;q=0.9",
        posted=posted,
    )


NEW_PHONE_FACTS = facts(NEW_PHONE, user_agent=IPHONE_UA, posted=IPHONE_FACTS)


@pytest.fixture
def setting():
    """A customer who proved themselves on their own phone, with an open case."""
    customer = CustomerFactory()
    case = open_failed_case(customer)
    evaluate(moment=Moment.SIGN_IN, customer=customer, facts=facts(OWN_PHONE))  # warm-up
    trust_device(customer=customer, facts=facts(OWN_PHONE))
    return customer, case


def earlier_traffic(customer, count: int) -> None:
    """``count`` earlier evaluations over the last day (older than an hour, so that no rule
    changes its mind): this customer's on their own phone and other customers' on the same
    network, each on a device of their own; and as many known devices for this customer."""
    others = CustomerFactory.create_batch(3)
    now = timezone.now()
    devices = Device.objects.bulk_create(
        [Device(key=f"{count:04x}{index:028x}", attributes=PIXEL_FACTS) for index in range(count)]
    )
    KnownDevice.objects.bulk_create(
        [
            KnownDevice(
                customer=customer,
                device=device,
                first_seen=now - timedelta(days=3),
                last_seen=now - timedelta(days=2),
                verified_at=now - timedelta(days=3),
            )
            for device in devices
        ]
    )
    moments = [Moment.SIGN_IN, Moment.CODE_REQUEST, Moment.CODE_SUBMIT]
    owners = (customer, *others)
    Evaluation.objects.bulk_create(
        [
            Evaluation(
                moment=moments[index % 3],
                customer=owners[index % 4],
                device_id=OWN_PHONE if index % 4 == 0 else devices[index].key,
                ip_prefix="203.0.113.0/24",
                code_result="code_invalid" if index % 3 == 2 else "",
                code_failed=index % 3 == 2,
                decision=Decision.ALLOW,
                signals={},
                created_at=now - timedelta(minutes=61 + index % 1300),
            )
            for index in range(count)
        ]
    )


def queries_of(**kwargs) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as captured:
        assessment = evaluate(**kwargs)
    return len(captured.captured_queries), assessment.decision


def test_an_evaluation_costs_a_few_queries(setting, django_assert_max_num_queries):
    customer, case = setting
    with django_assert_max_num_queries(CHEAPEST):
        evaluate(moment=Moment.SIGN_IN, customer=customer, facts=facts(OWN_PHONE))
    with django_assert_max_num_queries(CHEAPEST):
        evaluate(
            moment=Moment.CODE_REQUEST,
            customer=customer,
            facts=facts(OWN_PHONE),
            case_id=case.pk,
            channel="sms",
        )
    with django_assert_max_num_queries(DEAREST):
        stepped_up = evaluate(
            moment=Moment.CODE_SUBMIT,
            customer=customer,
            facts=NEW_PHONE_FACTS,
            case_id=case.pk,
            channel="sms",
            code_result="ok",
        )
    assert stepped_up.decision == Decision.STEP_UP


@pytest.mark.parametrize(
    ("moment", "device_facts", "decision"),
    [
        (Moment.SIGN_IN, facts(OWN_PHONE), Decision.ALLOW),
        (Moment.CODE_REQUEST, facts(OWN_PHONE), Decision.ALLOW),
        (Moment.CODE_SUBMIT, facts(OWN_PHONE), Decision.ALLOW),
        (Moment.CODE_SUBMIT, NEW_PHONE_FACTS, Decision.STEP_UP),
    ],
    ids=["sign-in", "code request", "code submit", "code submit stepped up"],
)
def test_the_cost_does_not_grow_with_earlier_evaluations(setting, moment, device_facts, decision):
    customer, case = setting
    kwargs = {
        "moment": moment,
        "customer": customer,
        "facts": device_facts,
        "case_id": case.pk,
        "channel": "sms",
        "code_result": "ok" if moment == Moment.CODE_SUBMIT else "",
    }
    earlier_traffic(customer, 5)
    few = queries_of(**kwargs)
    earlier_traffic(customer, 200)
    many = queries_of(**kwargs)
    assert Evaluation.objects.count() > 200
    assert few == many
    count, seen = many
    assert seen == decision
    assert count <= DEAREST
