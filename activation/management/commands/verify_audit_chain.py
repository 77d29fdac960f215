import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from activation.exports import verify_chain_heads
from activation.integrity import chain_problems
from activation.models import ActivationCase, CaseEvent


class Command(BaseCommand):
    help = (
        "Verify the hash chain of every case's timeline and of the system audit trail; exit "
        "non-zero on any break. With --manifest, also catch chains shortened since that export."
    )

    def add_arguments(self, parser):
        parser.add_argument("--case", type=int, help="verify only this case")
        parser.add_argument("--since", help="only cases with events from this ISO 8601 time")
        parser.add_argument("--until", help="only cases with events before this time")
        parser.add_argument("--manifest", help="an earlier export's manifest to check against")

    def handle(self, *args, case=None, since=None, until=None, manifest=None, **options):
        cases = ActivationCase.objects.all()
        if case is not None:
            cases = cases.filter(pk=case)
        if since or until:
            events = CaseEvent.objects.all()
            if since:
                events = events.filter(created_at__gte=self._moment(since))
            if until:
                events = events.filter(created_at__lt=self._moment(until))
            cases = cases.filter(pk__in=events.values("case_id"))
        checked, problems = chain_problems(cases)
        if manifest:
            problems += verify_chain_heads(json.loads(Path(manifest).read_text()))
        for problem in problems:
            self.stderr.write(problem)
        self.stdout.write(
            f"{checked} case chains and the system trail checked, {len(problems)} broken."
        )
        if problems:
            raise CommandError(f"{len(problems)} broken chain(s).")

    @staticmethod
    def _moment(value: str):
        moment = parse_datetime(value)
        if moment is None or moment.tzinfo is None:
            raise CommandError(f"{value!r} is not an ISO 8601 time with a time zone")
        return moment
