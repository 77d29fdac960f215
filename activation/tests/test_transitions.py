import itertools

import pytest

from activation.models import ActivationCase, ActorType, CaseEvent, CaseState
from activation.timeline import find_case_chain_break
from activation.transitions import ALLOWED_TRANSITIONS, TransitionNotAllowed, is_allowed, transition
from tests.factories import open_failed_case

pytestmark = pytest.mark.django_db

S = CaseState
ALL_PAIRS = list(itertools.product(S.values, S.values))
OPEN = [s for s in S.values if s not in (S.ACTIVATED, S.CLOSED)]


def case_in(state: str) -> ActivationCase:
    case = open_failed_case()
    # Set up the starting state directly: the transition under test is the only one we exercise.
    ActivationCase.objects.filter(pk=case.pk).update(state=state)
    case.refresh_from_db()
    return case


def expected_allowed(current: str, target: str, actor_type: str) -> bool:
    table = {
        (S.PENDING_VERIFICATION, S.SUBMITTING),
        (S.PENDING_VERIFICATION, S.FAILED),
        (S.PENDING_VERIFICATION, S.NEEDS_REVIEW),  # a risk hold (the fraud checkpoint)
        (S.FAILED, S.PENDING_VERIFICATION),
        (S.FAILED, S.NEEDS_REVIEW),
        (S.SUBMITTING, S.ACTIVATED),
        (S.SUBMITTING, S.AWAITING_CONFIRMATION),
        (S.SUBMITTING, S.NEEDS_REVIEW),
        (S.AWAITING_CONFIRMATION, S.ACTIVATED),
        (S.AWAITING_CONFIRMATION, S.NEEDS_REVIEW),
        (S.NEEDS_REVIEW, S.PENDING_VERIFICATION),
        (S.NEEDS_REVIEW, S.SUBMITTING),
        (S.NEEDS_REVIEW, S.ACTIVATED),
        (S.NEEDS_REVIEW, S.CLOSED),
    }
    core_reports_active = target == S.ACTIVATED and current in OPEN and actor_type == "core"
    return (current, target) in table or core_reports_active


def test_the_table_in_code_is_the_table_in_the_design():
    for current, target in ALL_PAIRS:
        for actor_type in ActorType.values:
            assert is_allowed(current, target, actor_type=actor_type) == expected_allowed(
                current, target, actor_type
            ), (current, target, actor_type)
    assert ALLOWED_TRANSITIONS[S.ACTIVATED] == ALLOWED_TRANSITIONS[S.CLOSED] == frozenset()


ALLOWED = [
    (current, target, actor)
    for current, target in ALL_PAIRS
    for actor in (ActorType.STAFF, ActorType.CORE)
    if expected_allowed(current, target, actor)
]
DISALLOWED = [
    (current, target)
    for current, target in ALL_PAIRS
    if not expected_allowed(current, target, "core")
]


@pytest.mark.parametrize(("current", "target", "actor_type"), ALLOWED)
def test_an_allowed_transition_changes_state_and_writes_exactly_one_event(
    current, target, actor_type
):
    case = case_in(current)
    before = CaseEvent.objects.filter(case=case).count()

    event = transition(case, to=target, actor_type=actor_type, reason="core_rejected")

    case.refresh_from_db()
    assert case.state == target
    assert CaseEvent.objects.filter(case=case).count() == before + 1
    assert (event.kind, event.state_before, event.state_after) == ("state.changed", current, target)
    assert find_case_chain_break(case.pk) is None


@pytest.mark.parametrize(("current", "target"), DISALLOWED)
def test_a_disallowed_transition_raises_and_writes_nothing(current, target):
    case = case_in(current)
    events_before = list(CaseEvent.objects.filter(case=case).values_list("pk", flat=True))

    with pytest.raises(TransitionNotAllowed) as raised:
        transition(case, to=target, actor_type=ActorType.CORE, reason="core_rejected")

    assert raised.value.details == {"current": current, "target": target}
    assert ActivationCase.objects.get(pk=case.pk).state == current
    assert list(CaseEvent.objects.filter(case=case).values_list("pk", flat=True)) == events_before


def test_only_the_core_may_activate_a_case_straight_from_failed():
    case = case_in(S.FAILED)
    with pytest.raises(TransitionNotAllowed):
        transition(case, to=S.ACTIVATED, actor_type=ActorType.STAFF)
    transition(case, to=S.ACTIVATED, actor_type=ActorType.CORE)
    case.refresh_from_db()
    assert case.state == S.ACTIVATED
    assert case.closed_at is not None


def test_failing_without_a_reason_is_refused():
    case = case_in(S.PENDING_VERIFICATION)
    with pytest.raises(ValueError, match="reason"):
        transition(case, to=S.FAILED, actor_type=ActorType.CUSTOMER)
    assert ActivationCase.objects.get(pk=case.pk).state == S.PENDING_VERIFICATION


def test_leaving_a_failure_state_clears_the_reason():
    case = case_in(S.FAILED)
    transition(case, to=S.PENDING_VERIFICATION, actor_type=ActorType.CUSTOMER)
    case.refresh_from_db()
    assert (case.failure_reason, case.failure_detail) == ("", "")
