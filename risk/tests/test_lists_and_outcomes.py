"""The staff-kept lists and staff outcomes, through the real back-office and customer pages.

Staff sign in with password and authenticator code; customers use the real sign-in and retry
pages from a phone that keeps its device cookie (``phone`` in conftest).
"""

import pytest
from django.test import Client

from accounts.masking import mask_phone_number
from activation.models import CaseEvent, CaseState, FailureReason
from activation.tests.test_backoffice import current_code, sign_in
from activation.timeline import find_case_chain_break
from audit.models import SystemEvent
from portal.errors import NotPermitted
from risk.models import CaseOutcome, Decision, ListEntry
from risk.services import (
    add_network_range,
    approve_entry,
    approve_removal,
    propose_block,
    propose_removal,
    record_outcome,
    reject_entry,
    reject_removal,
    remove_entry,
)
from risk.services.lists import ListEntryDecided, SecondPersonRequired
from tests.factories import PASSWORD, CustomerFactory, StaffFactory, open_failed_case
from verification.sms import LocmemBackend

pytestmark = pytest.mark.django_db

LISTS = "/backoffice/risk/lists/"
DEVICE_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def analyst(db):
    return StaffFactory(username="analyst-ann", role="risk_analyst")


def staff_client(user) -> Client:
    """A browser of ``user``, signed in to the back office with password and app code."""
    client = Client()
    sign_in(client, user, current_code(user))
    return client


def audit_kinds() -> list[str]:
    return list(SystemEvent.objects.order_by("seq").values_list("kind", flat=True))


def last_risk_event(case) -> dict:
    return CaseEvent.objects.filter(case=case, kind="risk.evaluated").order_by("-seq").first().data


def customer_phone(phone, customer):
    """The customer's phone, signed in, with its device cookie already set."""
    mobile = phone()
    mobile.client.force_login(customer)
    mobile.get("/activation/")
    return mobile


def propose(client, kind: str, value: str, reason: str = "Seen in a fraud ring"):
    return client.post(
        LISTS,
        {"action": "propose", "block-kind": kind, "block-value": value, "block-reason": reason},
    )


def decide(client, action: str, entry, reason: str = "Checked the case"):
    return client.post(LISTS, {"action": action, "entry": entry.pk, "reason": reason})


def add_range(client, value: str, label: str = "vpn", reason: str = "A commercial VPN"):
    return client.post(
        LISTS,
        {"action": "add_range", "range-value": value, "range-label": label, "range-reason": reason},
    )


# --- Blocks need two people -------------------------------------------------------------------


def test_a_device_block_needs_a_second_person_then_holds_the_next_code_request(
    supervisor, analyst, customer, other_customer, phone
):
    case = open_failed_case(customer)
    mobile = customer_phone(phone, customer)
    sam = staff_client(supervisor)

    response = propose(sam, "device", mobile.device_key.upper())
    assert response.status_code == 302
    entry = ListEntry.objects.get()
    assert (entry.kind, entry.value, entry.status, entry.proposed_by) == (
        "device",
        mobile.device_key,
        ListEntry.Status.PROPOSED,
        supervisor,
    )
    assert audit_kinds() == ["risk_list.block_proposed"]

    # The proposer cannot approve it: refused, and nothing changes.
    own = decide(sam, "approve", entry)
    assert own.status_code == 403
    assert "You proposed this block; another person must approve it." in own.text
    entry.refresh_from_db()
    assert (entry.status, entry.decided_by) == (ListEntry.Status.PROPOSED, None)
    assert audit_kinds() == ["risk_list.block_proposed"]

    # A proposal alone blocks nothing: the code is sent.
    mobile.send(case)
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert last_risk_event(case)["decision"] == Decision.ALLOW
    sent = len(LocmemBackend.outbox)

    # A second person with the right approves it: it applies from the next request.
    assert decide(staff_client(analyst), "approve", entry).status_code == 302
    entry.refresh_from_db()
    assert (entry.status, entry.decided_by) == (ListEntry.Status.ACTIVE, analyst)
    assert audit_kinds() == ["risk_list.block_proposed", "risk_list.block_approved"]

    response = mobile.send(case)
    assert response.status_code == 302
    assert response["Location"] == f"/activation/{case.pk}/"
    case.refresh_from_db()
    assert (case.state, case.failure_reason, case.risk_level) == (
        CaseState.NEEDS_REVIEW,
        FailureReason.RISK_REVIEW,
        "high",
    )
    assert last_risk_event(case)["decision"] == Decision.BLOCK
    assert last_risk_event(case)["blocked_by"] == "device"
    assert len(LocmemBackend.outbox) == sent  # nothing was sent
    page = mobile.get(f"/activation/{case.pk}/")
    assert "fraud" not in page.text.lower()

    # Another customer on another phone is not affected.
    other_case = open_failed_case(other_customer)
    customer_phone(phone, other_customer).send(other_case)
    other_case.refresh_from_db()
    assert other_case.state == CaseState.PENDING_VERIFICATION
    assert len(LocmemBackend.outbox) == sent + 1


