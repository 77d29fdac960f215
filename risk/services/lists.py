"""The lists staff keep: blocked devices and phone numbers, and VPN, proxy and hosting ranges.

A block makes the checkpoint refuse a device or a number outright (``Signals.listed``),
so it takes two people: one proposes it, another with ``manage_risk_lists`` approves it. Lifting
it takes two as well: one proposes the lifting, and the block keeps applying (it stays active)
until another person with the right carries it out; otherwise one insider could free a
confirmed-fraud device for an accomplice.

A network range only adds score (a VPN alone never stops anyone), so ranges change at once, by
one person; but a range wider than a /16 (IPv4) or a /32 (IPv6) would add score for a whole
carrier, so it is refused. Every change is on the system audit trail with who, what and why.
"""

import ipaddress
import re
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.backends import parse_phone_number
from accounts.models import User
from accounts.roles import can
from activation.models import ActivationCase
from audit.services import record_system_event
from portal.errors import DomainError, NotPermitted, ReasonRequired

from ..models import ListEntry
from ..network import NETWORK_LABELS, forget_staff_ranges, parse_range_line

PERMISSION = "manage_risk_lists"
BLOCK_KINDS = (ListEntry.Kind.DEVICE, ListEntry.Kind.PHONE)
# The device id the signed cookie carries (``risk.middleware``): 16 random bytes in hex.
DEVICE_KEY = re.compile(r"[0-9a-f]{32}")
# How a dual-stack socket writes IPv4 clients; the checkpoint compares them as IPv4.
IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
# One person adds a range, so it stays narrow: a /16 holds 65,536 IPv4 addresses (a /32, a
# provider's IPv6 allocation), and anything wider would add score for a whole carrier's customers.
WIDEST_PREFIX = {4: 16, 6: 32}
VALUE_MAX_LENGTH = ListEntry._meta.get_field("value").max_length
REASON_MAX_LENGTH = ListEntry._meta.get_field("reason").max_length


class InvalidListValue(DomainError):
    code = "invalid_list_value"


class DuplicateListEntry(DomainError):
    code = "duplicate_list_entry"
    http_status = 409


class ListEntryNotFound(DomainError):
    code = "list_entry_not_found"
    http_status = 404


class ListEntryDecided(DomainError):
    """The entry is not in the state the action needs (already approved, rejected, removed)."""

    code = "list_entry_decided"
    http_status = 409


class SecondPersonRequired(NotPermitted):
    code = "second_person_required"


def clean_block_value(kind: str, value: str) -> str:
    """A device key or a phone number (as E.164) as the checkpoint compares it, or refuse it."""
    value = (value or "").strip()
    if kind == ListEntry.Kind.DEVICE:
        value = value.lower()
        if not DEVICE_KEY.fullmatch(value):
            raise InvalidListValue(
                _("A device key is 32 characters, digits and the letters a to f.")
            )
        return value
    if kind == ListEntry.Kind.PHONE:
        phone = parse_phone_number(value) if len(value) <= 32 else None
        if phone is None:
            raise InvalidListValue(
                _("Enter a valid phone number, such as 138 0013 8000 or +86 138 0013 8000.")
            )
        return phone
    raise InvalidListValue(_("Only devices and phone numbers can be blocked."))


THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def _no_client_comes_from(network) -> bool:
    if network.version == 4 and network.subnet_of(THIS_NETWORK):
        return True
    return (
        network.is_loopback
        or network.is_multicast
        or network.is_reserved
        or (network.is_unspecified)
    )


def clean_network_range(value: str) -> str:
    """A range in CIDR notation, written the one way the lists compare it, or refuse it."""
    value = (value or "").strip()
    parsed = None
    if (
        value
        and len(value) <= VALUE_MAX_LENGTH
        and not any(ch.isspace() or ch == "#" for ch in value)
    ):
        parsed = parse_range_line(value)
    if parsed is None:
        raise InvalidListValue(_("Enter a range such as 203.0.113.0/24 or 2001:db8::/32."))
    network, _label = parsed
    # The file's parser forgives host bits; here they are refused, since 203.0.113.77/8 would
    # silently become 203.0.0.0/8, a range nobody meant to list. (The value parsed leniently,
    # so host bits are the only thing the strict parser can object to.)
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        raise InvalidListValue(
            _("%(value)s is not the first address of its range. Did you mean %(range)s?")
            % {"value": value, "range": network}
        ) from error
    if network.version == 6 and network.subnet_of(IPV4_MAPPED):
        raise InvalidListValue(_("Write an IPv4 range as IPv4, such as 203.0.113.0/24."))
    if _no_client_comes_from(network):
        raise InvalidListValue(
            _("No client connects from %(range)s (a loopback, multicast or reserved range).")
            % {"range": network}
        )
    widest = WIDEST_PREFIX[network.version]
    if network.prefixlen < widest:
        raise InvalidListValue(
            _("%(range)s is too wide: an IPv%(version)s range must be /%(widest)s or narrower.")
            % {"range": network, "version": network.version, "widest": widest}
        )
    return str(network)


