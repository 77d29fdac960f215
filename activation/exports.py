"""Case-history exports for auditors: streamed, hashed, and checkable against the database later.

An export is one row per timeline event. It streams (rows are read with a server-side cursor
and written as they come), and it produces a manifest: the filters, who and when, the row count,
the SHA-256 of the exported bytes, and each case's chain head (its last exported event's seq and
hash). Verifying a file against its manifest catches any changed byte; verifying the manifest's
chain heads against the database catches a chain rewritten or shortened since the export.
"""

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.masking import mask_ip_address, mask_name, mask_phone_number
from accounts.models import User
from audit.chain import canonical_timestamp
from audit.services import record_system_event
from portal.db import stream

from .models import CaseEvent
from .pii import device_label, event_data
from .timeline import find_case_chain_break

FORMATS = ("csv", "jsonl", "xlsx")
COLUMNS = (
    "case_id",
    "seq",
    "credit_line",
    "customer_reference",
    "customer_name",
    "customer_phone",
    "actor_type",
    "actor",
    "created_at",
    "kind",
    "state_before",
    "state_after",
    "data",
    "ip_address",
    "device_id",
    "prev_hash",
    "hash",
)
_SOURCE = (
    "case_id",
    "seq",
    "case__credit_line__reference",
    "case__credit_line__customer__customer_reference",
    "case__credit_line__customer__first_name",
    "case__credit_line__customer__last_name",
    "case__credit_line__customer__phone_number",
    "actor_type",
    "actor__username",
    "actor__is_staff",
    "created_at",
    "kind",
    "state_before",
    "state_after",
    "data",
    "ip_address",
    "device_id",
    "prev_hash",
    "hash",
)


@dataclass(frozen=True)
class ExportFilters:
    since: datetime | None = None
    until: datetime | None = None
    states: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "states": list(self.states),
            "reasons": list(self.reasons),
        }


def events_for_export(filters: ExportFilters) -> QuerySet:
    """The events an export holds, in chain order, as plain tuples."""
    events = CaseEvent.objects.all()
    if filters.since:
        events = events.filter(created_at__gte=filters.since)
    if filters.until:
        events = events.filter(created_at__lt=filters.until)
    if filters.states:
        events = events.filter(case__state__in=filters.states)
    if filters.reasons:
        events = events.filter(case__failure_reason__in=filters.reasons)
    return events.order_by("case_id", "seq").values_list(*_SOURCE)


def _row(values: tuple, *, pii: bool) -> dict[str, Any]:
    source = dict(zip(_SOURCE, values, strict=True))
    customer = "case__credit_line__customer__"
    # Spaces only, as SQL's trim() in the COPY path: a leading tab is the name's own.
    name = f"{source[customer + 'first_name']} {source[customer + 'last_name']}".strip(" ")
    phone = str(source[customer + "phone_number"] or "")
    actor = source["actor__username"] or ""
    ip_address = str(source["ip_address"] or "")
    if not pii:
        name = mask_name(name)
        phone = mask_phone_number(phone) if phone else ""
        # A customer's username and address identify them as well as their name does; staff
        # usernames stay, since who did what is what an auditor reads the export for.
        actor = actor if source["actor__is_staff"] else mask_name(actor)
        ip_address = mask_ip_address(ip_address)
    return {
        "case_id": source["case_id"],
        "seq": source["seq"],
        "credit_line": source["case__credit_line__reference"],
        "customer_reference": source[customer + "customer_reference"] or "",
        "customer_name": name,
        "customer_phone": phone,
        "actor_type": source["actor_type"],
        "actor": actor,
        "created_at": canonical_timestamp(source["created_at"]),
        "kind": source["kind"],
        "state_before": source["state_before"],
        "state_after": source["state_after"],
        "data": event_data(source["data"], pii=pii),
        "ip_address": ip_address,
        "device_id": device_label(source["device_id"], pii=pii),
        "prev_hash": source["prev_hash"],
        "hash": source["hash"],
    }


# A spreadsheet takes a cell beginning with one of these for a formula ("CSV injection"): a
# customer named =HYPERLINK(...) must arrive as text, so such cells get OWASP's leading quote.
FORMULA_STARTS = ("=", "+", "-", "@")
# OWASP's list also quotes a cell beginning with a tab or a carriage return, whatever follows.
CONTROL_STARTS = ("\t", "\r")
# What a spreadsheet may skip before it sees the "=": every character str.isspace() counts
# (ASCII whitespace with line feeds, the C1 next-line, the no-break, Unicode and ideographic
# spaces, the line and paragraph separators), and the invisible zero-width ones.
LEADING_BLANKS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
    "\u200b\u200c\u200d\u2060\ufeff"
)