def test_a_blocked_phone_number_cannot_sign_in_and_is_told_so_without_accusation(
    supervisor, other_supervisor, customer, phone
):
    national = str(customer.phone_number).removeprefix("+86")
    sign_in_form = {"username": national, "password": PASSWORD}
    assert phone().post("/accounts/login/", sign_in_form).status_code == 302  # before the block

    assert (
        propose(staff_client(supervisor), "phone", f"{national[:3]} {national[3:]}").status_code
        == 302
    )
    entry = ListEntry.objects.get()
    assert entry.value == str(customer.phone_number)  # stored as E.164, as the checkpoint reads it
    assert decide(staff_client(other_supervisor), "approve", entry).status_code == 302

    mobile = phone()
    response = mobile.post("/accounts/login/", sign_in_form)
    assert response.status_code == 200
    assert "We cannot sign you in online at the moment. Please call our service line." in (
        response.text
    )
    assert "fraud" not in response.text.lower()
    assert "_auth_user_id" not in mobile.client.session


def blocked_device(phone, customer, proposer, approver):
    """The customer's phone, its device blocked by ``proposer`` and ``approver``."""
    mobile = customer_phone(phone, customer)
    propose_block(actor=proposer, kind="device", value=mobile.device_key, reason="Fraud ring")
    entry = ListEntry.objects.get()
    approve_entry(actor=approver, entry_id=entry.pk, reason="Checked the case")
    return mobile, entry


def still_blocked(mobile, customer) -> bool:
    """Whether the customer's next code request from ``mobile`` is held by the block."""
    case = open_failed_case(customer)
    mobile.send(case)
    case.refresh_from_db()
    return case.state == CaseState.NEEDS_REVIEW and last_risk_event(case)["blocked_by"] == "device"


def test_lifting_a_block_is_proposed_by_one_person_and_carried_out_by_another(
    supervisor, other_supervisor, analyst, customer, phone
):
    mobile, entry = blocked_device(phone, customer, supervisor, other_supervisor)
    sue, ann = staff_client(other_supervisor), staff_client(analyst)
    before = audit_kinds()

    # Nobody removes a block in one step, not even someone who neither proposed nor approved it.
    refused = decide(ann, "remove", entry, "A mistake")
    assert refused.status_code == 403
    assert "A block is lifted by two people" in refused.text

    # One person proposes lifting it: the block stays active and keeps holding the device.
    assert decide(
        sue, "propose_removal", entry, "The customer proved who they are"
    ).status_code == (302)
    entry.refresh_from_db()
    assert (entry.status, entry.removal_proposed_by, entry.removal_reason) == (
        ListEntry.Status.ACTIVE,
        other_supervisor,
        "The customer proved who they are",
    )
    assert "Lifting proposed by supervisor-sue" in sue.get(LISTS).text
    assert still_blocked(mobile, customer)

    # The proposer cannot carry it out, nor propose it twice.
    own = decide(sue, "approve_removal", entry, "Done")
    assert own.status_code == 403
    assert "You proposed lifting this block; another person must carry it out." in own.text
    assert 'value="approve_removal"' not in sue.get(LISTS).text
    assert decide(sue, "propose_removal", entry, "Again").status_code == 409
    entry.refresh_from_db()
    assert entry.status == ListEntry.Status.ACTIVE
    assert audit_kinds() == [*before, "risk_list.block_removal_proposed"]
    assert still_blocked(mobile, customer)

    # A second person with the right carries it out: the device is free from the next request.
    assert decide(ann, "approve_removal", entry, "Saw the ID check").status_code == 302
    entry.refresh_from_db()
    assert (entry.status, entry.removed_by, entry.removal_proposed_by) == (
        ListEntry.Status.REMOVED,
        analyst,
        other_supervisor,
    )
    removed = SystemEvent.objects.get(kind="risk_list.block_removed")
    assert (removed.actor, removed.data["reason"], removed.data["removal_proposed_by"]) == (
        analyst,
        "Saw the ID check",
        other_supervisor.pk,
    )
    assert removed.data["removal_reason"] == "The customer proved who they are"
    assert audit_kinds() == [
        *before,
        "risk_list.block_removal_proposed",
        "risk_list.block_removed",
    ]
    assert not still_blocked(mobile, customer)


