"""Rule sets in the back office: drafts, four-eyes publication, shadow runs, the rules page."""

import contextlib
import json
import re
import threading

import pytest
from django.db import connection, connections, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from activation.models import CaseEvent, CaseState
from activation.tests.test_backoffice import current_code, sign_in
from audit.models import SystemEvent
from portal.errors import NotPermitted
from risk.models import CaseOutcome, Evaluation, FiredRule, Rule, RuleSetVersion
from risk.selectors import rules as selectors
from risk.services import rulesets
from tests.factories import StaffFactory, open_failed_case

from .conftest import established_customer

pytestmark = pytest.mark.django_db

V = RuleSetVersion.Status
RULES = "/backoffice/risk/rules/"


@pytest.fixture
def analyst(db):
    return StaffFactory(username="risk-ria", role="risk_analyst")


@pytest.fixture
def other_analyst(db):
    return StaffFactory(username="risk-rob", role="risk_analyst")


def staff_client(user) -> Client:
    """A browser of ``user``, signed in to the back office with password and app code."""
    client = Client()
    response = sign_in(client, user, current_code(user), follow=False)
    assert response.status_code == 302
    return client


def version_url(version: RuleSetVersion) -> str:
    return f"{RULES}{version.pk}/"


def act(client: Client, version: RuleSetVersion, action: str, **data):
    return client.post(f"{RULES}{version.pk}/{action}/", data)


def live_version() -> RuleSetVersion:
    return RuleSetVersion.objects.get(status=V.LIVE)


def edit_data(rules, *, step_up_at=40, review_at=90, note="") -> dict:
    """The draft form as a browser posts it; ``rules`` are (kind, params, score[, enabled])."""
    data = {
        "step_up_at": step_up_at,
        "review_at": review_at,
        "note": note,
        "rules-TOTAL_FORMS": len(rules),
        "rules-INITIAL_FORMS": 0,
        "rules-MIN_NUM_FORMS": 0,
        "rules-MAX_NUM_FORMS": 1000,
    }
    for index, (kind, params, score, *enabled) in enumerate(rules):
        data[f"rules-{index}-kind"] = kind
        data[f"rules-{index}-params"] = params if isinstance(params, str) else json.dumps(params)
        data[f"rules-{index}-score"] = score
        if not enabled or enabled[0]:
            data[f"rules-{index}-enabled"] = "on"
    return data


def rules_of(version: RuleSetVersion) -> list[tuple]:
    return list(version.rules.order_by("pk").values_list("kind", "params", "score", "enabled"))


def trail() -> list[tuple[str, str]]:
    """The rule-set events on the system audit trail, (kind, actor), oldest first."""
    events = SystemEvent.objects.filter(kind__startswith="rule_set.").order_by("seq")
    return [(event.kind, event.actor.username if event.actor else "") for event in events]


def draft_through_page(client: Client, *, rules=None, **thresholds) -> RuleSetVersion:
    """Start a draft from the live version on the rules page, then save ``rules`` into it."""
    response = act(client, live_version(), "new_draft")
    draft = RuleSetVersion.objects.get(status=V.DRAFT)
    assert response.status_code == 302
    assert response["Location"] == reverse("backoffice:risk-rule-set", args=[draft.pk])
    if rules is not None:
        saved = client.post(version_url(draft), edit_data(rules, **thresholds))
        assert saved.status_code == 302, saved.text
    return draft


SMALL_RULES = [
    ("new_device", {}, 40),
    ("phone_changed_new_device", {"days": 7}, 50),
    ("network_listed", {"labels": ["vpn"]}, 15),
]


# --- Four eyes ----------------------------------------------------------------------------------


