from datetime import timedelta

import pytest
from django.utils import timezone

from activation.models import (
    ActorType,
    CaseEvent,
    CaseState,
    CoreRequest,
    FailureReason,
    OverrideRequest,
)
from activation.services import bulk_recovery as bulk
from activation.services import staff as actions
from activation.services.emergency import set_core_submissions_paused
from activation.timeline import find_case_chain_break
from activation.transitions import transition
from audit.models import SystemEvent
from tests.factories import open_review_case
from verification.models import EmailDevice, Purpose, SMSDevice

from .helpers import submitted_case

pytestmark = pytest.mark.django_db
Kind = OverrideRequest.Kind


@pytest.fixture
def review_case(customer, django_capture_on_commit_callbacks):
    """A verified case the core never answered: staff must look at it."""
    case, request = submitted_case(customer, django_capture_on_commit_callbacks)
    CoreRequest.objects.filter(pk=request.pk).update(status=CoreRequest.Status.FAILED, attempts=8)
    transition(
        case,
        to=CaseState.NEEDS_REVIEW,
        actor_type=ActorType.SYSTEM,
        reason=FailureReason.CORE_UNAVAILABLE,
    )
    return case


def unverified_review_case():
    return open_review_case(reason=FailureReason.TOO_MANY_ATTEMPTS)


def events(case, kind=None):
    queryset = CaseEvent.objects.filter(case=case)
    return queryset.filter(kind=kind) if kind else queryset


# Every write a role might try, and whether it may. Auditors and customers may do none.
ACTIONS = {
    "assign to me": lambda who, case, other: actions.assign_case(
        case_id=case.pk, staff=who, assignee=who, reason="taking it"
    ),
    "add a note": lambda who, case, other: actions.add_note(case_id=case.pk, staff=who, text="hi"),
    "resubmit": lambda who, case, other: actions.resubmit_case(
        case_id=case.pk, staff=who, reason="core is back"
    ),
    "return to customer": lambda who, case, other: actions.return_to_customer(
        case_id=case.pk, staff=who, reason="let them retry"
    ),
    "close": lambda who, case, other: actions.close_case(
        case_id=case.pk, staff=who, reason_code="duplicate", text="opened twice"
    ),
    "request override": lambda who, case, other: actions.request_override(
        case_id=case.pk,
        staff=who,
        kind=Kind.MARK_ACTIVATED,
        reason="core says active",
        core_reference="act_123",
    ),
    "approve override": lambda who, case, other: actions.approve_override(
        override_id=_colleagues_override(case, other), staff=who, reason="confirmed by phone"
    ),
    "reject override": lambda who, case, other: actions.reject_override(
        override_id=_colleagues_override(case, other), staff=who, reason="no proof"
    ),
    "bulk recover": lambda who, case, other: bulk.start_bulk_recovery(
        staff=who,
        since=timezone.now() - timedelta(hours=1),
        until=timezone.now() + timedelta(minutes=1),
        reason="after the outage",
    ),
    "pause core submissions": lambda who, case, other: _operate_switch(who),
}
MAY = {
    "agent": {
        "assign to me",
        "add a note",
        "resubmit",
        "return to customer",
        "close",
        "request override",
    },
    "supervisor": set(ACTIONS),
    "auditor": set(),
    # The risk team tunes the checkpoint; it works no cases.
    "risk_analyst": set(),
    "customer": set(),
}


def _colleagues_override(case, colleague) -> int:
    """An override someone else asked for, for the role under test to decide."""
    return actions.request_override(
        case_id=case.pk,
        staff=colleague,
        kind=Kind.MARK_ACTIVATED,
        reason="r",
        core_reference="act_1",
    ).pk


def _operate_switch(who):
    set_core_submissions_paused(paused=True, actor=who, reason="drill")


@pytest.mark.parametrize("role", list(MAY))
@pytest.mark.parametrize("action", list(ACTIONS))
def test_permission_matrix(role, action, request, review_case, other_supervisor):
    who = request.getfixturevalue(role)
    before_events = events(review_case).count()
    before_system = SystemEvent.objects.count()
    if action in MAY[role]:
        ACTIONS[action](who, review_case, other_supervisor)
        changed = events(review_case).count() > before_events
        assert changed or SystemEvent.objects.count() > before_system
    else:
        with pytest.raises(actions.NotPermitted):
            ACTIONS[action](who, review_case, other_supervisor)
        # Nothing the refused role did stays: an override a colleague asked for may remain.
        refused_by_role = events(review_case).exclude(kind="override.requested")
        assert refused_by_role.count() == before_events
        assert SystemEvent.objects.count() == before_system
    assert find_case_chain_break(review_case.pk) is None