def test_one_person_alone_cannot_lift_a_block_whatever_they_call(
    supervisor, other_supervisor, customer, phone
):
    mobile, entry = blocked_device(phone, customer, supervisor, other_supervisor)
    before = audit_kinds()
    for person in (supervisor, other_supervisor):
        with pytest.raises(SecondPersonRequired):
            remove_entry(actor=person, entry_id=entry.pk, reason="Lift it")
        with pytest.raises(ListEntryDecided):
            approve_removal(actor=person, entry_id=entry.pk, reason="Nobody proposed it")
    propose_removal(actor=supervisor, entry_id=entry.pk, reason="Lift it")
    with pytest.raises(SecondPersonRequired):
        approve_removal(actor=supervisor, entry_id=entry.pk, reason="And carry it out")
    entry.refresh_from_db()
    assert entry.status == ListEntry.Status.ACTIVE
    assert audit_kinds() == [*before, "risk_list.block_removal_proposed"]
    assert still_blocked(mobile, customer)


def test_lifting_turned_down_or_withdrawn_leaves_the_block_as_it_was(
    supervisor, other_supervisor, customer, phone
):
    mobile, entry = blocked_device(phone, customer, supervisor, other_supervisor)
    sam, sue = staff_client(supervisor), staff_client(other_supervisor)

    decide(sam, "propose_removal", entry, "Looks like a mistake")
    assert decide(sue, "reject_removal", entry, "The evidence holds").status_code == 302
    entry.refresh_from_db()
    assert (entry.status, entry.removal_proposed_by, entry.removal_reason) == (
        ListEntry.Status.ACTIVE,
        None,
        "",
    )
    rejected = SystemEvent.objects.get(kind="risk_list.block_removal_rejected")
    assert (rejected.actor, rejected.data["removal_proposed_by"]) == (
        other_supervisor,
        supervisor.pk,
    )

    # Proposed again, and withdrawn by the proposer: still active, and still holding.
    decide(sam, "propose_removal", entry, "Second thoughts")
    assert "Withdraw" in sam.get(LISTS).text
    assert decide(sam, "reject_removal", entry, "Withdrawn").status_code == 302
    entry.refresh_from_db()
    assert (entry.status, entry.removal_proposed_by) == (ListEntry.Status.ACTIVE, None)
    assert decide(sue, "approve_removal", entry, "Too late").status_code == 409
    assert still_blocked(mobile, customer)


def test_a_rejected_proposal_blocks_nothing_and_may_be_proposed_again(supervisor, other_supervisor):
    sam, sue = staff_client(supervisor), staff_client(other_supervisor)
    propose(sam, "device", DEVICE_KEY)
    entry = ListEntry.objects.get()
    assert decide(sue, "reject", entry, "Not enough evidence").status_code == 302
    entry.refresh_from_db()
    assert (entry.status, entry.decided_by) == (ListEntry.Status.REJECTED, other_supervisor)
    assert decide(sue, "approve", entry).status_code == 409  # decided already
    entry.refresh_from_db()
    assert entry.status == ListEntry.Status.REJECTED

    assert propose(sam, "device", DEVICE_KEY, "New evidence").status_code == 302
    assert ListEntry.objects.filter(status=ListEntry.Status.PROPOSED).count() == 1


