from django.core.management.base import BaseCommand

from activation.services import reconcile_activations


class Command(BaseCommand):
    help = (
        "Poll the core for cases awaiting confirmation or with staff after a possible delivery, "
        "and escalate those past the SLA."
    )

    def handle(self, *args, **options):
        counts = reconcile_activations()
        self.stdout.write(", ".join(f"{name}: {count}" for name, count in counts.items()))
