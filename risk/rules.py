"""The kinds of rule a rule set may hold: predefined, parameterised, explained in both languages.

A rule in the database names one of these kinds and carries parameters that the kind checks on
save. Nothing from the database is ever run as code or as an expression: a kind is a function
here, and its parameters are numbers, choices and lists of codes.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .network import NETWORK_LABELS

# What a customer is told when a rule asks for more proof. Never an accusation: only what we
# do not recognise, or that there were many tries; the default when a rule has no hint of its own.
HINTS = {
    "device": _("We do not recognise this phone or computer."),
    "network": _("You seem to be connecting through a network we cannot check, such as a VPN."),
    "account": _("Your account details changed recently."),
    "velocity": _("There have been many tries from here in a short time."),
    "default": _("We need to make sure it is really you."),
}

KEYS = {
    "device": _("this device"),
    "prefix": _("this network"),
    "phone": _("this phone number"),
    "look": _("new devices that look like this one on this network"),
}
COUNTERS = {"requested": _("Codes requested"), "failed": _("Wrong codes")}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "int", "choice", "choices", "codes", "ints"
    label: Any
    minimum: int = 0
    maximum: int = 1_000_000
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Kind:
    code: str
    label: Any  # what the rule does, for staff
    reason: Any  # why it fired, for staff and the timeline, with the parameters filled in
    hint: str  # a key of HINTS
    params: tuple[Param, ...]
    fires: Callable[[Any, dict], bool]
    # Network facts alone may add score but must never, alone, ask for more (see ``validate``).
    network_only: bool = False


def _days(signals_days: float | None, days: int) -> bool:
    return signals_days is not None and signals_days <= days


KINDS: dict[str, Kind] = {
    kind.code: kind
    for kind in [
        Kind(
            "new_device",
            _("Device not recognised (the customer has used other devices)"),
            _("This device is not one the customer proved themselves on before."),
            "device",
            (),
            lambda s, p: s.new_device,
        ),
        Kind(
            "phone_changed_new_device",
            _("Phone number changed recently, on a device not recognised by its cookie"),
            _("The phone number changed within %(days)s days and this device is not recognised."),
            "account",
            (Param("days", "int", _("days"), 1, 365),),
            # Only the cookie counts here: a look-alike of the victim's phone must not pass.
            lambda s, p: not s.device_known_by_cookie and _days(s.phone_changed_days, p["days"]),
        ),
        Kind(
            "email_changed_new_device",
            _("E-mail address changed recently, on a device not recognised by its cookie"),
            _("The e-mail address changed within %(days)s days and this device is not recognised."),
            "account",
            (Param("days", "int", _("days"), 1, 365),),
            lambda s, p: not s.device_known_by_cookie and _days(s.email_changed_days, p["days"]),
        ),
        Kind(
            "password_reset_new_device",
            _("Password reset recently, on a device not recognised by its cookie"),
            _("The password was reset within %(days)s days and this device is not recognised."),
            "account",
            (Param("days", "int", _("days"), 1, 365),),
            lambda s, p: (
                s.has_verified_devices
                and not s.device_known_by_cookie
                and _days(s.password_reset_days, p["days"])
            ),
        ),
        Kind(
            "young_account",
            _("Account opened recently"),
            _("The account is less than %(days)s days old."),
            "account",
            (Param("days", "int", _("days"), 1, 365),),
            lambda s, p: s.account_age_days < p["days"],
        ),
        Kind(
            "network_listed",
            _("Address on the VPN, proxy or hosting list"),
            _("The address is in a range listed as %(labels)s."),
            "network",
            (Param("labels", "choices", _("labels"), choices=NETWORK_LABELS),),
            lambda s, p: s.network.listed in p["labels"],
            network_only=True,
        ),
        Kind(
            "country_not_in",
            _("Address outside the expected countries"),
            _("The address is outside %(countries)s."),
            "network",
            (Param("countries", "codes", _("countries (ISO codes)")),),
            lambda s, p: bool(s.network.country) and s.network.country not in p["countries"],
            network_only=True,
        ),
        Kind(
            "asn_in",
            _("Address in listed networks (ASN)"),
            _("The address belongs to one of the networks %(asns)s."),
            "network",
            (Param("asns", "ints", _("AS numbers"), 1, 4_294_967_295),),
            lambda s, p: s.network.asn is not None and s.network.asn in p["asns"],
            network_only=True,
        ),
        Kind(
            "address_changed",
            _("Address changed between asking for the code and entering it"),
            _("The code was asked for from another network than the one it was entered from."),
            "network",
            (),
            lambda s, p: s.address_changed,
            network_only=True,
        ),
        Kind(
            "many_customers",
            _("Many customers on one device or network in 24 hours"),
            _("Customers on %(key)s in 24 hours: more than %(more_than)s."),
            "velocity",
            (
                Param("key", "choice", _("counted per"), choices=("device", "prefix", "look")),
                Param("more_than", "int", _("more than"), 1, 100_000),
            ),
            lambda s, p: s.velocity[f"{p['key']}_customers"] > p["more_than"],
        ),
        Kind(
            "code_velocity",
            _("Many codes requested or failed in an hour"),
            _("%(counter)s for %(key)s in one hour: more than %(more_than)s."),
            "velocity",
            (
                Param("counter", "choice", _("counter"), choices=tuple(COUNTERS)),
                Param("key", "choice", _("counted per"), choices=tuple(KEYS)),
                Param("more_than", "int", _("more than"), 0, 100_000),
            ),
            lambda s, p: s.velocity[f"{p['key']}_{p['counter']}"] > p["more_than"],
        ),
        Kind(
            "channel_switched",
            _("Verification channel switched"),
            _("The customer verified with another channel last time."),
            "account",
            (),
            lambda s, p: s.channel_switched,
        ),
        Kind(
            "earlier_lockouts",
            _("Earlier lock-outs"),
            _("%(at_least)s or more lock-outs in the last %(days)s days."),
            "velocity",
            (
                Param("at_least", "int", _("at least"), 1, 1000),
                Param("days", "int", _("days"), 1, 365),
            ),
            lambda s, p: s.lockouts(p["days"]) >= p["at_least"],
        ),
        Kind(
            "fraud_confirmed_before",
            _("Staff confirmed fraud on another case of this customer"),
            _("Staff recorded confirmed fraud on an earlier case of this customer."),
            "default",
            (),
            lambda s, p: s.fraud_confirmed_before,
        ),
        Kind(
            "bad_device_facts",
            _("Tampered device cookie or malformed device facts"),
            _("The device cookie had a bad signature or the device facts were malformed."),
            "device",
            (),
            lambda s, p: s.facts.device_cookie == "tampered" or s.facts.posted_malformed,
        ),
    ]
}


def is_network_rule(kind_code: str, params: dict[str, Any]) -> bool:
    """Whether a rule reads only the network: a network kind, or a crowd or velocity counted
    per address prefix (the look crowd is counted per prefix too). Such rules never make a
    decision on their own (see ``risk.services.checkpoint._run``)."""
    kind = KINDS.get(kind_code)
    return kind is not None and (kind.network_only or params.get("key") in ("prefix", "look"))


def _check_param(param: Param, value: Any) -> Any:
    if param.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(
                _("%(name)s must be a whole number."), params={"name": param.label}
            )
        if not param.minimum <= value <= param.maximum:
            raise ValidationError(
                _("%(name)s must be between %(min)s and %(max)s."),
                params={"name": param.label, "min": param.minimum, "max": param.maximum},
            )
        return value
    if param.kind == "choice":
        if value not in param.choices:
            raise ValidationError(
                _("%(name)s must be one of %(choices)s."),
                params={"name": param.label, "choices": ", ".join(param.choices)},
            )
        return value
    if not isinstance(value, list) or not value or len(value) > 200:
        raise ValidationError(
            _("%(name)s must be a list of 1 to 200 items."), params={"name": param.label}
        )
    if param.kind == "choices":
        for item in value:
            _check_param(Param(param.name, "choice", param.label, choices=param.choices), item)
        return sorted(set(value))
    if param.kind == "codes":
        if not all(
            isinstance(item, str) and len(item) == 2 and item.isascii() and item.isalpha()
            for item in value
        ):
            raise ValidationError(
                _("%(name)s must be two-letter codes."), params={"name": param.label}
            )
        return sorted({item.upper() for item in value})
    return sorted(
        {
            _check_param(Param(param.name, "int", param.label, param.minimum, param.maximum), item)
            for item in value
        }
    )


def clean_params(kind_code: str, params: Any) -> dict[str, Any]:
    """The parameters of a rule of ``kind_code``, checked and normalised, or ValidationError."""
    kind = KINDS.get(kind_code)
    if kind is None:
        raise ValidationError(_("There is no rule kind %(kind)s."), params={"kind": kind_code})
    if not isinstance(params, dict):
        raise ValidationError(_("The parameters must be an object."))
    unknown = set(params) - {param.name for param in kind.params}
    if unknown:
        raise ValidationError(
            _("Unknown parameters: %(names)s."),
            params={"names": ", ".join(sorted(map(str, unknown)))},
        )
    cleaned = {}
    for param in kind.params:
        if param.name not in params:
            raise ValidationError(_("%(name)s is missing."), params={"name": param.label})
        cleaned[param.name] = _check_param(param, params[param.name])
    return cleaned


def reason(kind_code: str, params: dict[str, Any]) -> str:
    """Why a rule fired, in the active language."""
    kind = KINDS[kind_code]
    shown = dict(params)
    if "key" in shown:
        shown["key"] = KEYS.get(shown["key"], shown["key"])
    if "counter" in shown:
        shown["counter"] = COUNTERS.get(shown["counter"], shown["counter"])
    for name in ("labels", "countries", "asns"):
        if name in shown:
            shown[name] = ", ".join(map(str, shown[name]))
    return str(kind.reason) % shown if kind.params else str(kind.reason)


def validate_rule_set(
    rules: list[tuple[str, dict, int]], *, step_up_at: int, review_at: int
) -> None:
    """A rule set's whole-set invariants: thresholds in order, and no network fact alone asking
    for more proof (a VPN or an address change alone never stops anyone)."""
    if not 0 < step_up_at <= review_at:
        raise ValidationError(
            _("The step-up score must be above 0 and not above the review score.")
        )
    network_total = sum(score for code, _params, score in rules if KINDS[code].network_only)
    if network_total >= step_up_at:
        raise ValidationError(
            _(
                "Network rules together score %(total)s, which would ask for more proof on the "
                "network alone; keep them below the step-up score %(step_up)s."
            ),
            params={"total": network_total, "step_up": step_up_at},
        )