def test_the_same_value_cannot_be_listed_twice(supervisor):
    sam = staff_client(supervisor)
    propose(sam, "device", DEVICE_KEY)
    again = propose(sam, "device", DEVICE_KEY.upper())
    assert again.status_code == 409
    assert "is already on the list, active or waiting for a second person." in again.text

    add_range(sam, "2001:db8:1::/48")
    overlap = add_range(sam, "2001:DB8:1:0::/48")  # the same range, written another way
    assert overlap.status_code == 409
    assert ListEntry.objects.count() == 2
    assert audit_kinds() == ["risk_list.block_proposed", "risk_list.range_added"]


# --- Network ranges apply at once and never stop anyone alone -----------------------------------


def test_a_network_range_applies_at_once_and_only_adds_score(
    supervisor, phone, django_capture_on_commit_callbacks
):
    vpn_address = "198.51.100.23"
    first, second, third = (CustomerFactory() for _ in range(3))
    # An evaluation before the change reads the staff ranges (none) and keeps them for a while.
    first_case = open_failed_case(first)
    customer_phone(phone, first).send(first_case, REMOTE_ADDR=vpn_address)
    assert "network_listed" not in {
        item["kind"] for item in last_risk_event(first_case)["live"]["fired"]
    }

    sam = staff_client(supervisor)
    with django_capture_on_commit_callbacks(execute=True):
        response = add_range(sam, "198.51.100.0/24", "vpn", "Exit nodes of a commercial VPN")
    assert response.status_code == 302
    entry = ListEntry.objects.get()
    assert (entry.kind, entry.value, entry.label, entry.status) == (
        "network",
        "198.51.100.0/24",
        "vpn",
        ListEntry.Status.ACTIVE,
    )
    assert audit_kinds() == ["risk_list.range_added"]

    # The very next customer from that range is seen on it, and is still sent a code.
    second_case = open_failed_case(second)
    customer_phone(phone, second).send(second_case, REMOTE_ADDR=vpn_address)
    event = last_risk_event(second_case)
    assert "network_listed" in {item["kind"] for item in event["live"]["fired"]}
    assert event["signals"]["network"]["listed"] == "vpn"
    assert event["decision"] == Decision.ALLOW
    second_case.refresh_from_db()
    assert second_case.state == CaseState.PENDING_VERIFICATION
    assert LocmemBackend.outbox[-1]["to"] == str(second.phone_number)

    # Removing it applies at once too, and needs no second person.
    with django_capture_on_commit_callbacks(execute=True):
        assert decide(sam, "remove", entry, "The provider closed").status_code == 302
    third_case = open_failed_case(third)
    customer_phone(phone, third).send(third_case, REMOTE_ADDR=vpn_address)
    assert last_risk_event(third_case)["signals"]["network"]["listed"] == ""
    assert audit_kinds() == ["risk_list.range_added", "risk_list.range_removed"]


# --- Who may do what -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["agent", "auditor"])
def test_agents_and_auditors_see_the_lists_but_cannot_change_them(role, request, supervisor):
    customer = CustomerFactory()
    proposal = propose_block(
        actor=supervisor,
        kind="phone",
        value=str(customer.phone_number),
        reason="Fraud confirmed",
    )
    vpn = add_network_range(actor=supervisor, value="192.0.2.0/24", label="vpn", reason="VPN")
    block = propose_block(actor=supervisor, kind="device", value=DEVICE_KEY, reason="Ring")
    approve_entry(actor=request.getfixturevalue("other_supervisor"), entry_id=block.pk, reason="Ok")
    propose_removal(actor=supervisor, entry_id=block.pk, reason="Mistake")
    before = (list(ListEntry.objects.values_list("pk", "status")), audit_kinds())

    staff = request.getfixturevalue(role)
    client = staff_client(staff)
    page = client.get(LISTS)
    assert page.status_code == 200
    assert mask_phone_number(str(customer.phone_number)) in page.text
    assert str(customer.phone_number) not in page.text  # no view_pii
    assert "192.0.2.0/24" in page.text
    assert 'name="action"' not in page.text  # no forms to change anything

    for response in (
        propose(client, "device", "f" * 32),
        decide(client, "approve", proposal),
        decide(client, "reject", proposal),
        decide(client, "remove", vpn),
        decide(client, "propose_removal", block),
        decide(client, "approve_removal", block),
        decide(client, "reject_removal", block),
        add_range(client, "203.0.113.0/24"),
    ):
        assert response.status_code == 403
    assert (list(ListEntry.objects.values_list("pk", "status")), audit_kinds()) == before


