from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from accounts.services import create_staff_user
from activation import services
from activation.models import ActorType, CaseState, CreditLine, FailureReason
from activation.transitions import transition

CUSTOMER_PASSWORD = "demo-customer-pass"  # noqa: S105 - demo data only
STAFF_PASSWORD = "demo-staff-pass"  # noqa: S105 - demo data only

CUSTOMERS = [
    # username, phone, line reference, product, limit, what went wrong
    ("li.wei", "+8613800138001", "CL-000101", "Installment Plus", "20000", "code_expired"),
    ("zhang.min", "+8613800138002", "CL-000102", "Shopping Credit", "8000", "core_timeout"),
    ("wang.fang", "+8613800138003", "CL-000103", "Installment Plus", "15000", "sync_pending"),
]
STAFF = [
    ("agent", "Ada", "agent"),
    ("supervisor", "Sam", "supervisor"),
    ("auditor", "Aud", "auditor"),
    ("risk", "Rui", "risk_analyst"),
]


class Command(BaseCommand):
    help = "Create demo customers with stuck activations and staff users with TOTP devices."

    @transaction.atomic
    def handle(self, *args, **options):
        for number, (username, phone, reference, product, limit, story) in enumerate(CUSTOMERS, 1):
            if User.objects.filter(username=username).exists():
                continue
            customer = User.objects.create_user(
                username=username,
                password=CUSTOMER_PASSWORD,
                phone_number=phone,
                email=f"{username}@example.com",
                customer_reference=f"C-{number:06d}",
            )
            line = CreditLine.objects.create(
                customer=customer,
                reference=reference,
                product_name=product,
                credit_limit=Decimal(limit),
            )
            self._tell_story(line, story)

        backup_codes: dict[str, list[str]] = {}
        for username, first_name, role in STAFF:
            if User.objects.filter(username=username).exists():
                continue
            # The same path as a real staff member's, audit event included.
            backup_codes[username] = create_staff_user(
                username=username, role=role, password=STAFF_PASSWORD, first_name=first_name
            ).backup_codes

        self._print_logins(backup_codes)

    def _tell_story(self, line: CreditLine, story: str) -> None:
        if story == "code_expired":
            services.open_case(credit_line=line, reason=FailureReason.CODE_EXPIRED)
        elif story == "core_timeout":
            services.open_case(
                credit_line=line,
                reason=FailureReason.CORE_UNAVAILABLE,
                detail="timeout after 5 s during peak load",
            )
        else:  # submitted, accepted, and the core never confirmed
            case = services.open_case(credit_line=line, reason=FailureReason.CODE_INVALID)
            for state in (
                CaseState.PENDING_VERIFICATION,
                CaseState.SUBMITTING,
                CaseState.AWAITING_CONFIRMATION,
            ):
                transition(case, to=state, actor_type=ActorType.SYSTEM, data={"seeded": True})

    def _print_logins(self, backup_codes: dict[str, list[str]]) -> None:
        write = self.stdout.write
        write(
            f"Customers (sign in with the username or phone number, password {CUSTOMER_PASSWORD}):"
        )
        for username, phone, reference, _product, _limit, story in CUSTOMERS:
            write(f"  {username:<10} {phone}  {reference}  {story.replace('_', ' ')}")
        write(f"Staff at /backoffice/ (password {STAFF_PASSWORD}, code from an authenticator app):")
        for username, _first_name, role in STAFF:
            device = TOTPDevice.objects.filter(user__username=username).first()
            write(f"  {username:<10} {role:<12} {device.config_url if device else ''}")
        if backup_codes:
            # Shown only when made, like a real member's: a second run prints none.
            write("Backup codes, each good for one sign-in without the app (shown only now):")
            for username, codes in backup_codes.items():
                write(f"  {username:<10} {' '.join(codes)}")
