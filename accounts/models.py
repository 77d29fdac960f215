from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _
from phonenumber_field.modelfields import PhoneNumberField


class User(AbstractUser):
    """A customer or a staff member; staff are told apart by ``is_staff`` and their groups."""

    # Stored in E.164 (+8613812345678) after validation by the phonenumbers library.
    phone_number = PhoneNumberField(_("phone number"), blank=True, null=True, unique=True)
    customer_reference = models.CharField(
        _("customer reference"),
        max_length=32,
        blank=True,
        null=True,
        unique=True,
        help_text=_("The core credit system's id for this customer, e.g. C-000045."),
    )
    preferred_language = models.CharField(
        _("preferred language"),
        max_length=16,
        blank=True,
        help_text=_("The language of the pages the customer last used; SMS follow it."),
    )

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        verbose_name = _("user")
        verbose_name_plural = _("users")

    def __str__(self) -> str:
        return self.username