def neutralise_formula(value: Any) -> Any:
    """Return ``value`` with a leading single quote if a spreadsheet would run it as a formula."""
    if isinstance(value, str) and (
        value.startswith(CONTROL_STARTS) or value.lstrip(LEADING_BLANKS).startswith(FORMULA_STARTS)
    ):
        return "'" + value
    return value


def _cells(row: dict[str, Any]) -> list[Any]:
    return [
        json.dumps(row[c], sort_keys=True, ensure_ascii=False) if c == "data" else row[c]
        for c in COLUMNS
    ]


def _encode_csv(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(neutralise_formula(cell) for cell in _cells(row))
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _encode_jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    chunk: list[str] = []
    for row in rows:
        chunk.append(json.dumps(row, ensure_ascii=False, sort_keys=True, cls=DjangoJSONEncoder))
        if len(chunk) >= 500:
            yield ("\n".join(chunk) + "\n").encode()
            chunk = []
    if chunk:
        yield ("\n".join(chunk) + "\n").encode()


@dataclass
class Manifest:
    format: str
    filters: dict[str, Any]
    exported_by: str
    exported_at: str
    pii: bool
    rows: int = 0
    sha256: str = ""
    chain_heads: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def stream_export(
    *,
    filters: ExportFilters,
    fmt: str,
    actor: User | None,
    pii: bool,
    manifest: Manifest,
    on_complete: Callable[[Manifest], None] | None = None,
) -> Iterator[bytes]:
    """Yield the export's bytes as rows are read, filling in ``manifest`` as it goes.

    When the last byte is out, the manifest is complete and the export is on the audit trail.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    digest = hashlib.sha256()

    def rows() -> Iterator[dict[str, Any]]:
        for values in stream(events_for_export(filters), chunk_size=2000):
            row = _row(values, pii=pii)
            manifest.rows += 1
            manifest.chain_heads[str(row["case_id"])] = {"seq": row["seq"], "hash": row["hash"]}
            yield row

    if fmt == "csv" and connection.vendor == "postgresql":
        chunks = _copy_csv(filters, pii=pii, manifest=manifest)
    else:
        chunks = {"csv": _encode_csv, "jsonl": _encode_jsonl, "xlsx": _xlsx_bytes}[fmt](rows())
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
    manifest.sha256 = digest.hexdigest()
    if on_complete is not None:
        on_complete(manifest)
    record_system_event(
        kind="export.created",
        actor=actor,
        data={
            "format": fmt,
            "filters": manifest.filters,
            "rows": manifest.rows,
            "sha256": manifest.sha256,
            "pii": pii,
        },
    )


# The CSV export on PostgreSQL: the database writes the CSV itself (COPY), which is some 25 times
# faster than building rows in Python; the columns and masking mirror ``_row`` exactly.
_SQL_BLANKS = "".join(f"\\u{ord(blank):04x}" for blank in LEADING_BLANKS)  # the regex's escapes
_SQL_FORMULA = f"^([\\t\\r]|[{_SQL_BLANKS}]*[-=+@])"


def _neutralised(expression: str) -> str:
    """``neutralise_formula`` in SQL; one regexp_replace, so ``expression`` is evaluated once."""
    return f"regexp_replace({expression}, '{_SQL_FORMULA}', '''\\1')"


_COPY_COLUMNS = ", ".join(
    [
        "e.case_id",
        "e.seq",
        *map(
            _neutralised,
            (
                "l.reference",
                "coalesce(u.customer_reference, '')",
                "{name}",
                "{phone}",
                "e.actor_type",
                "{actor}",
            ),
        ),
        """to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')""",
        *map(
            _neutralised,
            (
                "e.kind",
                "e.state_before",
                "e.state_after",
                "{data}::text",
                "{ip_address}",
                "{device_id}",
                "e.prev_hash",
                "e.hash",
            ),
        ),
    ]
)
_FULL_NAME = "trim(u.first_name || ' ' || u.last_name)"
_MASKED_NAME = f"CASE WHEN {_FULL_NAME} = '' THEN '' ELSE left({_FULL_NAME}, 1) || '***' END"
_ACTOR = "coalesce(a.username, '')"
# accounts.masking.mask_name for customers; staff usernames stay, as in ``_row``.
_MASKED_ACTOR = (
    "CASE WHEN a.id IS NULL OR a.username = '' THEN '' WHEN a.is_staff THEN a.username"
    " ELSE left(a.username, 1) || '***' END"
)
_IP_ADDRESS = "coalesce(host(e.ip_address), '')"