def test_the_services_refuse_people_without_the_right_whoever_calls_them(
    agent, auditor, supervisor, other_supervisor, phone
):
    proposal = propose_block(actor=supervisor, kind="device", value=DEVICE_KEY, reason="Ring")
    vpn = add_network_range(actor=supervisor, value="192.0.2.0/24", label="vpn", reason="VPN")
    block = propose_block(actor=supervisor, kind="phone", value="13800138000", reason="Ring")
    approve_entry(actor=other_supervisor, entry_id=block.pk, reason="Checked")
    lifting = propose_block(actor=supervisor, kind="device", value="e" * 32, reason="Ring")
    approve_entry(actor=other_supervisor, entry_id=lifting.pk, reason="Checked")
    propose_removal(actor=supervisor, entry_id=lifting.pk, reason="Mistake")
    case, _shared = ring_case(phone)
    before = (list(ListEntry.objects.values_list("pk", "status")), audit_kinds())
    calls = [
        lambda: propose_block(actor=agent, kind="device", value="f" * 32, reason="x"),
        lambda: approve_entry(actor=agent, entry_id=proposal.pk, reason="x"),
        lambda: reject_entry(actor=agent, entry_id=proposal.pk, reason="x"),
        lambda: remove_entry(actor=agent, entry_id=vpn.pk, reason="x"),
        lambda: propose_removal(actor=agent, entry_id=block.pk, reason="x"),
        lambda: approve_removal(actor=agent, entry_id=lifting.pk, reason="x"),
        lambda: reject_removal(actor=agent, entry_id=lifting.pk, reason="x"),
        lambda: add_network_range(actor=agent, value="10.0.0.0/24", label="vpn", reason="x"),
        lambda: record_outcome(actor=auditor, case_id=case.pk, outcome="fraud", note="x"),
    ]
    for call in calls:
        with pytest.raises(NotPermitted):
            call()
    assert (list(ListEntry.objects.values_list("pk", "status")), audit_kinds()) == before
    assert not CaseOutcome.objects.exists()


def test_a_customer_cannot_reach_the_lists(customer):
    client = Client()
    client.force_login(customer)
    response = client.post(LISTS, {"action": "add_range", "range-value": "10.0.0.0/24"})
    assert response.status_code == 302
    assert response["Location"].startswith("/backoffice/login/")
    assert not ListEntry.objects.exists()


