"""The API's own records: the app's signed-in installations, staff tokens, idempotency keys."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class AppSession(models.Model):
    """One installation of the mobile app signed in as a customer.

    Its refresh token rotates on every use (``refresh_jti`` is the one current token); revoking
    the session ends its refresh token and every access token issued under it at once.
    """

    class Platform(models.TextChoices):
        IOS = "ios", "iOS"
        ANDROID = "android", "Android"
        HARMONYOS = "harmonyos", "HarmonyOS"
        OTHER = "other", _("Other")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="app_sessions"
    )
    installation_id = models.CharField(_("installation"), max_length=64)
    platform = models.CharField(_("platform"), max_length=16, choices=Platform.choices)
    device_name = models.CharField(_("device"), max_length=100, blank=True)
    app_version = models.CharField(_("app version"), max_length=32, blank=True)
    refresh_jti = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=32, blank=True)

    class Meta:
        verbose_name = _("app session")
        verbose_name_plural = _("app sessions")
        constraints = [
            models.UniqueConstraint(
                fields=["user", "installation_id"],
                condition=Q(revoked_at__isnull=True),
                name="one_live_app_session_per_installation",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.platform} {self.installation_id[:8]}"

    @property
    def is_live(self) -> bool:
        return self.revoked_at is None


class StaffToken(models.Model):
    """A named, scoped, expiring API token a staff member made for a tool; only its hash is kept.

    The token reads ``ars_<prefix>_<secret>``: ``prefix`` finds the row, the SHA-256 of the
    whole token must match ``key_hash``.
    """

    class Scope(models.TextChoices):
        READ = "read", _("Read cases")
        WORK_CASES = "work_cases", _("Work cases")
        EXPORT = "export", _("Export case histories")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="staff_tokens"
    )
    name = models.CharField(_("name"), max_length=100)
    scopes = models.JSONField(_("scopes"), default=list)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(_("expires"))
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        verbose_name = _("staff API token")
        verbose_name_plural = _("staff API tokens")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


class IdempotencyRecord(models.Model):
    """The first answer to a request sent with an ``Idempotency-Key``, replayed to its retries.

    A key belongs to one user; the same key with another body (or another endpoint) is refused.
    ``status_code`` is null while the first request is still being answered.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    endpoint = models.CharField(max_length=300)  # "POST /api/v1/…"
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="one_record_per_user_and_key")
        ]
        indexes = [models.Index(fields=["expires_at"])]

    def __str__(self) -> str:
        return f"{self.user_id} {self.key}"
