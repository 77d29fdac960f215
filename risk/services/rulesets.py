"""Rule set versions: edited as drafts, proposed, published by a second person, or run in shadow.

Every change is one transaction with its event on the system audit trail. A version that has
run (live or in shadow) never changes its rules again: the evaluations and fired rules recorded
against it must keep meaning what they meant, and the checkpoint caches a running version's
rules by (id, ``published_at``). Changing a running rule set means starting a new draft.
"""

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from accounts.roles import can
from audit.models import SystemEvent
from audit.services import record_system_event
from portal.errors import DomainError, NotPermitted, ReasonRequired

from ..models import Rule, RuleSetVersion
from ..rules import clean_params, validate_rule_set

V = RuleSetVersion.Status

# Thresholds of a first draft when there is no version to copy from.
DEFAULT_STEP_UP_AT = 40
DEFAULT_REVIEW_AT = 90
# A rule set is read on every evaluation; keep it a size a person can review.
MAX_RULES = 100
MAX_SCORE = 10_000

# The life of a version. A version that has run (``published_at`` set) never becomes a draft.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    V.DRAFT: frozenset({V.PROPOSED, V.SHADOW}),
    V.PROPOSED: frozenset({V.LIVE, V.SHADOW, V.DRAFT, V.RETIRED}),
    V.SHADOW: frozenset({V.LIVE, V.PROPOSED, V.RETIRED}),
    V.LIVE: frozenset({V.RETIRED}),
    V.RETIRED: frozenset(),
}

# One rule as the page and the services pass it: (kind, params, score, enabled).
RuleSpec = tuple[str, dict[str, Any], int, bool]


class RuleSetNotFound(DomainError):
    code = "rule_set_not_found"
    http_status = 404


class RuleSetNotAllowed(DomainError):
    """The version is not in a state that allows this (a running version is never edited)."""

    code = "rule_set_not_allowed"
    http_status = 409


def _require(actor: User, permission: str) -> None:
    if not can(actor, permission):
        raise NotPermitted(_("You are not allowed to change rule sets."))


def _lock_versions() -> None:
    # Every status change takes all version rows, in one order: two publishes (or a publish and
    # a shadow start) at once would otherwise each retire the live version they read and leave
    # two live ones (which the one_live_rule_set constraint would refuse with a server error).
    list(RuleSetVersion.objects.select_for_update().order_by("pk").values_list("pk", flat=True))


def _get(version_id: int, *, lock: bool = False) -> RuleSetVersion:
    versions = RuleSetVersion.objects.select_for_update() if lock else RuleSetVersion.objects
    try:
        return versions.get(pk=version_id)
    except (RuleSetVersion.DoesNotExist, ValueError, TypeError):
        raise RuleSetNotFound(_("There is no such rule set version.")) from None


def _move(version: RuleSetVersion, to: str, **fields: Any) -> None:
    """Change a locked version's status, or raise and change nothing."""
    allowed = to in ALLOWED_TRANSITIONS[version.status]
    if to == V.DRAFT and version.published_at is not None:
        allowed = False  # it has run: its rules stay as they ran
    if not allowed:
        raise RuleSetNotAllowed(
            _("A version that is %(current)s cannot become %(target)s.")
            % {"current": version.get_status_display(), "target": V(to).label},
            current=version.status,
            target=to,
        )
    version.status = to
    for name, value in fields.items():
        setattr(version, name, value)
    version.save(update_fields=["status", *fields])


