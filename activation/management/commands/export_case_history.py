import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from activation.exports import FORMATS, ExportFilters, ExportTooLarge, write_export


def _moment(value: str | None):
    if value is None:
        return None
    moment = parse_datetime(value)
    if moment is None or moment.tzinfo is None:
        raise CommandError(f"{value!r} is not an ISO 8601 time with a time zone")
    return moment


class Command(BaseCommand):
    help = (
        "Export case histories (one row per event) to a file or standard output, with a manifest."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=FORMATS, default="csv")
        parser.add_argument("--output", help="file to write (default: standard output)")
        parser.add_argument("--manifest", help="where to write the manifest (JSON)")
        parser.add_argument("--since", help="events from this time, e.g. 2026-11-01T00:00:00+08:00")
        parser.add_argument("--until", help="events before this time")
        parser.add_argument("--state", action="append", default=[], help="cases in this state")
        parser.add_argument("--reason", action="append", default=[], help="cases failed for this")
        parser.add_argument("--pii", action="store_true", help="names and phone numbers unmasked")

    def handle(self, *args, **options):
        filters = ExportFilters(
            since=_moment(options["since"]),
            until=_moment(options["until"]),
            states=tuple(options["state"]),
            reasons=tuple(options["reason"]),
        )
        try:
            manifest = self._write(filters, options)
        except ExportTooLarge as refusal:
            raise CommandError(str(refusal)) from refusal
        if options["manifest"]:
            Path(options["manifest"]).write_text(manifest.to_json())
        self.stderr.write(f"{manifest.rows} events exported, SHA-256 {manifest.sha256}")

    def _write(self, filters: ExportFilters, options: dict):
        fmt, pii = options["format"], options["pii"]
        if not options["output"]:
            manifest = write_export(
                sys.stdout.buffer, filters=filters, fmt=fmt, actor=None, pii=pii
            )
            sys.stdout.buffer.flush()
            return manifest
        with Path(options["output"]).open("wb") as out:
            return write_export(out, filters=filters, fmt=fmt, actor=None, pii=pii)