def test_nobody_approves_their_own_override(review_case, supervisor):
    override = actions.request_override(
        case_id=review_case.pk,
        staff=supervisor,
        kind=Kind.MARK_ACTIVATED,
        reason="core confirmed",
        core_reference="act_9",
    )
    with pytest.raises(actions.NotPermitted):
        actions.approve_override(override_id=override.pk, staff=supervisor, reason="self")
    override.refresh_from_db()
    review_case.refresh_from_db()
    assert override.status == OverrideRequest.Status.PENDING
    assert review_case.state == CaseState.NEEDS_REVIEW


def test_an_approval_after_the_case_moved_on_is_refused(review_case, agent, supervisor):
    override = actions.request_override(
        case_id=review_case.pk,
        staff=agent,
        kind=Kind.MARK_ACTIVATED,
        reason="core confirmed",
        core_reference="act_9",
    )
    actions.return_to_customer(case_id=review_case.pk, staff=agent, reason="customer called")
    with pytest.raises(actions.OverrideNotAllowed):
        actions.approve_override(override_id=override.pk, staff=supervisor, reason="ok")
    review_case.refresh_from_db()
    assert review_case.state == CaseState.PENDING_VERIFICATION
    assert OverrideRequest.objects.get().status == OverrideRequest.Status.PENDING


def test_mark_activated_with_four_eyes_names_both_people(review_case, agent, supervisor):
    override = actions.request_override(
        case_id=review_case.pk,
        staff=agent,
        kind=Kind.MARK_ACTIVATED,
        reason="core confirmed by phone",
        core_reference="act_42",
    )
    actions.approve_override(override_id=override.pk, staff=supervisor, reason="checked")
    review_case.refresh_from_db()
    assert review_case.state == CaseState.ACTIVATED
    activated = events(review_case, "state.changed").last()
    assert activated.data["requested_by"] == agent.username
    assert activated.data["approved_by"] == supervisor.username
    assert activated.data["core_reference"] == "act_42"
    assert [e.actor for e in events(review_case).filter(kind__startswith="override.")] == [
        agent,
        supervisor,
    ]


def test_mark_activated_needs_the_cores_reference(review_case, agent):
    with pytest.raises(actions.ReasonRequired):
        actions.request_override(
            case_id=review_case.pk, staff=agent, kind=Kind.MARK_ACTIVATED, reason="r"
        )
    assert not OverrideRequest.objects.exists()


def test_resubmitting_after_no_answer_reuses_the_key(review_case, agent):
    original = CoreRequest.objects.get(case=review_case)
    request = actions.resubmit_case(case_id=review_case.pk, staff=agent, reason="core is back")
    assert request.pk == original.pk
    assert request.idempotency_key == original.idempotency_key
    assert (request.status, request.attempts) == (CoreRequest.Status.PENDING, 0)
    review_case.refresh_from_db()
    assert review_case.state == CaseState.SUBMITTING


def test_an_unverified_case_is_resubmitted_only_with_an_approved_override(agent, supervisor):
    case = unverified_review_case()
    with pytest.raises(actions.OverrideNotAllowed):
        actions.resubmit_case(case_id=case.pk, staff=agent, reason="try again")
    assert not CoreRequest.objects.filter(case=case).exists()

    override = actions.request_override(
        case_id=case.pk, staff=agent, kind=Kind.RESUBMIT_UNVERIFIED, reason="customer in branch"
    )
    actions.approve_override(override_id=override.pk, staff=supervisor, reason="ID checked")
    request = CoreRequest.objects.get(case=case)
    assert request.payload["requested_by"] == "staff"
    # The same shape as a customer's request, timestamps in the contract's UTC "Z" form.
    assert set(request.payload) == {
        "credit_line_ref",
        "customer_ref",
        "requested_by",
        "verification",
    }
    assert request.payload["verification"]["method"] == "staff_override"
    assert request.payload["verification"]["verified_at"].endswith("Z")
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING


def test_returning_to_the_customer_lifts_the_lock_out(agent, settings):
    case = unverified_review_case()
    actions.return_to_customer(case_id=case.pk, staff=agent, reason="customer called us")
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    event = events(case, "state.changed").last()
    assert event.data["lockout_cleared"] is True


def test_returning_to_the_customer_clears_every_activation_channel_but_no_other_purpose(agent):
    case = unverified_review_case()
    customer = case.credit_line.customer
    locked = {"code_failures": 4, "throttling_failure_count": 9, "token": "x" * 64}
    destinations = [
        (SMSDevice, {"phone_number": customer.phone_number}),
        (EmailDevice, {"email": customer.email}),
    ]
    for model, lookup in destinations:
        model.objects.create(user=customer, purpose=Purpose.ACTIVATION, **lookup, **locked)
    reset = SMSDevice.objects.create(
        user=customer, purpose=Purpose.PASSWORD_RESET, phone_number=customer.phone_number, **locked
    )

    actions.return_to_customer(case_id=case.pk, staff=agent, reason="customer called us")

    for model in (SMSDevice, EmailDevice):
        device = model.objects.get(user=customer, purpose=Purpose.ACTIVATION)
        assert (device.token, device.code_failures, device.throttling_failure_count) == (None, 0, 0)
    reset.refresh_from_db()
    assert (reset.token, reset.code_failures) == ("x" * 64, 4)


