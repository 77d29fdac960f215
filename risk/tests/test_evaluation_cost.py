"""What one pass through the checkpoint costs in queries, and that history does not raise it.

Measured with the default rule set v1 for an established customer on their own phone (no rule
fires), after one warm-up evaluation (the rule set's rules and the staff's network ranges are then
cached in the process, as they are in a running server):

- sign-in or code request, nothing fired, on a device this customer was seen on in the last
  five minutes with the same attributes: 7 queries (the running versions, the customer's known
  devices, the velocity counts, the lock-outs, confirmed fraud, the staff lists, the evaluation
  row); a code submit: 8 (it also reads where the code was asked for). This is the usual pass:
  the code request follows the sign-in, and the submit the request, within minutes;
- a device seen for the first time, last seen more than five minutes ago or with other
  attributes: +2 (the device and the customer's known device are written);
- a rule fired: +1 (the fired rules are written). The dearest pass, a code submit that steps up
  on a phone seen for the first time, is 11.
"""

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from risk.facts import ClientFacts
from risk.models import Decision, Device, Evaluation, KnownDevice, Moment
from risk.services import evaluate, trust_device
from risk.services.checkpoint import LAST_SEEN_PRECISION
from tests.factories import CustomerFactory, open_failed_case

from .conftest import (
    IPHONE_FACTS,
    IPHONE_UA,
    PIXEL_FACTS,
    PIXEL_UA,
    PIXEL_UA_UPDATED,
    established_customer,
)

pytestmark = pytest.mark.django_db

# A sign-in or code request that fires nothing, on a device seen minutes ago: the running
# versions, the known devices, one query of counts (velocity, lock-outs, confirmed fraud, the
# block list, the attempt's earlier decisions) and the evaluation written.
SEEN_JUST_NOW = 4
SUBMIT_READS = 1  # a code submit also reads where its code was asked for
REMEMBER_DEVICE = 2  # the device and known-device writes, when there is something to record
STEPPED_UP = 1  # the fired rules written
CHEAPEST = SEEN_JUST_NOW
DEAREST = SEEN_JUST_NOW + SUBMIT_READS + REMEMBER_DEVICE + STEPPED_UP  # 8
A_WHILE = LAST_SEEN_PRECISION + timedelta(minutes=1)

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
    """An established customer who proved themselves on their own phone, with an open case."""
    customer = established_customer()
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


def test_an_evaluation_costs_a_few_queries(setting, django_assert_num_queries):
    customer, case = setting
    own_phone = {"customer": customer, "facts": facts(OWN_PHONE)}
    with time_machine.travel(timezone.now(), tick=False) as clock:
        with django_assert_num_queries(CHEAPEST):
            evaluate(moment=Moment.SIGN_IN, **own_phone)
        with django_assert_num_queries(CHEAPEST):
            evaluate(moment=Moment.CODE_REQUEST, case_id=case.pk, channel="sms", **own_phone)
        with django_assert_num_queries(CHEAPEST + SUBMIT_READS):
            evaluate(
                moment=Moment.CODE_SUBMIT,
                case_id=case.pk,
                channel="sms",
                code_result="ok",
                **own_phone,
            )
        # Seen minutes ago: last seen is brought up to date.
        clock.shift(A_WHILE)
        with django_assert_num_queries(CHEAPEST + REMEMBER_DEVICE):
            evaluate(moment=Moment.SIGN_IN, **own_phone)
        known = KnownDevice.objects.get(customer=customer, device=OWN_PHONE)
        assert known.last_seen == timezone.now()
        # Other attributes (a browser update) are recorded at once, however recent the visit.
        with django_assert_num_queries(CHEAPEST + REMEMBER_DEVICE):
            evaluate(
                moment=Moment.SIGN_IN,
                customer=customer,
                facts=facts(OWN_PHONE, user_agent=PIXEL_UA_UPDATED),
            )
        assert Device.objects.get(key=OWN_PHONE).attributes["browser_major"] == "127"

        with django_assert_num_queries(DEAREST):
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
    "pause", [timedelta(0), A_WHILE], ids=["seen just now", "seen a while ago"]
)
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
def test_the_cost_does_not_grow_with_earlier_evaluations(
    setting, moment, device_facts, decision, pause
):
    customer, case = setting
    kwargs = {
        "moment": moment,
        "customer": customer,
        "facts": device_facts,
        "case_id": case.pk,
        "channel": "sms",
        "code_result": "ok" if moment == Moment.CODE_SUBMIT else "",
    }
    with time_machine.travel(timezone.now(), tick=False) as clock:
        evaluate(**kwargs)  # the pass before (a sign-in, a code request): the device is seen
        clock.shift(pause)
        earlier_traffic(customer, 5)
        few = queries_of(**kwargs)
        clock.shift(pause)
        earlier_traffic(customer, 200)
        many = queries_of(**kwargs)
    assert Evaluation.objects.count() > 200
    assert few == many
    count, seen = many
    assert seen == decision
    assert count == (
        SEEN_JUST_NOW
        + (SUBMIT_READS if moment == Moment.CODE_SUBMIT else 0)
        + (REMEMBER_DEVICE if pause else 0)
        + (STEPPED_UP if decision != Decision.ALLOW else 0)
    )
    assert count <= DEAREST
