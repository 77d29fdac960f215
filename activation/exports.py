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
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
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
        """``json.dumps(asdict(self), indent=2, sort_keys=True)``, without its cost per head.

        With a head per case (50,000 and more), ``asdict``'s deep copy and the indenting encoder
        (pure Python) took seconds and tens of MB: the heads are written from a template here,
        the rest by ``json.dumps``, and the text is the same.
        """
        heads = _heads_json(self.chain_heads)
        rest = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "chain_heads"}
        text = json.dumps({**rest, "chain_heads": {}}, indent=2, sort_keys=True)
        # "chain_heads" sorts before every other field, so it opens the text.
        opening = '{\n  "chain_heads": {},\n'
        if heads is None or not text.startswith(opening):
            return json.dumps(asdict(self), indent=2, sort_keys=True)
        return '{\n  "chain_heads": ' + heads + ",\n" + text.removeprefix(opening)


_quoted = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str by default


def _heads_json(heads: dict[str, dict[str, Any]]) -> str | None:
    """The chain heads as the manifest's ``json.dumps`` indents them at its second level.

    None if a head is not the usual ``{"hash": str, "seq": int}`` under a str key, for
    ``json.dumps`` to write them all.
    """
    if not heads:
        return "{}"
    if not all(type(case_id) is str for case_id in heads):
        return None
    entries = []
    for case_id, head in sorted(heads.items()):
        if head.keys() != {"hash", "seq"}:
            return None
        digest, seq = head["hash"], head["seq"]
        if type(digest) is not str or type(seq) is not int:
            return None
        hash_line = f'      "hash": {_quoted(digest)},'
        entries.append(f'    {_quoted(case_id)}: {{\n{hash_line}\n      "seq": {seq}\n    }}')
    return "{\n" + ",\n".join(entries) + "\n  }"


class ExportTooLarge(ValueError):
    """An export its format cannot hold; refused before any byte of it is out."""


# A worksheet holds 1,048,576 rows; the header takes one.
XLSX_MAX_ROWS = 1_048_575


def _refuse_past_the_sheet(rows: int) -> None:
    if rows > XLSX_MAX_ROWS:
        raise ExportTooLarge(f"XLSX holds at most {XLSX_MAX_ROWS} rows; this export has {rows}")


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

    if connection.vendor == "postgresql":
        chunks = _copy_export(filters, fmt=fmt, pii=pii, manifest=manifest)
    else:
        if fmt == "xlsx":
            _refuse_past_the_sheet(events_for_export(filters).count())
        chunks = {"csv": _encode_csv, "jsonl": _encode_jsonl, "xlsx": _encode_sheet}[fmt](rows())
    if fmt == "xlsx":
        chunks = _xlsx_package(chunks)
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


# --- The exports on PostgreSQL --------------------------------------------------------------------
#
# The database writes every format's rows itself (one COPY of a query whose columns and masking
# mirror ``_row``), many times faster than building rows in Python, inside one REPEATABLE READ
# snapshot shared with the chain heads. Python hashes the blocks and hands them out; for JSON
# Lines and XLSX it also writes each event's data (below), and for XLSX zips as it goes.

# ``neutralise_formula`` in SQL. Most cells cannot start a formula (their first character is a
# letter or a digit), so a cheap test of the first character saves the regular expression.
_SQL_BLANKS = "".join(f"\\u{ord(blank):04x}" for blank in LEADING_BLANKS)  # the regex's escapes
_SQL_FORMULA = f"^([\\t\\r]|[{_SQL_BLANKS}]*[-=+@])"
_FORMULA_FIRSTS = ", ".join(
    str(ord(character)) for character in sorted(set(LEADING_BLANKS + "".join(FORMULA_STARTS)))
)


def _neutralised(expression: str) -> str:
    return (
        f"CASE WHEN ascii({expression}) IN ({_FORMULA_FIRSTS})"
        f" THEN regexp_replace({expression}, '{_SQL_FORMULA}', '''\\1') ELSE {expression} END"
    )