# --- Bad input is a form error, never a 500, and changes nothing -------------------------------


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ({"action": "add_range", "range-value": "10.0.0.0/33"}, 400, "Enter a range such as"),
        ({"action": "add_range", "range-value": "not-an-address"}, 400, "Enter a range such as"),
        ({"action": "add_range", "range-value": "10.0.0.0/8 vpn"}, 400, "Enter a range such as"),
        ({"action": "add_range", "range-value": "0.0.0.0/0"}, 400, "0.0.0.0/0 is too wide"),
        ({"action": "add_range", "range-value": "10.0.0.0/15"}, 400, "must be /16 or narrower"),
        ({"action": "add_range", "range-value": "10.0.0.0/8"}, 400, "must be /16 or narrower"),
        ({"action": "add_range", "range-value": "2001:db8::/31"}, 400, "must be /32 or narrower"),
        ({"action": "add_range", "range-value": "0.0.0.0/16"}, 400, "No client connects from"),
        ({"action": "add_range", "range-value": "127.0.0.0/16"}, 400, "No client connects from"),
        ({"action": "add_range", "range-value": "ff02::/32"}, 400, "No client connects from"),
        (
            {"action": "add_range", "range-value": "203.0.113.77/8"},
            400,
            "203.0.113.77/8 is not the first address of its range. Did you mean 203.0.0.0/8?",
        ),
        (
            {"action": "add_range", "range-value": "203.0.113.77/24"},
            400,
            "Did you mean 203.0.113.0/24?",
        ),
        (
            {"action": "add_range", "range-value": "2001:db8::1/64"},
            400,
            "Did you mean 2001:db8::/64?",
        ),
        ({"action": "add_range", "range-value": "10.0.0.0/24\x00"}, 400, "Null characters"),
        (
            {"action": "add_range", "range-value": "::ffff:198.51.100.0/120"},
            400,
            "Write an IPv4 range as IPv4",
        ),
        ({"action": "add_range", "range-label": "tor"}, 400, "Select a valid choice"),
        ({"action": "add_range", "range-reason": ""}, 400, "Say why: it goes on the audit trail."),
        ({"action": "propose", "block-value": "12345"}, 400, "Enter a valid phone number"),
        (
            {"action": "propose", "block-kind": "device", "block-value": "not-a-key"},
            400,
            "A device key is 32 characters",
        ),
        (
            {"action": "propose", "block-kind": "device", "block-value": "g" * 32},
            400,
            "A device key is 32 characters",
        ),
        ({"action": "propose", "block-kind": "network"}, 400, "Select a valid choice"),
        ({"action": "approve", "entry": "abc"}, 400, "Enter a whole number"),
        ({"action": "approve", "entry": str(2**63)}, 400, "less than or equal to"),
        ({"action": "approve", "entry": "987654"}, 404, "There is no such list entry."),
        ({"action": "explode"}, 400, "There is no such action."),
    ],
)
def test_bad_list_input_is_a_clear_error_and_changes_nothing(supervisor, data, status, message):
    defaults = {
        "add_range": {"range-value": "10.0.0.0/24", "range-label": "vpn", "range-reason": "VPN"},
        "propose": {"block-kind": "phone", "block-value": "13800138000", "block-reason": "Fraud"},
        "approve": {"reason": "Checked"},
    }
    client = staff_client(supervisor)
    response = client.post(LISTS, {**defaults.get(data["action"], {}), **data})
    assert response.status_code == status
    assert message in response.text
    assert not ListEntry.objects.exists()
    assert not SystemEvent.objects.exists()


# --- Outcomes -------------------------------------------------------------------------------------


def ring_case(phone):
    """Five fresh accounts on one phone in a day: the fifth one's case goes straight to staff
    (a fraud ring; the second to the fourth are asked for a factor they lack, so staff too)."""
    shared = phone()
    for _number in range(5):
        customer = CustomerFactory()
        case = open_failed_case(customer)
        shared.client.force_login(customer)
        shared.send(case)
    case.refresh_from_db()
    assert (case.state, case.failure_reason, case.risk_level) == (
        CaseState.NEEDS_REVIEW,
        FailureReason.RISK_REVIEW,
        "high",
    )
    assert last_risk_event(case)["decision"] == Decision.REVIEW
    return case, shared


def outcome_url(case) -> str:
    return f"/backoffice/risk/cases/{case.pk}/outcome/"


def case_page(case) -> str:
    return f"/backoffice/activation/activationcase/{case.pk}/change/"


def test_confirmed_fraud_goes_on_the_timeline_and_proposes_blocks_a_second_person_approves(
    agent, supervisor, phone
):
    case, shared = ring_case(phone)
    customer = case.credit_line.customer
    ada = staff_client(agent)
    events = CaseEvent.objects.filter(case=case).count()

    response = ada.post(
        outcome_url(case),
        {
            "outcome": "fraud",
            "note": "Five accounts on one phone",
            "block_device": "on",
            "block_phone": "on",
        },
        follow=True,
    )
    assert response.redirect_chain[-1][0] == case_page(case)
    assert "Outcome recorded." in response.text

    outcome = CaseOutcome.objects.get()
    assert (outcome.case, outcome.outcome, outcome.recorded_by) == (case, "fraud", agent)
    event = CaseEvent.objects.filter(case=case).order_by("-seq").first()
    assert CaseEvent.objects.filter(case=case).count() == events + 1
    assert (event.kind, event.actor_type, event.actor) == ("risk.outcome_recorded", "staff", agent)
    assert event.data["outcome"] == "fraud"
    assert event.data["note"] == "Five accounts on one phone"
    assert {item["list"] for item in event.data["block_proposals"]} == {"device", "phone"}
    assert shared.device_key not in str(event.data)  # identifying values stay off the timeline
    assert find_case_chain_break(case.pk) is None

    entries = {entry.kind: entry for entry in ListEntry.objects.filter(case=case)}
    assert {(e.kind, e.value, e.status, e.proposed_by) for e in entries.values()} == {
        ("device", shared.device_key, ListEntry.Status.PROPOSED, agent),
        ("phone", str(customer.phone_number), ListEntry.Status.PROPOSED, agent),
    }
    assert audit_kinds() == ["risk_list.block_proposed", "risk_list.block_proposed"]

    # The agent may not approve the blocks; a supervisor may.
    assert decide(ada, "approve", entries["device"]).status_code == 403
    assert decide(staff_client(supervisor), "approve", entries["device"]).status_code == 302

    # The ring's phone is now stopped, whoever signs in on it.
    newcomer = CustomerFactory()
    new_case = open_failed_case(newcomer)
    shared.client.force_login(newcomer)
    shared.send(new_case)
    new_case.refresh_from_db()
    assert new_case.state == CaseState.NEEDS_REVIEW
    assert last_risk_event(new_case)["blocked_by"] == "device"


