from django.core.management.base import BaseCommand, CommandError

from activation.models import ActivationCase
from activation.timeline import find_case_chain_break


class Command(BaseCommand):
    help = "Verify the hash chain of every case's timeline; exit non-zero on any break."

    def add_arguments(self, parser):
        parser.add_argument("--case", type=int, help="verify only this case")

    def handle(self, *args, case=None, **options):
        case_ids = ActivationCase.objects.order_by("pk").values_list("pk", flat=True)
        if case is not None:
            case_ids = case_ids.filter(pk=case)
        checked, broken = 0, []
        for case_id in case_ids.iterator(chunk_size=1000):
            checked += 1
            chain_break = find_case_chain_break(case_id)
            if chain_break is not None:
                broken.append(case_id)
                self.stderr.write(
                    f"case {case_id}: event {chain_break.event_id} (seq {chain_break.seq}): "
                    f"{chain_break.problem}"
                )
        self.stdout.write(f"{checked} case chains checked, {len(broken)} broken.")
        if broken:
            raise CommandError(f"Broken chains: {', '.join(map(str, broken))}")
