import io
import secrets

import qrcode
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from accounts.roles import ROLES
from accounts.services import create_staff_user


class Command(BaseCommand):
    help = (
        "Create a staff user in a role, enrol their authenticator app (TOTP) and print "
        "their one-time backup codes."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=ROLES)
        parser.add_argument("--email", default="")
        parser.add_argument("--first-name", default="")
        parser.add_argument(
            "--password", help="the initial password (default: a random one, printed once)"
        )

    def handle(self, *args, username, role, email, first_name, password, **options):
        password = password or secrets.token_urlsafe(18)
        try:
            _user, device, backup_codes = create_staff_user(
                username=username, role=role, password=password, email=email, first_name=first_name
            )
        except IntegrityError as error:
            raise CommandError(f"A user named {username!r} exists already.") from error
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        self.stdout.write(f"Created {role} {username!r}. Initial password: {password}")
        self.stdout.write("Add this to their authenticator app (scan, or paste the URI):")
        self.stdout.write(device.config_url)
        qr = qrcode.QRCode(border=1)
        qr.add_data(device.config_url)
        picture = io.StringIO()
        qr.print_ascii(out=picture, invert=True)
        self.stdout.write(picture.getvalue())
        self.stdout.write(
            "Backup codes, each good for one sign-in without the app (shown only now; "
            "hand them over with the password):"
        )
        for code in backup_codes:
            self.stdout.write(f"  {code}")