def test_a_published_rule_set_needs_two_people(supervisor, analyst):
    proposer, publisher = staff_client(supervisor), staff_client(analyst)
    old_live = live_version()
    old_rules = rules_of(old_live)

    draft = draft_through_page(proposer, rules=SMALL_RULES, note="Shorter SIM-swap window")
    assert act(proposer, draft, "propose").status_code == 302
    draft.refresh_from_db()
    assert (draft.status, draft.proposed_by) == (V.PROPOSED, supervisor)

    # The proposer's own publish is refused and changes nothing.
    refused = act(proposer, draft, "publish")
    assert refused.status_code == 403
    draft.refresh_from_db()
    old_live.refresh_from_db()
    assert (draft.status, old_live.status) == (V.PROPOSED, V.LIVE)
    assert not SystemEvent.objects.filter(kind="rule_set.published").exists()

    published = act(publisher, draft, "publish")
    assert published.status_code == 302
    draft.refresh_from_db()
    old_live.refresh_from_db()
    assert draft.status == V.LIVE
    assert draft.published_by == analyst and draft.published_at is not None
    assert old_live.status == V.RETIRED
    assert rules_of(old_live) == old_rules
    assert RuleSetVersion.objects.filter(status=V.LIVE).count() == 1
    assert [(kind, params, score) for kind, params, score, _on in rules_of(draft)] == SMALL_RULES

    assert trail() == [
        ("rule_set.draft_started", supervisor.username),
        ("rule_set.draft_changed", supervisor.username),
        ("rule_set.proposed", supervisor.username),
        ("rule_set.published", analyst.username),
    ]
    event = SystemEvent.objects.get(kind="rule_set.published")
    assert event.data["retired"] == old_live.number
    assert event.data["proposed_by"] == supervisor.username
    assert [rule["kind"] for rule in event.data["rules"]] == [kind for kind, *_ in SMALL_RULES]


def test_someone_who_changed_the_draft_cannot_publish_it_either(
    supervisor, analyst, other_supervisor
):
    starter, editor, reviewer = (
        staff_client(supervisor),
        staff_client(analyst),
        staff_client(other_supervisor),
    )
    draft = draft_through_page(starter)
    assert editor.post(version_url(draft), edit_data(SMALL_RULES)).status_code == 302
    assert act(starter, draft, "propose").status_code == 302

    assert act(editor, draft, "publish").status_code == 403
    draft.refresh_from_db()
    assert draft.status == V.PROPOSED

    assert act(reviewer, draft, "publish").status_code == 302
    draft.refresh_from_db()
    assert (draft.status, draft.published_by) == (V.LIVE, other_supervisor)


def test_the_creator_of_a_draft_cannot_publish_what_someone_else_proposed(supervisor, analyst):
    draft = rulesets.start_draft(actor=supervisor)
    rulesets.propose(actor=analyst, version_id=draft.pk)
    with pytest.raises(NotPermitted):
        rulesets.publish(actor=supervisor, version_id=draft.pk)
    draft.refresh_from_db()
    assert draft.status == V.PROPOSED


def test_a_second_person_rejects_a_proposal_back_to_draft_with_a_reason(supervisor, analyst):
    proposer, reviewer = staff_client(supervisor), staff_client(analyst)
    draft = draft_through_page(proposer, rules=SMALL_RULES)
    act(proposer, draft, "propose")

    assert act(proposer, draft, "reject", reason="mine").status_code == 403
    no_reason = reviewer.post(f"{RULES}{draft.pk}/reject/", {"reason": ""}, follow=True)
    assert "Say why" in no_reason.text
    draft.refresh_from_db()
    assert draft.status == V.PROPOSED

    act(reviewer, draft, "reject", reason="The VPN score is too high")
    draft.refresh_from_db()
    assert (draft.status, draft.proposed_by) == (V.DRAFT, None)
    event = SystemEvent.objects.get(kind="rule_set.rejected")
    assert (event.actor, event.data["reason"]) == (analyst, "The VPN score is too high")
    # Back to a draft, it can be changed again.
    assert proposer.post(version_url(draft), edit_data(SMALL_RULES[:1])).status_code == 302
    assert len(rules_of(draft)) == 1

    act(proposer, draft, "propose")
    act(reviewer, draft, "retire", reason="Not needed after all")
    draft.refresh_from_db()
    assert draft.status == V.RETIRED