def _require(actor: User) -> None:
    if not can(actor, PERMISSION):
        raise NotPermitted(
            _("You are not allowed to change the risk lists."), permission=PERMISSION
        )


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired(_("Say why: it goes on the audit trail."))
    # PostgreSQL cannot store a NUL character in text; the forms refuse it too.
    if len(reason) > REASON_MAX_LENGTH or "\x00" in reason:
        raise InvalidListValue(
            _("Keep the reason to %(limit)s characters of plain text.")
            % {"limit": REASON_MAX_LENGTH}
        )
    return reason


def _audit(kind: str, actor: User, entry: ListEntry, ip: str | None, **data: Any) -> None:
    record_system_event(
        kind=kind,
        actor=actor,
        ip=ip,
        data={
            "entry": entry.pk,
            "list": entry.kind,
            "value": entry.value,
            "label": entry.label,
            "case": entry.case_id,
            **data,
        },
    )


def _create(**fields: Any) -> ListEntry:
    kind, value = fields["kind"], fields["value"]
    duplicate = DuplicateListEntry(
        _("%(value)s is already on the list, active or waiting for a second person.")
        % {"value": value},
        kind=kind,
    )
    if ListEntry.objects.filter(
        kind=kind,
        value=value,
        status__in=[ListEntry.Status.PROPOSED, ListEntry.Status.ACTIVE],
    ).exists():
        raise duplicate
    try:
        # A savepoint: two people adding the same value at once meet the partial unique
        # constraint, and the loser's transaction must stay usable to report it.
        with transaction.atomic():
            return ListEntry.objects.create(**fields)
    except IntegrityError as error:
        raise duplicate from error


def propose_block_entry(
    *,
    actor: User,
    kind: str,
    value: str,
    reason: str,
    case: ActivationCase | None = None,
    ip: str | None = None,
) -> ListEntry:
    """Propose a block without checking the actor's role; callers check it (lists or outcome).

    Runs in the caller's transaction.
    """
    entry = _create(
        kind=kind,
        value=clean_block_value(kind, value),
        reason=_require_reason(reason),
        status=ListEntry.Status.PROPOSED,
        case=case,
        proposed_by=actor,
    )
    _audit("risk_list.block_proposed", actor, entry, ip, reason=entry.reason)
    return entry


@transaction.atomic
def propose_block(
    *,
    actor: User,
    kind: str,
    value: str,
    reason: str,
    case: ActivationCase | None = None,
    ip: str | None = None,
) -> ListEntry:
    """Propose blocking a device or phone number; it takes effect once another person approves."""
    _require(actor)
    return propose_block_entry(actor=actor, kind=kind, value=value, reason=reason, case=case, ip=ip)


def _lock_entry(entry_id: int) -> ListEntry:
    # The row lock makes two people deciding the same entry at once take turns; the second
    # then finds it decided.
    entry = ListEntry.objects.select_for_update().filter(pk=entry_id).first()
    if entry is None:
        raise ListEntryNotFound(_("There is no such list entry."))
    return entry


def _lock_proposal(entry_id: int) -> ListEntry:
    entry = _lock_entry(entry_id)
    if entry.status != ListEntry.Status.PROPOSED:
        raise ListEntryDecided(
            _("This entry was already decided: it is %(status)s.")
            % {"status": entry.get_status_display().lower()}
        )
    return entry


def _decide(entry: ListEntry, actor: User, status: str) -> None:
    entry.status = status
    entry.decided_by = actor
    entry.decided_at = timezone.now()
    entry.save(update_fields=["status", "decided_by", "decided_at"])


@transaction.atomic
def approve_entry(*, actor: User, entry_id: int, reason: str, ip: str | None = None) -> ListEntry:
    """A second person approves a proposed block, which then applies from the next request."""
    _require(actor)
    reason = _require_reason(reason)
    entry = _lock_proposal(entry_id)
    if entry.proposed_by_id == actor.pk:
        raise SecondPersonRequired(_("You proposed this block; another person must approve it."))
    _decide(entry, actor, ListEntry.Status.ACTIVE)
    _audit(
        "risk_list.block_approved",
        actor,
        entry,
        ip,
        reason=reason,
        proposed_by=entry.proposed_by_id,
    )
    return entry


@transaction.atomic
def reject_entry(*, actor: User, entry_id: int, reason: str, ip: str | None = None) -> ListEntry:
    """Turn a proposed block down (the proposer may withdraw their own: nothing gets blocked)."""
    _require(actor)
    reason = _require_reason(reason)
    entry = _lock_proposal(entry_id)
    _decide(entry, actor, ListEntry.Status.REJECTED)
    _audit(
        "risk_list.block_rejected",
        actor,
        entry,
        ip,
        reason=reason,
        proposed_by=entry.proposed_by_id,
    )
    return entry


def _lock_active_block(entry_id: int) -> ListEntry:
    entry = _lock_entry(entry_id)
    if entry.kind not in BLOCK_KINDS:
        raise ListEntryDecided(_("A network range is removed at once; there is nothing to lift."))
    if entry.status != ListEntry.Status.ACTIVE:
        raise ListEntryDecided(
            _("Only an active block can be lifted; this one is %(status)s.")
            % {"status": entry.get_status_display().lower()}
        )
    return entry