def _rules_data(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    return [
        {"kind": rule.kind, "params": rule.params, "score": rule.score, "enabled": rule.enabled}
        for rule in rules
    ]


def _event_data(version: RuleSetVersion, **extra: Any) -> dict[str, Any]:
    return {"version_id": version.pk, "version": version.number, **extra}


def _check_rule_set(version: RuleSetVersion, rules: list[Rule] | None = None) -> None:
    """Refuse to run or propose a set the rules module would refuse to save."""
    rules = list(version.rules.all()) if rules is None else rules
    validate_rule_set(
        [(rule.kind, rule.params, rule.score) for rule in rules if rule.enabled],
        step_up_at=version.step_up_at,
        review_at=version.review_at,
    )


def clean_rules(rules: Iterable[RuleSpec]) -> list[Rule]:
    """Unsaved rules from (kind, params, score, enabled), each checked by its kind."""
    cleaned: list[Rule] = []
    for position, (kind, params, score, enabled) in enumerate(rules, start=1):
        if position > MAX_RULES:
            raise ValidationError(
                _("A rule set holds at most %(count)s rules."), params={"count": MAX_RULES}
            )
        if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= MAX_SCORE:
            raise ValidationError(
                _("Rule %(position)s: the score must be a whole number from 0 to %(max)s."),
                params={"position": position, "max": MAX_SCORE},
            )
        try:
            params = clean_params(kind, params)
        except ValidationError as error:
            raise ValidationError(
                _("Rule %(position)s: %(problem)s"),
                params={"position": position, "problem": " ".join(error.messages)},
            ) from error
        cleaned.append(Rule(kind=kind, params=params, score=score, enabled=bool(enabled)))
    return cleaned


@transaction.atomic
def start_draft(
    *, actor: User, from_version: int | None = None, ip: str | None = None
) -> RuleSetVersion:
    """Start a new draft (the next number) with the rules and thresholds of ``from_version``
    (the live version by default)."""
    _require(actor, "edit_rules")
    if from_version is not None:
        source = _get(from_version)
    else:
        source = RuleSetVersion.objects.filter(status=V.LIVE).first()
    # Two drafts started at once would otherwise both take the next number.
    _lock_versions()
    number = (RuleSetVersion.objects.aggregate(top=Max("number"))["top"] or 0) + 1
    try:
        # A savepoint: on an empty table there is no row to lock, and a number taken at the same
        # moment is then a clear answer instead of a server error.
        with transaction.atomic():
            draft = RuleSetVersion.objects.create(
                number=number,
                status=V.DRAFT,
                step_up_at=source.step_up_at if source else DEFAULT_STEP_UP_AT,
                review_at=source.review_at if source else DEFAULT_REVIEW_AT,
                created_by=actor,
            )
    except IntegrityError:
        raise RuleSetNotAllowed(
            _("Someone started a draft at the same moment; try again.")
        ) from None
    copied = list(source.rules.order_by("pk")) if source else []
    Rule.objects.bulk_create(
        [
            Rule(
                version=draft,
                kind=rule.kind,
                params=rule.params,
                score=rule.score,
                enabled=rule.enabled,
            )
            for rule in copied
        ]
    )
    record_system_event(
        kind="rule_set.draft_started",
        actor=actor,
        ip=ip,
        data=_event_data(draft, copied_from=source.number if source else None),
    )
    return draft


@transaction.atomic
def update_draft(
    *,
    actor: User,
    version_id: int,
    step_up_at: int,
    review_at: int,
    note: str,
    rules: Iterable[RuleSpec],
    ip: str | None = None,
) -> RuleSetVersion:
    """Replace a draft's thresholds, note and rules; the whole set is checked before saving."""
    _require(actor, "edit_rules")
    # Locked, so that a propose or shadow start cannot slip in between the check and the save.
    version = _get(version_id, lock=True)
    if version.status != V.DRAFT:
        raise RuleSetNotAllowed(
            _("Only a draft can be changed; start a new draft from this version.")
        )
    for value in (step_up_at, review_at):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SCORE:
            raise ValidationError(
                _("The thresholds must be whole numbers from 1 to %(max)s."),
                params={"max": MAX_SCORE},
            )
    note = (note or "").strip()
    if len(note) > 500:
        raise ValidationError(_("The note is longer than 500 characters."))
    cleaned = clean_rules(rules)
    version.step_up_at, version.review_at, version.note = step_up_at, review_at, note
    _check_rule_set(version, cleaned)
    version.save(update_fields=["step_up_at", "review_at", "note"])
    # A draft never ran, so no evaluation refers to its rules: they are replaced whole.
    version.rules.all().delete()
    for rule in cleaned:
        rule.version = version
    Rule.objects.bulk_create(cleaned)
    record_system_event(
        kind="rule_set.draft_changed",
        actor=actor,
        ip=ip,
        data=_event_data(
            version,
            step_up_at=step_up_at,
            review_at=review_at,
            note=note,
            rules=_rules_data(cleaned),
        ),
    )
    return version


@transaction.atomic
def propose(*, actor: User, version_id: int, ip: str | None = None) -> RuleSetVersion:
    """Freeze a draft (or a shadow not yet proposed) and ask a second person to publish it."""
    _require(actor, "edit_rules")
    _lock_versions()
    version = _get(version_id)
    if version.status == V.SHADOW and version.proposed_by_id is None:
        # It keeps running in shadow while it waits for the second person.
        version.proposed_by = actor
        version.save(update_fields=["proposed_by"])
    else:
        if version.status != V.DRAFT:
            raise RuleSetNotAllowed(_("Only a draft can be proposed."))
        _check_rule_set(version)
        _move(version, V.PROPOSED, proposed_by=actor)
    record_system_event(kind="rule_set.proposed", actor=actor, ip=ip, data=_event_data(version))
    return version


def _authors(version: RuleSetVersion) -> set[int]:
    """Everyone who wrote this version: who started it, changed it, and proposed it."""
    editors = SystemEvent.objects.filter(
        kind="rule_set.draft_changed", data__version_id=version.pk, actor__isnull=False
    ).values_list("actor_id", flat=True)
    return {version.created_by_id, version.proposed_by_id, *editors} - {None}


@transaction.atomic
def publish(*, actor: User, version_id: int, ip: str | None = None) -> RuleSetVersion:
    """A second person puts a proposed version live; the live one before it is retired."""
    _require(actor, "publish_rules")
    _lock_versions()
    version = _get(version_id)
    if version.proposed_by_id is None or version.status not in (V.PROPOSED, V.SHADOW):
        raise RuleSetNotAllowed(_("Only a proposed version can be published."))
    if actor.pk in _authors(version):
        raise NotPermitted(
            _("You wrote or proposed this version; a second person must publish it.")
        )
    _check_rule_set(version)
    previous = RuleSetVersion.objects.filter(status=V.LIVE).first()
    if previous is not None:
        _move(previous, V.RETIRED)
    was_shadow = version.status == V.SHADOW
    _move(version, V.LIVE, published_by=actor, published_at=timezone.now())
    record_system_event(
        kind="rule_set.published",
        actor=actor,
        ip=ip,
        data=_event_data(
            version,
            proposed_by=version.proposed_by.get_username(),
            retired=previous.number if previous else None,
            was_shadow=was_shadow,
            step_up_at=version.step_up_at,
            review_at=version.review_at,
            rules=_rules_data(version.rules.order_by("pk")),
        ),
    )
    return version


@transaction.atomic
def reject(
    *, actor: User, version_id: int, reason: str, retire: bool = False, ip: str | None = None
) -> RuleSetVersion:
    """A second person turns a proposal down: back to a draft to change, or retired.

    A proposal that has run in shadow cannot become a draft again; it is retired.
    """
    _require(actor, "publish_rules")
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired(_("Say why: it goes on the audit trail."))
    _lock_versions()
    version = _get(version_id)
    if version.status != V.PROPOSED:
        raise RuleSetNotAllowed(_("Only a version waiting for a second person can be rejected."))
    if version.proposed_by_id == actor.pk:
        raise NotPermitted(_("You cannot decide on your own proposal."))
    proposed_by = version.proposed_by.get_username()
    if retire or version.published_at is not None:
        _move(version, V.RETIRED)
    else:
        _move(version, V.DRAFT, proposed_by=None)
    record_system_event(
        kind="rule_set.rejected",
        actor=actor,
        ip=ip,
        data=_event_data(version, reason=reason, proposed_by=proposed_by, status=version.status),
    )
    return version


def _leave_shadow(version: RuleSetVersion) -> None:
    # A proposal goes on waiting for its second person; anything else has had its run.
    _move(version, V.PROPOSED if version.proposed_by_id else V.RETIRED)


@transaction.atomic
def start_shadow(*, actor: User, version_id: int, ip: str | None = None) -> RuleSetVersion:
    """Run a draft or a proposal in shadow: recorded beside the live decision, deciding nothing.

    One person may do this: a shadow changes no customer's outcome. An earlier shadow stops.
    """
    _require(actor, "edit_rules")
    _lock_versions()
    version = _get(version_id)
    if version.status not in (V.DRAFT, V.PROPOSED):
        raise RuleSetNotAllowed(_("Only a draft or a proposal can run in shadow."))
    _check_rule_set(version)
    earlier = RuleSetVersion.objects.filter(status=V.SHADOW).first()
    if earlier is not None:
        _leave_shadow(earlier)
    # From here on its rules are frozen: the checkpoint caches them by (id, published_at).
    _move(version, V.SHADOW, published_at=timezone.now())
    record_system_event(
        kind="rule_set.shadow_started",
        actor=actor,
        ip=ip,
        data=_event_data(version, stopped=earlier.number if earlier else None),
    )
    return version


@transaction.atomic
def stop_shadow(*, actor: User, version_id: int, ip: str | None = None) -> RuleSetVersion:
    """Stop a shadow run; a proposal goes back to waiting, a draft is retired."""
    _require(actor, "edit_rules")
    _lock_versions()
    version = _get(version_id)
    if version.status != V.SHADOW:
        raise RuleSetNotAllowed(_("This version is not running in shadow."))
    _leave_shadow(version)
    record_system_event(
        kind="rule_set.shadow_stopped",
        actor=actor,
        ip=ip,
        data=_event_data(version, status=version.status),
    )
    return version
