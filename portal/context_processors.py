"""Template context shared by every page rendered with a request."""

from functools import cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from django.templatetags.static import static
from django.urls import get_script_prefix, reverse
from django.utils.translation import get_language_info


def layout(request: HttpRequest) -> dict[str, dict[str, object]]:
    """Give ``base.html`` what it shows alike to everyone on every page, worked out once."""
    # Per script prefix, as reverse() itself reads it: the portal mounted under a path gets its
    # own links. Nothing here depends on the user, the session or the language.
    return {"layout": _layout(get_script_prefix())}


@cache
def _layout(script_prefix: str) -> dict[str, object]:
    """The layout's links, static files and languages (each language by its own name)."""
    return {
        "home_url": reverse("home"),
        "help_url": reverse("help"),
        "profile_url": reverse("profile"),
        "logout_url": reverse("logout"),
        "set_language_url": reverse("set_language"),
        "site_css": static("css/site.css"),
        "scripts": tuple(static(f"js/{name}.js") for name in ("progress", "device", "passkey")),
        "languages": tuple(
            (code, get_language_info(code)["name_local"]) for code, _name in settings.LANGUAGES
        ),
    }


# What the layout is worked out from: a test that overrides one of them sees its own layout.
_LAYOUT_SETTINGS = frozenset(
    {"LANGUAGES", "STATIC_URL", "STORAGES", "ROOT_URLCONF", "FORCE_SCRIPT_NAME"}
)


@receiver(setting_changed)
def _forget_layout(*, setting: str, **kwargs: object) -> None:
    if setting in _LAYOUT_SETTINGS:
        _layout.cache_clear()