_FULL_NAME = "trim(u.first_name || ' ' || u.last_name)"
_MASKED_NAME = f"CASE WHEN {_FULL_NAME} = '' THEN '' ELSE left({_FULL_NAME}, 1) || '***' END"
_ACTOR = "coalesce(a.username, '')"
# accounts.masking.mask_name for customers; staff usernames stay, as in ``_row``.
_MASKED_ACTOR = (
    "CASE WHEN a.id IS NULL OR a.username = '' THEN '' WHEN a.is_staff THEN a.username"
    " ELSE left(a.username, 1) || '***' END"
)
# The address as Django reads it: inet's output, which abbrev() gives (text(inet) adds "/32").
_IP_ADDRESS = "coalesce(abbrev(e.ip_address), '')"
_CREATED_AT = """to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""


def _masked_ip_sql(text: str) -> str:
    """accounts.masking.mask_ip_address in SQL, for ``text``, a non-empty address as text."""
    return f"""
        CASE WHEN strpos({text}, ':') > 0
          THEN array_to_string((string_to_array({text}, ':'))[1:2], ':') || ':*'
          ELSE array_to_string((string_to_array({text}, '.'))[1:2], '.') || '.*.*'
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

# A device id's keyed hash (``activation.pii.device_label``) needs an HMAC, which PostgreSQL has
# only with pgcrypto: the hashes are made in Python, once per device, into a temporary table.
_DEVICE_TABLE = "pg_temp.export_device_label"
_MASKED_DEVICE_ID = "coalesce(d.label, '')"
_DEVICE_JOIN = f" LEFT JOIN {_DEVICE_TABLE} d ON d.device_id = e.device_id"


def _sources(*, pii: bool) -> dict[str, str]:
    """Each column of ``COLUMNS`` in SQL, masked as ``_row`` masks it; ``data`` is jsonb."""
    return {
        "case_id": "e.case_id",
        "seq": "e.seq",
        "credit_line": "l.reference",
        "customer_reference": "coalesce(u.customer_reference, '')",
        "customer_name": _FULL_NAME if pii else _MASKED_NAME,
        "customer_phone": "coalesce(u.phone_number, '')" if pii else _MASKED_PHONE,
        "actor_type": "e.actor_type",
        "actor": _ACTOR if pii else _MASKED_ACTOR,
        "created_at": _CREATED_AT,
        "kind": "e.kind",
        "state_before": "e.state_before",
        "state_after": "e.state_after",
        "data": "e.data" if pii else f"({_MASKED_DATA})",
        "ip_address": _IP_ADDRESS if pii else _MASKED_IP_ADDRESS,
        "device_id": "e.device_id" if pii else _MASKED_DEVICE_ID,
        "prev_hash": "e.prev_hash",
        "hash": "e.hash",
    }


_NUMBERS = ("case_id", "seq")


# The customer's columns are the same for every event of a case: they are masked, neutralised
# and escaped once per case, in a subquery (``_cases``), rather than once per event.
_CASE_COLUMNS = ("credit_line", "customer_reference", "customer_name", "customer_phone")


def _csv_text(expression: str) -> str:
    return _neutralised(expression)


def _csv_select(source: dict[str, str]) -> str:
    def cell(column: str) -> str:
        if column in _CASE_COLUMNS:
            return f"c.{column}"
        if column in _NUMBERS or column == "created_at":  # digits first: never a formula
            return source[column]
        if column == "data":  # JSON text: only a negative number can look like a formula
            data = source["data"]
            return (
                f"CASE WHEN jsonb_typeof({data}) = 'number' THEN {_neutralised(f'{data}::text')}"
                f" ELSE {data}::text END"
            )
        return _csv_text(source[column])

    return ", ".join(cell(column) for column in COLUMNS)


# An event's data leaves PostgreSQL as jsonb's text between two of these (a control character,
# which JSON text escapes), and Python writes it as ``_encode_jsonl`` does:
# ``json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False)``. jsonb orders keys by
# length, and floats are Python's to write; rebuilding that in SQL costs a sort per row.
_DATA_MARK = "\x03"


def _data_between_marks(source: dict[str, str]) -> list[tuple[bool, str]]:
    return [(False, _DATA_MARK), (True, f"{source['data']}::text"), (False, _DATA_MARK)]