def _masked_ip_sql(text: str) -> str:
    """accounts.masking.mask_ip_address in SQL, for ``text``, a non-empty address as text."""
    return f"""
        CASE WHEN strpos({text}, ':') > 0
          THEN split_part({text}, ':', 1) || ':' || split_part({text}, ':', 2) || ':*'
          ELSE split_part({text}, '.', 1) || '.' || split_part({text}, '.', 2) || '.*.*'
        END
    """


_MASKED_IP_ADDRESS = (
    f"CASE WHEN e.ip_address IS NULL THEN '' ELSE {_masked_ip_sql('host(e.ip_address)')} END"
)
# activation.pii.event_data, in SQL: the string addresses under "ip_changed" masked.
# Constant SQL built from constants: no value from outside goes in (hence the noqa).
_MASKED_DATA = f"""
    CASE
      WHEN jsonb_typeof(e.data -> 'ip_changed') = 'object' THEN jsonb_set(
        e.data,
        '{{ip_changed}}',
        (SELECT coalesce(jsonb_object_agg(key, CASE
                  WHEN jsonb_typeof(value) <> 'string' OR value #>> '{{}}' = '' THEN value
                  ELSE to_jsonb({_masked_ip_sql("value #>> '{}'")})
                END), '{{}}'::jsonb)
         FROM jsonb_each(e.data -> 'ip_changed'))
      )
      ELSE e.data
    END
"""  # noqa: S608
# accounts.masking.mask_phone_number, in SQL.
_MASKED_PHONE = """
    CASE
      WHEN u.phone_number IS NULL OR u.phone_number = '' THEN ''
      ELSE (SELECT CASE WHEN length(d) <= 7
                        THEN repeat('*', greatest(length(d) - 2, 0)) || right(d, 2)
                        ELSE left(d, 3) || '****' || right(d, 4) END
            FROM (SELECT CASE WHEN ltrim(u.phone_number, '+') LIKE '86%%'
                                   AND length(ltrim(u.phone_number, '+')) = 13
                              THEN substr(ltrim(u.phone_number, '+'), 3)
                              ELSE ltrim(u.phone_number, '+') END AS d) AS digits)
    END
"""


def _export_where(filters: ExportFilters) -> tuple[str, list[Any]]:
    clauses, params = ["TRUE"], []
    if filters.since:
        clauses.append("e.created_at >= %s")
        params.append(filters.since)
    if filters.until:
        clauses.append("e.created_at < %s")
        params.append(filters.until)
    if filters.states:
        clauses.append("c.state = ANY(%s)")
        params.append(list(filters.states))
    if filters.reasons:
        clauses.append("c.failure_reason = ANY(%s)")
        params.append(list(filters.reasons))
    return " AND ".join(clauses), params


_FROM = """
    FROM activation_caseevent e
    JOIN activation_activationcase c ON c.id = e.case_id
    JOIN activation_creditline l ON l.id = c.credit_line_id
    JOIN accounts_user u ON u.id = l.customer_id
    LEFT JOIN accounts_user a ON a.id = e.actor_id
"""


# A device id's keyed hash (``activation.pii.device_label``) needs an HMAC, which PostgreSQL has
# only with pgcrypto: the hashes are made in Python, once per device, into a temporary table.
_DEVICE_TABLE = "pg_temp.export_device_label"
_MASKED_DEVICE_ID = "coalesce(d.label, '')"
_DEVICE_JOIN = f" LEFT JOIN {_DEVICE_TABLE} d ON d.device_id = e.device_id"


def _fill_device_labels(cursor, where: str, params: list[Any]) -> None:
    """Put the shown label of every device id the export holds into ``_DEVICE_TABLE``."""
    # Dropped with the transaction; dropped here too for a second export in one transaction.
    cursor.execute(f"DROP TABLE IF EXISTS {_DEVICE_TABLE}")
    cursor.execute(
        f"CREATE TEMPORARY TABLE {_DEVICE_TABLE} (device_id text PRIMARY KEY, label text NOT NULL)"
        " ON COMMIT DROP"
    )
    cursor.execute(
        f"SELECT DISTINCT e.device_id {_FROM} WHERE {where} AND e.device_id <> ''", params
    )
    devices = [device_id for (device_id,) in cursor.fetchall()]
    with cursor.cursor.copy(f"COPY {_DEVICE_TABLE} (device_id, label) FROM STDIN") as copy:
        for device_id in devices:
            copy.write_row((device_id, device_label(device_id, pii=False)))