# --- Who may do what ------------------------------------------------------------------------------


def test_an_agent_sees_the_rules_but_cannot_edit_or_publish(agent, supervisor):
    proposal = rulesets.start_draft(actor=supervisor)
    rulesets.propose(actor=supervisor, version_id=proposal.pk)
    draft = rulesets.start_draft(actor=supervisor)
    before = (
        list(RuleSetVersion.objects.order_by("pk").values_list("pk", "status")),
        rules_of(draft),
        SystemEvent.objects.count(),
    )
    browser = staff_client(agent)

    page = browser.get(RULES)
    assert page.status_code == 200
    assert "New draft from the live version" not in page.text
    version_page = browser.get(version_url(draft))
    assert version_page.status_code == 200
    assert "Save the draft" not in version_page.text
    assert "Publish (make live)" not in browser.get(version_url(proposal)).text

    assert act(browser, live_version(), "new_draft").status_code == 403
    assert browser.post(version_url(draft), edit_data(SMALL_RULES)).status_code == 403
    for action in ("propose", "shadow"):
        assert act(browser, draft, action).status_code == 403
    for action in ("publish", "reject", "retire"):
        assert act(browser, proposal, action, reason="because").status_code == 403
    assert (
        list(RuleSetVersion.objects.order_by("pk").values_list("pk", "status")),
        rules_of(draft),
        SystemEvent.objects.count(),
    ) == before

    # The services refuse too, whatever page calls them.
    with pytest.raises(NotPermitted):
        rulesets.publish(actor=agent, version_id=proposal.pk)
    with pytest.raises(NotPermitted):
        rulesets.update_draft(
            actor=agent, version_id=draft.pk, step_up_at=40, review_at=90, note="", rules=[]
        )


def test_staff_without_a_role_that_sees_risk_get_403(client):
    nobody = StaffFactory(username="no-role")
    browser = staff_client(nobody)
    assert browser.get(RULES).status_code == 403
    assert browser.get(version_url(live_version())).status_code == 403


def test_the_pages_need_the_second_factor(client, supervisor):
    client.force_login(supervisor)  # password alone
    response = client.get(RULES)
    assert response.status_code == 302
    assert response["Location"].startswith("/backoffice/login/")


# --- Validation -----------------------------------------------------------------------------------

NETWORK_ALONE = [("network_listed", {"labels": ["vpn"]}, 25), ("address_changed", {}, 15)]


@pytest.mark.parametrize(
    ("rules", "thresholds", "message"),
    [
        ([("phone_changed_new_device", {"days": 0}, 40)], {}, "between 1 and 365"),
        ([("phone_changed_new_device", {"days": 7, "hours": 2}, 40)], {}, "Unknown parameters"),
        ([("phone_changed_new_device", {}, 40)], {}, "is missing"),
        ([("run_this_code", {}, 40)], {}, "Select a valid choice"),
        ([("new_device", "{not json", 40)], {}, "Write the parameters as a JSON object"),
        ([("new_device", "[1, 2]", 40)], {}, "must be a JSON object"),
        ([("new_device", "[" * 1000 + "]" * 1000, 40)], {}, "Write the parameters as a JSON"),
        ([("new_device", {}, "forty")], {}, "Enter a whole number"),
        ([("new_device", {}, -5)], {}, "greater than or equal to 0"),
        ([("new_device", "x" * 5000, 40)], {}, "at most 2000 characters"),
        (NETWORK_ALONE, {"step_up_at": 40}, "Network rules together score 40"),
        (SMALL_RULES, {"step_up_at": 95, "review_at": 90}, "not above the review score"),
        (SMALL_RULES, {"step_up_at": "abc"}, "Enter a whole number"),
    ],
)
def test_invalid_rules_are_a_form_error_and_change_nothing(supervisor, rules, thresholds, message):
    browser = staff_client(supervisor)
    draft = draft_through_page(browser)
    before = (rules_of(draft), SystemEvent.objects.count())

    response = browser.post(version_url(draft), edit_data(rules, **thresholds))

    assert response.status_code == 400
    assert message in response.text
    assert (rules_of(draft), SystemEvent.objects.count()) == before