def _literal(text: str) -> str:
    """``text`` as an SQL string (an E'' one, with the control characters escaped)."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return "E'" + "".join(c if ord(c) >= 32 else f"\\x{ord(c):02x}" for c in escaped) + "'"


def _concatenation(parts: list[tuple[bool, str]]) -> str:
    """Join (is SQL, text) parts with ``||``, adjacent literal texts merged into one."""
    merged: list[tuple[bool, str]] = []
    for is_sql, text in parts:
        if merged and not is_sql and not merged[-1][0]:
            merged[-1] = (False, merged[-1][1] + text)
        else:
            merged.append((is_sql, text))
    return " || ".join(text if is_sql else _literal(text) for is_sql, text in merged)


def _jsonl_text(expression: str) -> str:
    return f"to_json({expression})::text"


# Text that holds nothing JSON escapes, as PostgreSQL writes it (the time: digits and "-T:.+";
# an address: hex digits and ".:/*"), is only put between quotes: to_json() costs about half a
# microsecond a call. The masked device's label comes escaped (by json.dumps) with the label.
_JSON_SAFE = ("created_at", "ip_address")
_MASKED_DEVICE_JSON = "coalesce(d.label_json, '\"\"')"


def _jsonl_select(source: dict[str, str]) -> str:
    """One JSON Lines row as ``_encode_jsonl`` writes it: sorted keys, ", " and ": "."""
    parts: list[tuple[bool, str]] = []
    for n, key in enumerate(sorted(COLUMNS)):
        parts.append((False, ("{" if n == 0 else ", ") + json.dumps(key) + ": "))
        if key in _CASE_COLUMNS:
            parts.append((True, f"c.{key}"))
        elif key in _NUMBERS:
            parts.append((True, f"{source[key]}::text"))
        elif key == "data":
            parts += _data_between_marks(source)
        elif key in _JSON_SAFE:
            parts += [(False, '"'), (True, source[key]), (False, '"')]
        elif source[key] == _MASKED_DEVICE_ID:
            parts.append((True, _MASKED_DEVICE_JSON))
        else:
            parts.append((True, _jsonl_text(source[key])))
    parts.append((False, "}"))
    return _concatenation(parts)


# What XML 1.0 cannot carry (NUL cannot be in PostgreSQL text either).
_XML_ILLEGAL = [*range(0x01, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]
_SQL_XML_ILLEGAL = "E'" + "".join(f"\\x{code:02x}" for code in _XML_ILLEGAL) + "'"


# What ``_xml_text`` changes: a character XML cannot carry, or one it escapes.
_SQL_XML_SPECIAL = "E'[&<>" + "".join(f"\\x{code:02x}" for code in [*_XML_ILLEGAL, 10, 13]) + "]'"


def _xml_text_sql(expression: str) -> str:
    """``_xml_text`` in SQL.

    translate() costs microseconds a call and each replace() a tenth of one, and most text has
    nothing to change: a regular expression picks out the text that has.
    """
    text = f"translate({expression}, {_SQL_XML_ILLEGAL}, '')"
    for character, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        text = f"replace({text}, '{character}', '{entity}')"
    text = f"replace(replace({text}, E'\\n', '&#10;'), E'\\r', '&#13;')"
    return f"CASE WHEN {expression} ~ {_SQL_XML_SPECIAL} THEN {text} ELSE {expression} END"


_XLSX_NUMBER = ("<c><v>", "</v></c>")
_XLSX_TEXT = ('<c t="inlineStr"><is><t xml:space="preserve">', "</t></is></c>")


def _xlsx_text(expression: str) -> str:
    """A string cell."""
    parts = [(False, _XLSX_TEXT[0]), (True, _xml_text_sql(expression)), (False, _XLSX_TEXT[1])]
    return _concatenation(parts)


def _xlsx_select(source: dict[str, str]) -> str:
    """One worksheet row as ``_sheet_row`` writes it."""
    parts: list[tuple[bool, str]] = [(False, "<row>")]
    for column in COLUMNS:
        if column in _CASE_COLUMNS:
            parts.append((True, f"c.{column}"))
        elif column in _NUMBERS:
            parts += [(False, _XLSX_NUMBER[0]), (True, source[column]), (False, _XLSX_NUMBER[1])]
        elif column == "data":
            parts += [(False, _XLSX_TEXT[0]), *_data_between_marks(source), (False, _XLSX_TEXT[1])]
        else:
            parts += [(False, _XLSX_TEXT[0]), (True, _xml_text_sql(source[column]))]
            parts.append((False, _XLSX_TEXT[1]))
    parts.append((False, "</row>"))
    return _concatenation(parts)


def _cases(source: dict[str, str], text: Callable[[str], str], where: str) -> str:
    """The exported cases with their customer's columns as ``text`` writes them, as ``c``.

    OFFSET 0 keeps PostgreSQL from merging the subquery into the events' query, which would
    compute the columns again for every event.
    """
    columns = ", ".join(f"{text(source[column])} AS {column}" for column in _CASE_COLUMNS)
    # Constant SQL around constant expressions; the filters' values are parameters.
    return f"""
        (SELECT c.id, {columns}
         FROM activation_activationcase c
         JOIN activation_creditline l ON l.id = c.credit_line_id
         JOIN accounts_user u ON u.id = l.customer_id
         WHERE {where} OFFSET 0) c
    """  # noqa: S608


def _export_where(filters: ExportFilters) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]:
    """The filters on the event (``e``) and on its case (``c``), each as SQL and parameters."""
    events, event_params = ["TRUE"], []
    if filters.since:
        events.append("e.created_at >= %s")
        event_params.append(filters.since)
    if filters.until:
        events.append("e.created_at < %s")
        event_params.append(filters.until)
    cases, case_params = ["TRUE"], []
    if filters.states:
        cases.append("c.state = ANY(%s)")
        case_params.append(list(filters.states))
    if filters.reasons:
        cases.append("c.failure_reason = ANY(%s)")
        case_params.append(list(filters.reasons))
    return (" AND ".join(events), event_params), (" AND ".join(cases), case_params)


# What choosing the events needs: the filters are on the event and its case only.
_EVENTS = " FROM activation_caseevent e JOIN activation_activationcase c ON c.id = e.case_id"


def _fill_device_labels(cursor, where: str, params: list[Any]) -> None:
    """Put the shown label of every device id the export holds into ``_DEVICE_TABLE``.

    Each with its JSON text too (``json.dumps``, as the Python writer writes it), for JSON Lines.
    """
    # Dropped with the transaction; dropped here too for a second export in one transaction.
    cursor.execute(f"DROP TABLE IF EXISTS {_DEVICE_TABLE}")
    cursor.execute(
        f"CREATE TEMPORARY TABLE {_DEVICE_TABLE}"
        " (device_id text PRIMARY KEY, label text NOT NULL, label_json text NOT NULL)"
        " ON COMMIT DROP"
    )
    cursor.execute(
        f"SELECT DISTINCT e.device_id {_EVENTS} WHERE {where} AND e.device_id <> ''", params
    )
    devices = [device_id for (device_id,) in cursor.fetchall()]
    columns = "device_id, label, label_json"
    with cursor.cursor.copy(f"COPY {_DEVICE_TABLE} ({columns}) FROM STDIN") as copy:
        for device_id in devices:
            label = device_label(device_id, pii=False)
            copy.write_row((device_id, label, json.dumps(label, ensure_ascii=False)))


def _chain_heads(cursor, events: tuple[str, list[Any]], cases: tuple[str, list[Any]]) -> dict:
    """Each exported case's last exported event: one step back along its (case, seq) index."""
    last = "SELECT e.seq, e.hash FROM activation_caseevent e WHERE e.case_id = c.id AND "
    lateral = f"({last}{events[0]} ORDER BY e.seq DESC LIMIT 1) head"
    # Constant SQL: the filters' values are parameters.
    query = f"SELECT c.id, head.seq, head.hash FROM activation_activationcase c, LATERAL {lateral}"  # noqa: S608
    query += f" WHERE {cases[0]}"
    cursor.execute(query, events[1] + cases[1])
    return {str(case_id): {"seq": seq, "hash": digest} for case_id, seq, digest in cursor}


