"""Test data built through the same code paths the product uses."""

from decimal import Decimal

import factory
from django.contrib.auth.models import Group, Permission
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from accounts.roles import sync_roles
from activation import services
from activation.models import ActivationCase, ActorType, CaseState, CreditLine, FailureReason
from activation.transitions import transition

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class CustomerFactory(UserFactory):
    username = factory.Sequence(lambda n: f"customer{n}")
    phone_number = factory.Sequence(lambda n: f"+86138{n:08d}")
    customer_reference = factory.Sequence(lambda n: f"C-{n:06d}")


class StaffFactory(UserFactory):
    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True

    @factory.post_generation
    def totp(obj, create, extracted, **kwargs):
        if create:
            TOTPDevice.objects.create(user=obj, name="Authenticator", confirmed=True)

    @factory.post_generation
    def role(obj, create, extracted, **kwargs):
        """``StaffFactory(role="agent")`` puts the user in that role's group."""
        if create and extracted:
            if not Group.objects.filter(name=extracted).exists():
                # A transactional test's flush removed what the data migration created.
                sync_roles(Group, Permission)
            obj.groups.add(Group.objects.get(name=extracted))


class CreditLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CreditLine

    customer = factory.SubFactory(CustomerFactory)
    reference = factory.Sequence(lambda n: f"CL-{n:06d}")
    product_name = "Installment Plus"
    credit_limit = Decimal("10000.00")


def open_failed_case(
    customer: User | None = None, reason: FailureReason = FailureReason.CODE_EXPIRED
) -> ActivationCase:
    """A case as production opens it: failed, with its first timeline event."""
    line = CreditLineFactory(customer=customer) if customer else CreditLineFactory()
    return services.open_case(credit_line=line, reason=reason)


def open_review_case(
    customer: User | None = None, reason: FailureReason = FailureReason.CORE_UNAVAILABLE
) -> ActivationCase:
    """A case that failed for ``reason`` and went to staff, as the system hands it over."""
    case = open_failed_case(customer or CustomerFactory(), reason=reason)
    transition(case, to=CaseState.NEEDS_REVIEW, actor_type=ActorType.SYSTEM, reason=reason)
    return case