def test_more_forms_than_a_rule_set_holds_is_a_form_error(supervisor):
    browser = staff_client(supervisor)
    draft = draft_through_page(browser)
    data = edit_data([("new_device", {}, 10)] * 101)
    data["rules-TOTAL_FORMS"] = 1_000_000
    response = browser.post(version_url(draft), data)
    assert response.status_code == 400
    assert "Please submit at most 100 forms" in response.text
    missing = browser.post(version_url(draft), {"step_up_at": 40, "review_at": 90})
    assert missing.status_code == 400
    huge = browser.post(version_url(draft), {**edit_data(SMALL_RULES), "note": "x" * 3_000_000})
    assert huge.status_code == 400
    assert len(rules_of(draft)) == len(rules_of(live_version()))


def test_the_draft_form_removes_and_adds_rules(supervisor):
    browser = staff_client(supervisor)
    draft = draft_through_page(browser)
    page = browser.get(version_url(draft))
    assert page.status_code == 200
    # The form shows every parameter a kind needs, with an example.
    assert "more_than" in page.text and "a whole number from 1 to 365" in page.text

    data = edit_data([*SMALL_RULES, ("young_account", {"days": 30}, 20, False)])
    data["rules-1-DELETE"] = "on"
    assert browser.post(version_url(draft), data).status_code == 302
    assert rules_of(draft) == [
        ("new_device", {}, 40, True),
        ("network_listed", {"labels": ["vpn"]}, 15, True),
        ("young_account", {"days": 30}, 20, False),
    ]


def test_a_running_version_cannot_be_edited(supervisor):
    browser = staff_client(supervisor)
    live = live_version()
    before = rules_of(live)

    response = browser.post(version_url(live), edit_data(SMALL_RULES))
    assert response.status_code == 409
    assert "Only a draft can be changed" in response.text
    assert rules_of(live) == before
    with pytest.raises(rulesets.RuleSetNotAllowed):
        rulesets.update_draft(
            actor=supervisor, version_id=live.pk, step_up_at=40, review_at=90, note="", rules=[]
        )

    shadow = draft_through_page(browser, rules=SMALL_RULES)
    act(browser, shadow, "shadow")
    assert browser.post(version_url(shadow), edit_data([])).status_code == 409
    # Stopped, a shadow that was never proposed is retired: it ran, so it never edits again.
    act(browser, shadow, "stop_shadow")
    shadow.refresh_from_db()
    assert shadow.status == V.RETIRED
    assert browser.post(version_url(shadow), edit_data([])).status_code == 409
    assert len(rules_of(shadow)) == len(SMALL_RULES)


def test_a_proposal_is_frozen(supervisor):
    browser = staff_client(supervisor)
    draft = draft_through_page(browser, rules=SMALL_RULES)
    act(browser, draft, "propose")
    assert browser.post(version_url(draft), edit_data([])).status_code == 409
    assert len(rules_of(draft)) == len(SMALL_RULES)


def test_only_get_and_post_and_only_with_the_csrf_token(supervisor):
    browser = staff_client(supervisor)
    draft = draft_through_page(browser)
    assert browser.put(version_url(draft)).status_code == 405
    assert browser.delete(RULES).status_code == 405
    assert browser.post(RULES).status_code == 405
    assert browser.get(f"{RULES}{draft.pk}/propose/").status_code == 302
    assert browser.post(f"{RULES}{draft.pk}/drop_table/").status_code == 404
    assert browser.get(f"{RULES}999999/").status_code == 404
    assert browser.get(f"{RULES}{10**30}/").status_code == 404
    assert browser.post(f"{RULES}{10**30}/publish/").status_code == 404

    browser.handler.enforce_csrf_checks = True
    assert act(browser, draft, "propose").status_code == 403
    assert browser.post(version_url(draft), edit_data(SMALL_RULES)).status_code == 403
    draft.refresh_from_db()
    assert draft.status == V.DRAFT