def _copy_csv(filters: ExportFilters, *, pii: bool, manifest: Manifest) -> Iterator[bytes]:
    where, params = _export_where(filters)
    columns = _COPY_COLUMNS.format(
        name=_FULL_NAME if pii else _MASKED_NAME,
        phone="coalesce(u.phone_number, '')" if pii else _MASKED_PHONE,
        actor=_ACTOR if pii else _MASKED_ACTOR,
        ip_address=_IP_ADDRESS if pii else _MASKED_IP_ADDRESS,
        data="e.data" if pii else f"({_MASKED_DATA})",
        device_id="e.device_id" if pii else _MASKED_DEVICE_ID,
    )
    outermost = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if outermost:
            # One snapshot for the rows and the chain heads, however long the download takes.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute(
            f"SELECT DISTINCT ON (e.case_id) e.case_id, e.seq, e.hash, count(*) OVER () "
            f"{_FROM} WHERE {where} ORDER BY e.case_id, e.seq DESC",
            params,
        )
        for case_id, seq, digest, rows in cursor.fetchall():
            manifest.chain_heads[str(case_id)] = {"seq": seq, "hash": digest}
            manifest.rows = rows
        joins = _FROM
        if not pii:
            _fill_device_labels(cursor, where, params)
            joins += _DEVICE_JOIN
        yield (",".join(COLUMNS) + "\r\n").encode()
        query = f"COPY (SELECT {columns} {joins} WHERE {where} ORDER BY e.case_id, e.seq) "
        with cursor.cursor.copy(query + "TO STDOUT WITH (FORMAT csv)", params) as copy:
            for block in copy:
                yield bytes(block)


def new_manifest(*, filters: ExportFilters, fmt: str, actor: User | None, pii: bool) -> Manifest:
    return Manifest(
        format=fmt,
        filters=filters.as_json(),
        exported_by=actor.get_username() if actor else "command line",
        exported_at=timezone.now().isoformat(),
        pii=pii,
    )


def write_export(
    out: BinaryIO, *, filters: ExportFilters, fmt: str, actor: User | None, pii: bool
) -> Manifest:
    manifest = new_manifest(filters=filters, fmt=fmt, actor=actor, pii=pii)
    for chunk in stream_export(filters=filters, fmt=fmt, actor=actor, pii=pii, manifest=manifest):
        out.write(chunk)
    return manifest


def verify_file(path: str, manifest: dict[str, Any]) -> list[str]:
    """Problems with the exported file itself: a changed byte changes its digest."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != manifest["sha256"]:
        return [
            f"the file's SHA-256 is {digest.hexdigest()}, the manifest says {manifest['sha256']}"
        ]
    return []


def verify_chain_heads(manifest: dict[str, Any]) -> list[str]:
    """Problems with the database against an earlier export: rewritten or shortened chains."""
    problems = []
    for case_id, head in manifest.get("chain_heads", {}).items():
        stored = (
            CaseEvent.objects.filter(case_id=int(case_id), seq=head["seq"])
            .values_list("hash", flat=True)
            .first()
        )
        if stored is None:
            problems.append(f"case {case_id}: event {head['seq']} is gone; the chain was shortened")
        elif stored != head["hash"]:
            problems.append(f"case {case_id}: event {head['seq']} no longer has the exported hash")
        else:
            chain_break = find_case_chain_break(int(case_id))
            if chain_break is not None:
                problems.append(
                    f"case {case_id}: event {chain_break.event_id} (seq {chain_break.seq}): "
                    f"{chain_break.problem}"
                )
    return problems


XLSX_MAX_ROWS = 100_000


def _xlsx_bytes(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """Build the workbook in write-only mode in a spooled file, then hand it out in blocks."""
    import tempfile

    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("events")
    sheet.append(COLUMNS)
    for row in rows:
        sheet.append([_xlsx_cell(sheet, value) for value in _cells(row)])
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        workbook.save(spool)
        spool.seek(0)
        yield from iter(lambda: spool.read(1 << 16), b"")


def _xlsx_cell(sheet, value: Any) -> Any:
    """Write text as a string cell: openpyxl makes ``=…`` a formula and ``#N/A`` an error."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if not isinstance(value, str):
        return value
    # XML cannot carry most control characters, and openpyxl refuses them instead of dropping them.
    cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value))
    cell.data_type = "s"
    return cell
