import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from activation.exports import verify_chain_heads, verify_file


class Command(BaseCommand):
    help = (
        "Check an export against its manifest, and the manifest's chain heads against the database."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("manifest")

    def handle(self, *args, file, manifest, **options):
        try:
            recorded = json.loads(Path(manifest).read_text())
        except (OSError, ValueError) as error:
            raise CommandError(f"Cannot read the manifest: {error}") from error
        problems = verify_file(file, recorded) + verify_chain_heads(recorded)
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} problem(s) found.")
        self.stdout.write(
            f"OK: {recorded['rows']} rows match the manifest; "
            f"{len(recorded['chain_heads'])} case chains intact in the database."
        )