# --- Shadow -------------------------------------------------------------------------------------


def test_one_person_runs_a_shadow_that_records_beside_the_live_decision(supervisor):
    staff = staff_client(supervisor)
    # The live rules plus one that would send every account younger than a year to review.
    live_rules = [(kind, params, score) for kind, params, score, _on in rules_of(live_version())]
    shadow = draft_through_page(staff, rules=[*live_rules, ("young_account", {"days": 365}, 90)])

    assert act(staff, shadow, "shadow").status_code == 302
    shadow.refresh_from_db()
    assert shadow.status == V.SHADOW and shadow.published_at is not None
    assert trail()[-1] == ("rule_set.shadow_started", supervisor.username)

    customer = established_customer()  # half a year old: the live week-old rule stays quiet
    case = open_failed_case(customer)
    phone = Client()
    phone.force_login(customer)
    sent = phone.post(
        reverse("activation:retry", args=[case.pk]), {"action": "send", "channel": "sms"}
    )
    assert sent.status_code == 302

    evaluation = Evaluation.objects.get(case=case)
    assert (evaluation.decision, evaluation.shadow_decision) == ("allow", "review")
    assert evaluation.version == live_version() and evaluation.shadow_version == shadow
    young = shadow.rules.get(kind="young_account", params={"days": 365})
    assert list(FiredRule.objects.values_list("rule", "shadow")) == [(young.pk, True)]
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert case.risk_level == "low"
    recorded = CaseEvent.objects.get(case=case, kind="risk.evaluated").data
    assert recorded["decision"] == "allow"
    assert recorded["shadow"]["decision"] == "review"

    page = staff.get(RULES)
    assert "would have decided differently in 1" in page.text


def test_a_new_shadow_stops_the_earlier_one(supervisor):
    browser = staff_client(supervisor)
    first = draft_through_page(browser, rules=SMALL_RULES)
    act(browser, first, "shadow")
    second = draft_through_page(browser, rules=SMALL_RULES[:1])
    act(browser, second, "shadow")
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (V.RETIRED, V.SHADOW)
    assert RuleSetVersion.objects.filter(status=V.SHADOW).count() == 1


def test_a_proposal_in_shadow_keeps_waiting_and_is_published_by_a_second_person(
    supervisor, analyst
):
    proposer, publisher = staff_client(supervisor), staff_client(analyst)
    draft = draft_through_page(proposer, rules=SMALL_RULES)
    act(proposer, draft, "propose")
    act(proposer, draft, "shadow")
    draft.refresh_from_db()
    assert (draft.status, draft.proposed_by) == (V.SHADOW, supervisor)

    act(proposer, draft, "stop_shadow")
    draft.refresh_from_db()
    assert draft.status == V.PROPOSED
    act(proposer, draft, "shadow")

    assert act(proposer, draft, "publish").status_code == 403
    old_live = live_version()
    assert act(publisher, draft, "publish").status_code == 302
    draft.refresh_from_db()
    old_live.refresh_from_db()
    assert (draft.status, old_live.status) == (V.LIVE, V.RETIRED)
    assert not RuleSetVersion.objects.filter(status=V.SHADOW).exists()


def test_a_proposal_that_ran_in_shadow_is_retired_when_rejected(supervisor, analyst):
    proposal = rulesets.start_draft(actor=supervisor)
    rulesets.propose(actor=supervisor, version_id=proposal.pk)
    rulesets.start_shadow(actor=supervisor, version_id=proposal.pk)
    rulesets.stop_shadow(actor=supervisor, version_id=proposal.pk)
    rulesets.reject(actor=analyst, version_id=proposal.pk, reason="Too many false alarms")
    proposal.refresh_from_db()
    assert proposal.status == V.RETIRED