# Blocks handed out: COPY sends one message per row, and each chunk costs a hash update and a
# write or a send, so rows are gathered into blocks of this size first.
_BLOCK = 256 * 1024
# COPY's CSV with a delimiter and a quote that JSON text and our XML never hold raw (they are
# control characters, which both escape): each row's one value comes out exactly as it is.
_LINES = "FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02'"


# ``json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False)`` without the wrappers it
# goes through on each call: the scanner and the encoder ``json.loads`` and ``json.dumps`` build
# and call themselves, built once (the byte-equality tests hold them to the public functions).
_scan_json = json.scanner.make_scanner(json.JSONDecoder())
_json_encoder = json.JSONEncoder(sort_keys=True, ensure_ascii=False)
if json.encoder.c_make_encoder is not None:
    _encode_json = json.encoder.c_make_encoder(
        None, _json_encoder.default, json.encoder.encode_basestring, None, ": ", ", ", True,
        False, True,
    )  # fmt: skip

    def _dumps(value: Any) -> str:
        return "".join(_encode_json(value, 0))

else:  # a Python without the _json accelerator
    _dumps = _json_encoder.encode


def _written_json(text: bytes) -> str:
    """jsonb's text of a value, ``text``, as the Python writer writes the value."""
    return _dumps(_scan_json(text.decode(), 0)[0])


