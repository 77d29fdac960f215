"""The audit trail's building blocks: the hash-chained event every trail is made of, and the
system audit trail itself (what is not about one case: exports, the emergency switch, staff
roles and factors, nightly chain checks)."""

import pgtrigger
from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class ChainedEvent(models.Model):
    """What every audit event has: who, what, when, from where, and its place in a hash chain.

    Rows are only ever inserted (``audit.chain`` computes ``hash``); on PostgreSQL each
    concrete model's trigger refuses UPDATE and DELETE.
    """

    kind = models.CharField(max_length=64)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    data = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        abstract = True


APPEND_ONLY = pgtrigger.Protect(name="append_only", operation=pgtrigger.Update | pgtrigger.Delete)


class SystemEvent(ChainedEvent):
    """The system audit trail: what is not about one case, append-only in one hash chain."""

    seq = models.PositiveIntegerField(unique=True)

    class Meta:
        verbose_name = _("system event")
        verbose_name_plural = _("system events")
        ordering = ["seq"]
        # Sign-in lock-outs are lifted on the system trail's record; the permission lives here.
        permissions = [("lift_sign_in_lockout", _("Can see and lift sign-in lock-outs"))]
        # The table kept its name when the trail moved here from the activation app.
        db_table = "activation_systemevent"
        triggers = [APPEND_ONLY]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind}"
