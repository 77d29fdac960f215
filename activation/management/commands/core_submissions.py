from django.core.management.base import BaseCommand, CommandError

from activation.models import CoreRequest, CoreSubmissionSwitch
from activation.services.emergency import ReasonRequired, set_core_submissions_paused
from portal.breaker import core_breaker


class Command(BaseCommand):
    help = "Pause or resume sending activations to the core, or show the switch and the queue."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["pause", "resume", "status"])
        parser.add_argument("--reason", default="", help="why (required to pause or resume)")

    def handle(self, *args, action, reason, **options):
        if action != "status":
            try:
                set_core_submissions_paused(paused=action == "pause", actor=None, reason=reason)
            except ReasonRequired as error:
                raise CommandError("Give a --reason: it goes on the audit trail.") from error
        switch = CoreSubmissionSwitch.objects.filter(pk=1).first()
        paused = bool(switch and switch.paused)
        queued = CoreRequest.objects.filter(status=CoreRequest.Status.PENDING).count()
        in_flight = CoreRequest.objects.filter(status=CoreRequest.Status.IN_FLIGHT).count()
        self.stdout.write(f"core submissions: {'PAUSED' if paused else 'running'}")
        if switch and switch.changed_at:
            who = switch.changed_by or "command line"
            self.stdout.write(
                f"last change: {switch.changed_at:%Y-%m-%d %H:%M:%S} by {who}: {switch.reason}"
            )
        self.stdout.write(f"queued: {queued}, in flight: {in_flight}")
        self.stdout.write(f"circuit breaker: {core_breaker().state()}")