def test_a_draft_must_be_proposed_before_it_is_published(supervisor, analyst):
    draft = rulesets.start_draft(actor=supervisor)
    with pytest.raises(rulesets.RuleSetNotAllowed):
        rulesets.publish(actor=analyst, version_id=draft.pk)
    rulesets.start_shadow(actor=supervisor, version_id=draft.pk)
    with pytest.raises(rulesets.RuleSetNotAllowed):
        rulesets.publish(actor=analyst, version_id=draft.pk)
    rulesets.propose(actor=supervisor, version_id=draft.pk)
    rulesets.publish(actor=analyst, version_id=draft.pk)
    draft.refresh_from_db()
    assert draft.status == V.LIVE


# --- Statistics -----------------------------------------------------------------------------------


def _evaluate(customer, case, fired=(), shadow_fired=(), *, decision="allow", shadow=None, seen=""):
    """An evaluation with the rules that fired, live and in shadow (``seen``: shadow decision)."""
    evaluation = Evaluation.objects.create(
        moment="code_submit",
        customer=customer,
        case=case,
        version=live_version(),
        decision=decision,
        shadow_version=shadow,
        shadow_decision=seen,
    )
    FiredRule.objects.bulk_create(
        [FiredRule(evaluation=evaluation, rule=rule, score=rule.score) for rule in fired]
        + [
            FiredRule(evaluation=evaluation, rule=rule, score=rule.score, shadow=True)
            for rule in shadow_fired
        ]
    )


def cell(html: str, rule: Rule, name: str) -> int:
    row = re.search(rf'<tr id="rule-{rule.pk}".*?</tr>', html, re.S).group(0)
    return int(re.search(rf'<td class="{name}">(\d+)</td>', row).group(1))


def test_statistics_count_firings_and_staff_outcomes(supervisor, agent, customer, other_customer):
    first, second = live_version().rules.order_by("pk")[:2]
    shadow = rulesets.start_draft(actor=supervisor)
    rulesets.start_shadow(actor=supervisor, version_id=shadow.pk)
    shadowed = shadow.rules.order_by("pk").first()
    fraud, legitimate, undecided = (
        open_failed_case(customer),
        open_failed_case(other_customer),
        open_failed_case(other_customer),
    )
    _evaluate(customer, fraud, [first], [shadowed], shadow=shadow, decision="review", seen="review")
    both = [first, second]
    _evaluate(customer, fraud, both, [shadowed], shadow=shadow, decision="review", seen="step_up")
    _evaluate(other_customer, legitimate, [first], shadow=shadow, decision="step_up", seen="allow")
    _evaluate(other_customer, undecided, [first], shadow=shadow, seen="allow")
    _evaluate(customer, None, [second], shadow=shadow, seen="allow")  # a sign-in: no case
    for case, outcome in ((fraud, "fraud"), (legitimate, "legitimate")):
        CaseOutcome.objects.create(case=case, outcome=outcome, recorded_by=agent)

    stats = selectors.rule_stats([live_version().pk, shadow.pk])
    assert stats[first.pk] == selectors.RuleStats(
        fired_live=4, cases_live=3, fraud_live=1, legitimate_live=1
    )
    assert stats[second.pk] == selectors.RuleStats(fired_live=2, cases_live=1, fraud_live=1)
    assert stats[shadowed.pk] == selectors.RuleStats(fired_shadow=2, cases_shadow=1, fraud_shadow=1)

    comparison = selectors.shadow_comparison(shadow.pk)
    assert (comparison.total, comparison.differing) == (5, 2)
    assert {(row.live, row.shadow): row.count for row in comparison.rows} == {
        ("review", "review"): 1,
        ("review", "step_up"): 1,
        ("step_up", "allow"): 1,
        ("allow", "allow"): 2,
    }

    page = staff_client(agent).get(RULES).text
    assert [cell(page, first, name) for name in ("fired-live", "cases-live")] == [4, 3]
    assert [cell(page, first, name) for name in ("fraud-live", "legitimate-live")] == [1, 1]
    assert [cell(page, shadowed, name) for name in ("fired-shadow", "fraud-shadow")] == [2, 1]
    assert "would have decided differently in 2" in page


