"""Reads of the staff-kept lists, for the lists page and the case page's risk panel."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import F, QuerySet
from django.db.models.functions import Coalesce

from accounts.masking import mask_phone_number

from ..models import ListEntry
from ..signals import pseudonym

# Each section of the lists page shows at most this many rows (and says how many there are).
SECTION_ROWS = 200
# Rejected and removed entries shown as recent history.
HISTORY_ROWS = 20


def shown_value(kind: str, value: str, *, pii: bool) -> str:
    """A list entry's value as staff may see it.

    Without ``view_pii``, a phone number is masked and a device key becomes the same keyed hash
    the timeline records for it, so staff can still match an entry to a case's device.
    """
    if pii or kind == ListEntry.Kind.NETWORK:
        return value
    if kind == ListEntry.Kind.PHONE:
        return mask_phone_number(value)
    return f"#{pseudonym(value)}"


@dataclass(frozen=True)
class EntryRow:
    pk: int
    kind: str
    kind_label: str
    status: str
    status_label: str
    value: str  # as shown (see ``shown_value``)
    label: str
    reason: str
    case_id: int | None
    proposed_by: str
    proposed_by_id: int
    decided_by: str
    decided_by_id: int | None
    created_at: datetime
    decided_at: datetime | None
    # Lifting a block: who proposed it (it waits for a second person) and who carried it out.
    removal_proposed_by: str
    removal_proposed_by_id: int | None
    removal_proposed_at: datetime | None
    removal_reason: str
    removed_by: str
    removed_at: datetime | None


def _username(user) -> str:
    return user.get_username() if user else ""


def entry_rows(entries: QuerySet[ListEntry], *, pii: bool) -> list[EntryRow]:
    """``entries`` as shown; the queryset must select the people (see ``list_entries``)."""
    return [
        EntryRow(
            pk=entry.pk,
            kind=entry.kind,
            kind_label=entry.get_kind_display(),
            status=entry.status,
            status_label=entry.get_status_display(),
            value=shown_value(entry.kind, entry.value, pii=pii),
            label=entry.label,
            reason=entry.reason,
            case_id=entry.case_id,
            proposed_by=entry.proposed_by.get_username(),
            proposed_by_id=entry.proposed_by_id,
            decided_by=_username(entry.decided_by),
            decided_by_id=entry.decided_by_id,
            created_at=entry.created_at,
            decided_at=entry.decided_at,
            removal_proposed_by=_username(entry.removal_proposed_by),
            removal_proposed_by_id=entry.removal_proposed_by_id,
            removal_proposed_at=entry.removal_proposed_at,
            removal_reason=entry.removal_reason,
            removed_by=_username(entry.removed_by),
            removed_at=entry.removed_at,
        )
        for entry in entries
    ]


def list_entries() -> QuerySet[ListEntry]:
    return ListEntry.objects.select_related(
        "proposed_by", "decided_by", "removal_proposed_by", "removed_by"
    )


@dataclass(frozen=True)
class Section:
    rows: list[EntryRow]
    total: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.rows)


@dataclass(frozen=True)
class ListsPage:
    proposals: Section  # blocks waiting for a second person
    blocks: Section  # active blocked devices and numbers (some perhaps proposed for lifting)
    ranges: Section  # active network ranges
    history: Section  # recently rejected or removed entries


def _section(entries: QuerySet[ListEntry], rows: int, *, pii: bool) -> Section:
    return Section(rows=entry_rows(entries[:rows], pii=pii), total=entries.count())


def lists_page(*, pii: bool) -> ListsPage:
    """The lists page: every section bounded, newest first."""
    entries = list_entries()
    blocks = entries.filter(kind__in=[ListEntry.Kind.DEVICE, ListEntry.Kind.PHONE])
    return ListsPage(
        proposals=_section(
            blocks.filter(status=ListEntry.Status.PROPOSED).order_by("-created_at", "-pk"),
            SECTION_ROWS,
            pii=pii,
        ),
        blocks=_section(
            blocks.filter(status=ListEntry.Status.ACTIVE).order_by("-decided_at", "-pk"),
            SECTION_ROWS,
            pii=pii,
        ),
        ranges=_section(
            entries.filter(kind=ListEntry.Kind.NETWORK, status=ListEntry.Status.ACTIVE).order_by(
                "value"
            ),
            SECTION_ROWS,
            pii=pii,
        ),
        history=_section(
            entries.filter(status__in=[ListEntry.Status.REJECTED, ListEntry.Status.REMOVED])
            .annotate(closed_at=Coalesce("removed_at", "decided_at"))
            .order_by(F("closed_at").desc(nulls_last=True), "-pk"),
            HISTORY_ROWS,
            pii=pii,
        ),
    )
