"""Exports started through the staff API: the record first, the streamed file on download.

The file and its manifest are the back office's (``activation.exports``): the same rows, the same
masking without view_pii, the same ``export.created`` event on the audit trail when the last
byte is out.
"""

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from accounts.roles import can
from activation.exports import ExportFilters, new_manifest, stream_export
from activation.models import CaseExport


def start_export(*, staff: User, filters: ExportFilters, fmt: str) -> CaseExport:
    """Record an export to be downloaded; whether it holds PII follows the person's role.

    Without an end, it ends when it was started: every download of it then holds the same
    events (the trail only grows), so a download repeated after a lost connection gives the
    same bytes and the same manifest.
    """
    if filters.until is None:
        filters = replace(filters, until=timezone.now())
    return CaseExport.objects.create(
        format=fmt, filters=filters.as_json(), pii=can(staff, "view_pii"), created_by=staff
    )


def exports_of(staff: User) -> QuerySet[CaseExport]:
    """Exports ``staff`` started: only they download them, as the audit trail names them."""
    return CaseExport.objects.filter(created_by=staff)


def stored_filters(record: CaseExport) -> ExportFilters:
    data = record.filters or {}

    def moment(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    return ExportFilters(
        since=moment(data.get("since")),
        until=moment(data.get("until")),
        states=tuple(data.get("states") or ()),
        reasons=tuple(data.get("reasons") or ()),
    )


def export_bytes(*, record: CaseExport, staff: User, fmt: str) -> Iterator[bytes]:
    """Stream the export's file; when it is complete, keep its manifest beside the record."""
    filters = stored_filters(record)
    manifest = new_manifest(filters=filters, fmt=fmt, actor=staff, pii=record.pii)

    def keep(manifest) -> None:
        CaseExport.objects.filter(pk=record.pk).update(
            format=fmt, manifest=json.loads(manifest.to_json()), completed_at=timezone.now()
        )

    return stream_export(
        filters=filters, fmt=fmt, actor=staff, pii=record.pii, manifest=manifest, on_complete=keep
    )