def test_the_statistics_cost_the_same_queries_however_many_rules(supervisor, agent, customer):
    browser = staff_client(agent)
    browser.get(RULES)  # warm the session and the permission caches

    def page_queries() -> int:
        """The page's queries of the checkpoint's tables (sign-in and session ones vary)."""
        with CaptureQueriesContext(connection) as queries:
            assert browser.get(RULES).status_code == 200
        return sum('"risk_' in query["sql"] for query in queries.captured_queries)

    few = page_queries()
    shadow = rulesets.start_draft(actor=supervisor)
    rulesets.update_draft(
        actor=supervisor,
        version_id=shadow.pk,
        step_up_at=40,
        review_at=90,
        note="",
        rules=[("young_account", {"days": days}, 5, True) for days in range(1, 60)],
    )
    rulesets.start_shadow(actor=supervisor, version_id=shadow.pk)
    case = open_failed_case(customer)
    live_rules = list(live_version().rules.all())
    for rule in shadow.rules.all():
        _evaluate(customer, case, live_rules, [rule], shadow=shadow, seen="allow")
    many = page_queries()
    running = [live_version().pk, shadow.pk]
    with CaptureQueriesContext(connection) as queries:
        selectors.rule_rows(running)
    assert len(queries) == 2
    # The shadow adds its comparison: one query, not one per rule.
    assert many == few + 1


# --- Navigation -----------------------------------------------------------------------------------


def test_the_rules_page_is_in_the_back_office_navigation(agent):
    browser = staff_client(agent)
    page = browser.get(RULES)
    assert 'href="/backoffice/risk/rulesetversion/"' in page.text
    response = browser.get("/backoffice/risk/rulesetversion/")
    assert (response.status_code, response["Location"]) == (302, RULES)


def test_the_rules_pages_render_in_chinese(agent):
    browser = staff_client(agent)
    draft = rulesets.start_draft(actor=StaffFactory(role="supervisor"))
    for url in (RULES, version_url(draft), version_url(live_version())):
        response = browser.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans")
        assert response.status_code == 200
        assert 'lang="zh-hans"' in response.text


# --- Concurrency ----------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_publishes_at_once_leave_exactly_one_live_version(
    supervisor, analyst, other_analyst, monkeypatch
):
    first = rulesets.start_draft(actor=supervisor)
    second = rulesets.start_draft(actor=supervisor)
    for proposal in (first, second):
        rulesets.propose(actor=supervisor, version_id=proposal.pk)
    old_live = live_version()
    start, both_checked = threading.Barrier(2), threading.Barrier(2)
    errors: list[BaseException] = []
    check = rulesets._check_rule_set

    def check_then_wait_for_the_other(version, rules=None):
        # Hold each publish after its checks until the other has made them too, so that both
        # read the same live version; with the lock, the second waits for the first instead
        # and this wait times out.
        check(version, rules)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_checked.wait(timeout=1)

    monkeypatch.setattr(rulesets, "_check_rule_set", check_then_wait_for_the_other)

    def publish(actor, version) -> None:
        try:
            start.wait(timeout=5)
            with transaction.atomic():
                rulesets.publish(actor=actor, version_id=version.pk)
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=publish, args=(analyst, first)),
        threading.Thread(target=publish, args=(other_analyst, second)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert connection.vendor == "postgresql"
    assert errors == []
    statuses = dict(
        RuleSetVersion.objects.filter(pk__in=[old_live.pk, first.pk, second.pk]).values_list(
            "pk", "status"
        )
    )
    assert statuses[old_live.pk] == V.RETIRED
    assert sorted([statuses[first.pk], statuses[second.pk]]) == [V.LIVE, V.RETIRED]
    assert SystemEvent.objects.filter(kind="rule_set.published").count() == 2
