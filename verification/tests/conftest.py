import pytest
from django.utils import timezone

from verification.tests.soft_authenticator import SoftAuthenticator


@pytest.fixture
def clock(time_machine):
    """A stopped clock the test moves on by hand (past throttles, cooldowns and expiry)."""
    time_machine.move_to(timezone.now(), tick=False)
    return time_machine


@pytest.fixture
def phone() -> SoftAuthenticator:
    """A phone with a platform authenticator (passkeys), in a browser on the default origin."""
    return SoftAuthenticator()