def test_closing_needs_a_reason_from_the_list_and_words(review_case, agent):
    with pytest.raises(actions.ReasonRequired):
        actions.close_case(case_id=review_case.pk, staff=agent, reason_code="bored", text="x")
    with pytest.raises(actions.ReasonRequired):
        actions.close_case(case_id=review_case.pk, staff=agent, reason_code="duplicate", text=" ")
    actions.close_case(case_id=review_case.pk, staff=agent, reason_code="duplicate", text="twice")
    review_case.refresh_from_db()
    assert review_case.state == CaseState.CLOSED


def test_bulk_recovery_takes_only_core_failures_inside_the_window(
    review_case, supervisor, django_capture_on_commit_callbacks
):
    other = unverified_review_case()  # too_many_attempts: not a core failure
    yesterday = bulk.start_bulk_recovery(
        staff=supervisor,
        since=timezone.now() - timedelta(days=2),
        until=timezone.now() - timedelta(days=1),
        reason="yesterday's outage",
    )
    yesterday = bulk.run_bulk_recovery(job_id=yesterday.pk)
    assert (yesterday.status, yesterday.total, yesterday.resubmitted) == ("done", 0, 0)
    today = bulk.start_bulk_recovery(
        staff=supervisor,
        since=timezone.now() - timedelta(hours=1),
        until=timezone.now() + timedelta(minutes=1),
        reason="today's outage",
    )
    today = bulk.run_bulk_recovery(job_id=today.pk)
    assert (today.status, today.total, today.resubmitted, today.skipped) == ("done", 1, 1, 0)
    review_case.refresh_from_db()
    other.refresh_from_db()
    assert review_case.state == CaseState.SUBMITTING
    assert other.state == CaseState.NEEDS_REVIEW
    assert SystemEvent.objects.filter(kind="cases.bulk_recovery_started").count() == 2
    assert SystemEvent.objects.filter(kind="cases.bulk_recovered").count() == 2


def test_a_bulk_recovery_in_small_batches_covers_the_window_leaving_out_closed_cases(
    supervisor, agent, django_capture_on_commit_callbacks
):
    cases = [open_review_case(reason=FailureReason.CORE_UNAVAILABLE) for _ in range(5)]
    job = bulk.start_bulk_recovery(
        staff=supervisor,
        since=timezone.now() - timedelta(hours=1),
        until=timezone.now() + timedelta(minutes=1),
        reason="after the outage",
    )
    # Staff close one case before the job reaches it.
    actions.close_case(case_id=cases[3].pk, staff=agent, reason_code="duplicate", text="twice")
    with django_capture_on_commit_callbacks(execute=False) as deliveries:
        job = bulk.run_bulk_recovery(job_id=job.pk, batch_size=2)
    assert (job.status, job.total, job.processed) == ("done", 4, 4)
    assert (job.resubmitted, job.skipped) == (4, 0)
    assert len(deliveries) == 4  # one delivery per resubmitted case, after its batch commits
    for case in cases:
        case.refresh_from_db()
    assert [case.state for case in cases] == [
        CaseState.SUBMITTING,
        CaseState.SUBMITTING,
        CaseState.SUBMITTING,
        CaseState.CLOSED,
        CaseState.SUBMITTING,
    ]
    # A job that is over does nothing when its message arrives again.
    again = bulk.run_bulk_recovery(job_id=job.pk)
    assert again.resubmitted == 4
    assert CoreRequest.objects.count() == 4


def test_a_superuser_without_a_role_works_no_cases(review_case):
    from tests.factories import StaffFactory

    superuser = StaffFactory(is_superuser=True)
    with pytest.raises(actions.NotPermitted):
        actions.add_note(case_id=review_case.pk, staff=superuser, text="I can do anything?")
    assert not events(review_case, "note.added").exists()


def test_create_staff_user_enrols_totp_and_records_it(capsys):
    from django.core.management import call_command

    from accounts.models import User

    call_command("create_staff_user", "new.agent", "--role", "agent")
    out = capsys.readouterr().out
    user = User.objects.get(username="new.agent")
    assert user.is_staff and not user.is_superuser
    assert list(user.groups.values_list("name", flat=True)) == ["agent"]
    assert "otpauth://totp/" in out
    assert "█" in out  # the QR code, drawn in the terminal
    password = out.split("Initial password: ")[1].split()[0]
    assert user.check_password(password)
    event = SystemEvent.objects.get(kind="staff.created")
    assert event.data == {"username": "new.agent", "role": "agent", "user_id": user.pk}
