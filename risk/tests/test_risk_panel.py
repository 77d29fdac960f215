"""The risk panel on the back office's case page, and the queue's risk filter."""

import html
import re

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from activation.models import ActivationCase
from risk.facts import ClientFacts
from risk.models import Evaluation, Moment, Rule, RuleSetVersion
from risk.services import evaluate, record_outcome
from risk.signals import pseudonym
from tests.factories import CustomerFactory, open_failed_case

from .test_lists_and_outcomes import ring_case, staff_client

pytestmark = pytest.mark.django_db

QUEUE = "/backoffice/activation/activationcase/"
HOME_PREFIX = "203.0.113.0/24"  # where conftest's phones connect from


def case_page(case) -> str:
    return f"{QUEUE}{case.pk}/change/"


def panel_text(client, case) -> str:
    """The risk panel of the case page, as text with HTML entities read."""
    response = client.get(case_page(case))
    assert response.status_code == 200
    found = re.search(
        r'<fieldset class="module aligned" id="risk-panel">.*?</fieldset>', response.text, re.S
    )
    assert found, "the case page has no risk panel"
    return html.unescape(found.group(0))


def test_the_panel_explains_a_held_case_the_rules_that_fired_and_the_device(agent, phone):
    case, _shared = ring_case(phone)
    text = panel_text(staff_client(agent), case)

    assert "Latest decision:</strong> Hand to staff for review" in text
    assert "score 170" in text
    assert "rule set version 1" in text
    assert "Code request" in text
    # Each rule that fired, with its score and its reason in words.
    assert "+90 Customers on this device in 24 hours: more than 4." in text
    assert "+40 Customers on this device in 24 hours: more than 3." in text
    assert "+25 Customers on this device in 24 hours: more than 1." in text
    assert "+15 The account is less than 7 days old." in text
    # The device: known to this customer since when, never verified, four others on it.
    assert "known to this customer since" in text
    assert "never verified on it" in text
    assert "other customers on it: 4 in the last 24 hours, 4 ever" in text
    assert "Risk level: High" in text
    # The outcome form is there for an agent.
    assert 'name="outcome"' in text


def test_without_view_pii_the_panel_shows_no_device_key_or_address_only_their_hashes(
    agent, supervisor, phone
):
    case, shared = ring_case(phone)
    record_outcome(actor=agent, case_id=case.pk, outcome="fraud", note="Ring", block_device=True)
    client = staff_client(supervisor)
    text = panel_text(client, case)
    assert shared.device_key not in text
    assert "203.0.113" not in text
    assert f"#{pseudonym(shared.device_key)}" in text  # the device, as the timeline names it
    assert pseudonym(HOME_PREFIX) in text  # the network prefix, hashed
    # The block proposal the outcome made is listed, by the same hash.
    assert "Waiting for a second person" in text
    assert "proposed by agent-ada" in text
    assert "Confirmed fraud, recorded by agent-ada" in text

    # The lists page names the device the same way.
    lists = html.unescape(client.get("/backoffice/risk/lists/").text)
    assert shared.device_key not in lists
    assert f"#{pseudonym(shared.device_key)}" in lists


def test_with_view_pii_the_panel_shows_the_device_key_and_the_prefix(agent, phone):
    case, shared = ring_case(phone)
    agent.user_permissions.add(Permission.objects.get(codename="view_pii"))
    text = panel_text(staff_client(agent), case)
    assert shared.device_key in text
    assert HOME_PREFIX in text


def test_the_panel_shows_what_a_shadow_version_would_have_decided(agent, phone):
    shadow = RuleSetVersion.objects.create(
        number=2,
        status=RuleSetVersion.Status.SHADOW,
        step_up_at=40,
        review_at=90,
        published_at=timezone.now(),
    )
    Rule.objects.create(version=shadow, kind="young_account", params={"days": 365}, score=50)
    customer = CustomerFactory()
    case = open_failed_case(customer)
    mobile = phone()
    mobile.client.force_login(customer)
    mobile.send(case)

    text = panel_text(staff_client(agent), case)
    assert "Latest decision:</strong> Allow" in text
    assert "Version 2 would have decided: Ask for a stronger factor (score 50)." in text
    assert "+50 The account is less than 365 days old." in text
    # Nothing was flagged: no outcome to record.
    assert "The checkpoint did not flag this case." in text
    assert 'name="outcome"' not in text


def test_a_case_the_checkpoint_never_saw_says_so(agent):
    case = open_failed_case()
    text = panel_text(staff_client(agent), case)
    assert "The checkpoint has not evaluated this case." in text
    assert "The checkpoint did not flag this case." in text


def test_the_panel_costs_the_same_queries_however_long_the_case_history(agent, phone):
    short, _shared = ring_case(phone)
    long, _other = ring_case(phone)
    customer = long.credit_line.customer
    # Many more evaluations of the long case, from many devices and networks.
    for number in range(30):
        evaluate(
            moment=Moment.CODE_SUBMIT,
            customer=customer,
            facts=ClientFacts(
                ip_address=f"192.0.2.{number}",
                device_key=f"{number:032x}",
                device_cookie="valid",
            ),
            case_id=long.pk,
            code_result="code_invalid",
        )
    assert Evaluation.objects.filter(case=long).count() > 30
    client = staff_client(agent)

    def queries(case: ActivationCase) -> int:
        client.get(case_page(case))  # warm per-process caches first
        with CaptureQueriesContext(connection) as context:
            assert client.get(case_page(case)).status_code == 200
        # The session is read from the database only when the cache dropped it (LocMemCache
        # culls when full), which has nothing to do with the case.
        return sum("django_session" not in query["sql"] for query in context.captured_queries)

    assert queries(short) == queries(long)


# --- The queue's risk filter ----------------------------------------------------------------------


def test_a_case_held_by_the_checkpoint_shows_under_high_risk_and_not_under_low(agent, phone):
    held, _shared = ring_case(phone)
    quiet = open_failed_case()
    client = staff_client(agent)

    high = client.get(f"{QUEUE}?risk_level__exact=high")
    low = client.get(f"{QUEUE}?risk_level__exact=low")
    assert high.status_code == low.status_code == 200
    assert held.credit_line.reference in high.text
    assert quiet.credit_line.reference not in high.text
    assert quiet.credit_line.reference in low.text
    assert held.credit_line.reference not in low.text