def _jsonl_data(text: bytes) -> bytes:
    return _written_json(text).encode()


def _xlsx_data(text: bytes) -> bytes:
    return _xml_text(_written_json(text)).encode()


class _WrittenData(dict):
    """The data's text from PostgreSQL -> its text in the file, remembered (a bounded number of
    short ones): events of one kind often carry the same data, which is then written once."""

    _LIMIT, _LONGEST = 4096, 256

    def __init__(self, write: Callable[[bytes], bytes]) -> None:
        super().__init__()
        self.write = write

    def __missing__(self, text: bytes) -> bytes:
        written = self.write(text)
        if len(text) <= self._LONGEST:
            if len(self) >= self._LIMIT:
                self.clear()
            self[text] = written
        return written


def _finished_block(block: bytearray, rows: int, data: _WrittenData | None) -> bytes:
    """``block``, ``rows`` whole rows, as it leaves: each row's data (between marks) written."""
    if data is None:
        return bytes(block)
    parts = bytes(block).split(_DATA_MARK.encode())
    # Two marks a row: a mark anywhere else (none can be, it is escaped) would shift the data.
    if len(parts) != 2 * rows + 1:
        raise ValueError("an exported row holds a stray data mark")
    parts[1::2] = map(data.__getitem__, parts[1::2])
    return b"".join(parts)


def _copy_export(
    filters: ExportFilters, *, fmt: str, pii: bool, manifest: Manifest
) -> Iterator[bytes]:
    events, cases = _export_where(filters)
    where, params = f"{events[0]} AND {cases[0]}", events[1] + cases[1]
    source = _sources(pii=pii)
    outermost = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if outermost:
            # One snapshot for the rows and the chain heads, however long the download takes.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # Without parallel workers the events are read in (case, seq) order off their index
            # and leave from the first row on; with them, every row was sorted first (spilling
            # to disk) while the workers took cores from the web processes. For this
            # transaction only (hence only when it is the export's own).
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        manifest.chain_heads = _chain_heads(cursor, events, cases)
        if fmt == "xlsx":
            cursor.execute(f"SELECT count(*) {_EVENTS} WHERE {where}", params)
            _refuse_past_the_sheet(cursor.fetchone()[0])
        joins = ""
        if not pii:
            _fill_device_labels(cursor, where, params)
            joins = _DEVICE_JOIN
        if fmt == "csv":
            select, text, options = _csv_select(source), _csv_text, "FORMAT csv"
            yield (",".join(COLUMNS) + "\r\n").encode()
        elif fmt == "jsonl":
            select, text, options = _jsonl_select(source), _jsonl_text, _LINES
        else:
            select, text, options = _xlsx_select(source), _xlsx_text, _LINES
            yield _sheet_row(COLUMNS)
        case_table = _cases(source, text, cases[0])
        joins = (
            f" FROM activation_caseevent e JOIN {case_table} ON c.id = e.case_id"
            f" LEFT JOIN accounts_user a ON a.id = e.actor_id{joins}"
        )
        query = f"COPY (SELECT {select} {joins} WHERE {events[0]} ORDER BY e.case_id, e.seq)"
        data = None if fmt == "csv" else _WrittenData(_jsonl_data if fmt == "jsonl" else _xlsx_data)
        block, rows = bytearray(), 0
        copying = f"{query} TO STDOUT WITH ({options})"
        with cursor.cursor.copy(copying, cases[1] + events[1]) as copy:
            # COPY sends a message per row: the rows are gathered into blocks and each block's
            # data written in one pass, rather than a row at a time.
            for row in copy:
                block += row
                rows += 1
                if len(block) >= _BLOCK:
                    yield _finished_block(block, rows, data)
                    block.clear()
                    rows = 0
        manifest.rows = cursor.cursor.rowcount
        if block:
            yield _finished_block(block, rows, data)


