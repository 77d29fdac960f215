"""Checking every audit chain, for the command line and the nightly job alike."""

from django.db.models import QuerySet

from audit.models import SystemEvent
from audit.services import find_system_chain_break, record_system_event
from portal import instruments
from portal.db import primary_keys

from .models import ActivationCase
from .timeline import find_case_chain_break


def chain_problems(cases: QuerySet[ActivationCase] | None = None) -> tuple[int, list[str]]:
    """Check case chains (all, or ``cases``) and the system trail; return (checked, problems).

    One case at a time, each read in chunks: memory stays flat however many events there are.
    """
    if cases is None:
        cases = ActivationCase.objects.all()
    problems, checked = [], 0
    # The case ids come a thousand at a time by keyset, not from one cursor: a cursor would need
    # a transaction around the whole run (PgBouncer's transaction pooling, see portal.db), and
    # on a large database that snapshot would hold back vacuum for as long as the check takes.
    # Each case's chain is still read in a short transaction of its own, a consistent view of it.
    for case_id in primary_keys(cases, chunk_size=1000):
        checked += 1
        chain_break = find_case_chain_break(case_id)
        if chain_break is not None:
            problems.append(
                f"case {case_id}: event {chain_break.event_id} (seq {chain_break.seq}): "
                f"{chain_break.problem}"
            )
    system_break = find_system_chain_break()
    if system_break is not None:
        problems.append(
            f"system audit trail: event {system_break.event_id} (seq {system_break.seq}): "
            f"{system_break.problem}"
        )
    return checked, problems


def verify_and_record() -> list[str]:
    """The nightly check: verify every chain and put the result on the audit trail."""
    checked, problems = chain_problems()
    instruments.audit_chain_breaks.inc(len(problems))
    record_system_event(
        kind="audit.verified",
        data={"cases_checked": checked, "ok": not problems, "problems": problems[:100]},
    )
    return problems


def last_verification() -> SystemEvent | None:
    return SystemEvent.objects.filter(kind="audit.verified").order_by("-seq").first()