def _removal_data(entry: ListEntry) -> dict[str, Any]:
    return {
        "removal_proposed_by": entry.removal_proposed_by_id,
        "removal_reason": entry.removal_reason,
        "approved_by": entry.decided_by_id,
    }


@transaction.atomic
def propose_removal(*, actor: User, entry_id: int, reason: str, ip: str | None = None) -> ListEntry:
    """Propose lifting an active block; it keeps applying until another person carries it out."""
    _require(actor)
    reason = _require_reason(reason)
    entry = _lock_active_block(entry_id)
    if entry.removal_proposed_by_id is not None:
        raise ListEntryDecided(
            _("Lifting this block was already proposed; it waits for a second person.")
        )
    entry.removal_proposed_by = actor
    entry.removal_proposed_at = timezone.now()
    entry.removal_reason = reason
    entry.save(update_fields=["removal_proposed_by", "removal_proposed_at", "removal_reason"])
    _audit("risk_list.block_removal_proposed", actor, entry, ip, reason=reason)
    return entry


def _lock_proposed_removal(entry_id: int) -> ListEntry:
    entry = _lock_active_block(entry_id)
    if entry.removal_proposed_by_id is None:
        raise ListEntryDecided(_("Nobody proposed lifting this block."))
    return entry


@transaction.atomic
def approve_removal(*, actor: User, entry_id: int, reason: str, ip: str | None = None) -> ListEntry:
    """Lift a block another person proposed lifting; it no longer applies from the next request."""
    _require(actor)
    reason = _require_reason(reason)
    entry = _lock_proposed_removal(entry_id)
    if entry.removal_proposed_by_id == actor.pk:
        raise SecondPersonRequired(
            _("You proposed lifting this block; another person must carry it out.")
        )
    entry.status = ListEntry.Status.REMOVED
    entry.removed_by = actor
    entry.removed_at = timezone.now()
    entry.save(update_fields=["status", "removed_by", "removed_at"])
    _audit("risk_list.block_removed", actor, entry, ip, reason=reason, **_removal_data(entry))
    return entry


@transaction.atomic
def reject_removal(*, actor: User, entry_id: int, reason: str, ip: str | None = None) -> ListEntry:
    """Turn down lifting a block (the proposer may withdraw it): the block stays as it was."""
    _require(actor)
    reason = _require_reason(reason)
    entry = _lock_proposed_removal(entry_id)
    data = _removal_data(entry)
    entry.removal_proposed_by = None
    entry.removal_proposed_at = None
    entry.removal_reason = ""
    entry.save(update_fields=["removal_proposed_by", "removal_proposed_at", "removal_reason"])
    _audit("risk_list.block_removal_rejected", actor, entry, ip, reason=reason, **data)
    return entry


@transaction.atomic
def remove_entry(*, actor: User, entry_id: int, reason: str, ip: str | None = None) -> ListEntry:
    """Remove a network range at once; a block is lifted by two people (``propose_removal``)."""
    _require(actor)
    reason = _require_reason(reason)
    entry = _lock_entry(entry_id)
    if entry.kind in BLOCK_KINDS:
        raise SecondPersonRequired(
            _("A block is lifted by two people: propose lifting it, and another person approves.")
        )
    if entry.status != ListEntry.Status.ACTIVE:
        raise ListEntryDecided(
            _("Only an active entry can be removed; this one is %(status)s.")
            % {"status": entry.get_status_display().lower()}
        )
    entry.status = ListEntry.Status.REMOVED
    entry.removed_by = actor
    entry.removed_at = timezone.now()
    entry.save(update_fields=["status", "removed_by", "removed_at"])
    transaction.on_commit(forget_staff_ranges)
    _audit("risk_list.range_removed", actor, entry, ip, reason=reason)
    return entry


@transaction.atomic
def add_network_range(
    *, actor: User, value: str, label: str, reason: str, ip: str | None = None
) -> ListEntry:
    """List a range as VPN, proxy or hosting; the checkpoint reads it from the next request.

    This process forgets its copy of the ranges on commit; other processes re-read theirs
    within ``risk.network.STAFF_RANGES_TTL`` seconds.
    """
    _require(actor)
    if label not in NETWORK_LABELS:
        raise InvalidListValue(
            _("The label must be one of %(labels)s.") % {"labels": ", ".join(NETWORK_LABELS)}
        )
    now = timezone.now()
    entry = _create(
        kind=ListEntry.Kind.NETWORK,
        value=clean_network_range(value),
        label=label,
        reason=_require_reason(reason),
        status=ListEntry.Status.ACTIVE,
        proposed_by=actor,
        decided_by=actor,
        created_at=now,
        decided_at=now,
    )
    transaction.on_commit(forget_staff_ranges)
    _audit("risk_list.range_added", actor, entry, ip, reason=entry.reason)
    return entry