def test_an_outcome_is_recorded_once_and_a_second_one_is_refused(agent, supervisor, phone):
    case, _shared = ring_case(phone)
    staff_client(agent).post(outcome_url(case), {"outcome": "legitimate", "note": "Family phone"})
    events = list(CaseEvent.objects.filter(case=case).values_list("pk", flat=True))

    response = staff_client(supervisor).post(
        outcome_url(case),
        {"outcome": "fraud", "note": "No, fraud", "block_device": "on"},
        follow=True,
    )
    assert "An outcome was already recorded for this case, by agent-ada." in response.text
    assert list(CaseOutcome.objects.values_list("outcome", "recorded_by")) == [
        ("legitimate", agent.pk)
    ]
    assert list(CaseEvent.objects.filter(case=case).values_list("pk", flat=True)) == events
    assert not ListEntry.objects.exists()


def test_an_outcome_needs_a_case_the_checkpoint_flagged(agent):
    case = open_failed_case()
    response = staff_client(agent).post(
        outcome_url(case), {"outcome": "fraud", "note": "Looks odd"}, follow=True
    )
    assert "The risk checkpoint did not flag this case; there is no outcome to record." in (
        response.text
    )
    assert not CaseOutcome.objects.exists()
    assert not CaseEvent.objects.filter(kind="risk.outcome_recorded").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"outcome": "legitimate", "note": "Family phone", "block_phone": "on"},
            "Only confirmed fraud can add to the block lists.",
        ),
        ({"outcome": "fraud", "note": ""}, "Say what you found"),
        ({"outcome": "maybe", "note": "Hmm"}, "Select a valid choice"),
        ({"outcome": "fraud", "note": "x" * 501}, "at most 500 characters"),
        ({"outcome": "fraud", "note": "nul \x00"}, "Null characters"),
    ],
)
def test_bad_outcome_input_is_explained_on_the_case_page_and_changes_nothing(
    agent, phone, data, message
):
    case, _shared = ring_case(phone)
    events = CaseEvent.objects.filter(case=case).count()
    response = staff_client(agent).post(outcome_url(case), data, follow=True)
    assert response.redirect_chain[-1][0] == case_page(case)
    assert message in response.text
    assert not CaseOutcome.objects.exists()
    assert not ListEntry.objects.exists()
    assert CaseEvent.objects.filter(case=case).count() == events


def test_an_auditor_cannot_record_an_outcome(auditor, phone):
    case, _shared = ring_case(phone)
    client = staff_client(auditor)
    assert client.post(outcome_url(case), {"outcome": "fraud", "note": "x"}).status_code == 403
    assert client.get(outcome_url(case))["Location"] == case_page(case)
    assert "risk-outcome" in client.get(case_page(case)).text
    assert 'name="outcome"' not in client.get(case_page(case)).text
    assert not CaseOutcome.objects.exists()


@pytest.mark.parametrize("case_id", ["987654", "99999999999999999999"])
def test_an_outcome_for_a_case_that_does_not_exist_is_a_404(agent, case_id):
    response = staff_client(agent).post(
        f"/backoffice/risk/cases/{case_id}/outcome/", {"outcome": "fraud", "note": "x"}
    )
    assert response.status_code == 404
    assert not CaseOutcome.objects.exists()