# --- XLSX, written as it goes ---------------------------------------------------------------------
#
# The worksheet is written by hand, a row at a time (cells typed: numbers for case_id and seq,
# inline strings for the rest, so no text is ever a formula), and zipped as it is written: memory
# stays flat however many rows, and nothing goes to a temporary file.

_XML_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "\n": "&#10;",
        "\r": "&#13;",
        **dict.fromkeys(map(chr, [0, *_XML_ILLEGAL])),
    }
)


def _xml_text(value: str) -> str:
    """``value`` as XML text on one line: control characters XML cannot carry are dropped."""
    return value.translate(_XML_ESCAPES)


def _sheet_cell(value: Any) -> str:
    if value is None:
        return "<c/>"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{_XLSX_NUMBER[0]}{value}{_XLSX_NUMBER[1]}"
    return f"{_XLSX_TEXT[0]}{_xml_text(str(value))}{_XLSX_TEXT[1]}"


def _sheet_row(values: Iterable[Any]) -> bytes:
    return ("<row>" + "".join(map(_sheet_cell, values)) + "</row>\n").encode()


def _encode_sheet(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """The worksheet's rows (``sheetData``'s content), header first."""
    chunk = [_sheet_row(COLUMNS)]
    for row in rows:
        chunk.append(_sheet_row(_cells(row)))
        if len(chunk) >= 500:
            yield b"".join(chunk)
            chunk = []
    yield b"".join(chunk)


_SPREADSHEETML = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_RELATIONSHIPS = "http://schemas.openxmlformats.org/package/2006/relationships"
_OFFICE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_SHEET = "xl/worksheets/sheet1.xml"
_XLSX_PARTS = {
    "[Content_Types].xml": (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels"'
        ' ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        f'<Override PartName="/{_SHEET}" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/styles.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        "</Types>"
    ),
    "_rels/.rels": (
        f'<Relationships xmlns="{_RELATIONSHIPS}">'
        f'<Relationship Id="rId1" Type="{_OFFICE}/officeDocument" Target="xl/workbook.xml"/>'
        "</Relationships>"
    ),
    "xl/workbook.xml": (
        f'<workbook xmlns="{_SPREADSHEETML}" xmlns:r="{_OFFICE}">'
        '<sheets><sheet name="events" sheetId="1" r:id="rId1"/></sheets></workbook>'
    ),
    "xl/_rels/workbook.xml.rels": (
        f'<Relationships xmlns="{_RELATIONSHIPS}">'
        f'<Relationship Id="rId1" Type="{_OFFICE}/worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{_OFFICE}/styles" Target="styles.xml"/>'
        "</Relationships>"
    ),
    "xl/styles.xml": (
        f'<styleSheet xmlns="{_SPREADSHEETML}">'
        '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
        "</cellStyleXfs>"
        '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
        "</cellXfs>"
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>"
    ),
}
_SHEET_START = f'{_XML_DECLARATION}<worksheet xmlns="{_SPREADSHEETML}"><sheetData>\n'.encode()
_SHEET_END = b"</sheetData></worksheet>"


class _Sink:
    """Where the zip is written: what it holds is taken out and handed on as it comes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        taken = b"".join(self.parts)
        self.parts, self.size = [], 0
        return taken


def _xlsx_package(sheet_rows: Iterable[bytes]) -> Iterator[bytes]:
    """Zip the workbook around the worksheet's rows as they come (``sheet_rows``).

    Nothing is written before the first rows arrive, so a refusal comes before any byte. The zip
    is written without seeking (sizes in data descriptors) and without ZIP64, which some
    spreadsheet programs reject: a worksheet of more than 4 GiB uncompressed fails at its end,
    before the manifest is complete.
    """
    rows = iter(sheet_rows)
    first = next(rows, b"")
    sink = _Sink()
    # Level 1: the XML repeats itself, so it compresses well even at the fastest level.
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as package:
        for name, content in _XLSX_PARTS.items():
            package.writestr(name, _XML_DECLARATION + content)
        with package.open(_SHEET, "w") as sheet:
            sheet.write(_SHEET_START + first)
            for chunk in rows:
                sheet.write(chunk)
                if sink.size >= _BLOCK:
                    yield sink.take()
            sheet.write(_SHEET_END)
    yield sink.take()


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
