from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models.functions import Right
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from phonenumber_field.modelfields import PhoneNumberField

# Fields whose changes ``User.save`` stamps, and where.
TRACKED = {
    "phone_number": "phone_number_changed_at",
    "email": "email_changed_at",
}


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

    # When the phone number or e-mail last changed and the password was last reset by SMS: the
    # risk checkpoint reads them (a new device right after a number change is a SIM swap).
    phone_number_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    email_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    password_reset_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When the password last changed, however: app sessions and staff API tokens from before
    # it stop working (whoever knew the old password keeps nothing it opened).
    password_changed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        verbose_name = _("user")
        verbose_name_plural = _("users")
        indexes = [
            # The back office finds a customer by the last 4 digits of the phone number; a
            # LIKE '%1234' would read every customer.
            models.Index(Right("phone_number", 4), name="user_phone_last_digits"),
        ]

    def __str__(self) -> str:
        return self.username

    @classmethod
    def from_db(cls, db, field_names, values):
        user = super().from_db(db, field_names, values)
        user._loaded_contacts = {
            name: str(user.__dict__[name] or "") for name in TRACKED if name in user.__dict__
        }
        return user

    def save(self, *args, **kwargs) -> None:
        # Whoever changes a number or an address (a form, the admin, a script), the time is kept.
        loaded = getattr(self, "_loaded_contacts", {})
        changed = []
        for name, stamp in TRACKED.items():
            if name in loaded and loaded[name] != str(self.__dict__.get(name) or ""):
                setattr(self, stamp, timezone.now())
                changed.append(stamp)
        # set_password() leaves the new raw password in ``_password`` until the save; Django's
        # rehash of an unchanged password on sign-in (a new hasher default) clears it first,
        # so an upgrade of the hash is not a change of the password.
        if self._password is not None and not self._state.adding:
            self.password_changed_at = timezone.now()
            changed.append("password_changed_at")
        if changed and kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], *changed}
        super().save(*args, **kwargs)
        self._loaded_contacts = {
            name: str(self.__dict__[name] or "") for name in TRACKED if name in self.__dict__
        }
