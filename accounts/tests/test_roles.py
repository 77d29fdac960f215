import pytest
from django.contrib.auth.models import Group

from accounts.roles import ROLE_PERMISSIONS

pytestmark = pytest.mark.django_db


def test_the_migrations_give_every_role_exactly_the_permissions_in_roles_py():
    groups = {
        group.name: sorted(
            f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()
        )
        for group in Group.objects.prefetch_related("permissions__content_type")
    }
    assert groups == {role: sorted(names) for role, names in ROLE_PERMISSIONS.items()}
