"""The signals of one evaluation, each read only when a rule of the rule set asks for it."""

from datetime import timedelta
from functools import cached_property
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Case, Value, When
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.models import User

from . import fingerprint
from .facts import ClientFacts
from .models import CaseOutcome, Decision, Evaluation, KnownDevice, ListEntry, Moment
from .network import NetworkFacts, network_facts

# A customer's known devices compared by fingerprint, newest first.
KNOWN_DEVICES_COMPARED = 20
# A device id younger than this counts as fresh: its look is counted (see ``Signals.look``).
FRESH_DEVICE_SECONDS = 3600
# The velocity's counts, in the order the query selects them.
VELOCITY_NAMES = (
    "look_customers",
    *(
        name
        for key in ("phone", "device", "prefix")
        for name in (f"{key}_requested", f"{key}_failed")
        + ((f"{key}_customers",) if key != "phone" else ())
    ),
)
# The decisions an attempt's earlier evaluations are counted for (allow needs no count).
DECISIONS_COUNTED = (Decision.STEP_UP, Decision.REVIEW, Decision.BLOCK)


def pseudonym(value: str) -> str:
    """A keyed hash that lets staff see "the same device" without the value itself."""
    if not value:
        return ""
    return salted_hmac("risk.signal", value, secret=settings.SECRET_KEY).hexdigest()[:16]


def _days_since(moment) -> float | None:
    return None if moment is None else (timezone.now() - moment).total_seconds() / 86400


class Signals:
    """Everything the rules may look at for one customer at one moment."""

    def __init__(
        self,
        *,
        moment: str,
        customer: User,
        facts: ClientFacts,
        case_id: int | None = None,
        channel: str = "",
        code_result: str = "",
        now=None,
        attempt_since=None,
        lockout_days: frozenset[int] = frozenset(),
    ) -> None:
        self.moment = moment
        self.customer = customer
        self.facts = facts
        self.case_id = case_id
        self.channel = channel
        self.code_result = code_result
        self.now = now or timezone.now()
        self.attributes = fingerprint.attributes(facts)
        # When the case's verification attempt began (its earlier decisions are read with the
        # counts), and the windows of the lock-out rules that will run (counted with them too).
        self.attempt_since = attempt_since
        self.lockout_days = lockout_days

    # --- device -----------------------------------------------------------------------------
    @cached_property
    def known_devices(self) -> list[KnownDevice]:
        # The cookie's own device first, however long ago it was last seen, then the newest.
        this_device = Case(
            When(device_id=self.facts.device_key or None, then=Value(1)), default=Value(0)
        )
        return list(
            KnownDevice.objects.filter(customer=self.customer)
            .select_related("device")
            .order_by(this_device.desc(), "-last_seen")[:KNOWN_DEVICES_COMPARED]
        )

    @cached_property
    def device_recognition(self) -> tuple[str, KnownDevice | None]:
        """("cookie" | "fingerprint" | "", the known device it matched)."""
        verified = [known for known in self.known_devices if known.verified_at]
        if self.facts.device_cookie == "valid":
            for known in verified:
                if known.device_id == self.facts.device_key:
                    return "cookie", known
        best, best_score = None, 0.0
        for known in verified:
            score = fingerprint.similarity(self.attributes, known.device.attributes)
            if score > best_score:
                best, best_score = known, score
        if best is not None and best_score >= settings.RISK_FINGERPRINT_MATCH:
            return "fingerprint", best
        return "", None

    @property
    def device_recognised(self) -> bool:
        return bool(self.device_recognition[0])

    @property
    def device_known_by_cookie(self) -> bool:
        """Recognised by our signed cookie, not merely by looking alike."""
        return self.device_recognition[0] == "cookie"

    @property
    def device_trusted(self) -> bool:
        """This very device (its cookie) is one the customer proved themselves on."""
        return any(
            known.device_id == self.facts.device_key and known.verified_at
            for known in self.known_devices
        )

    @property
    def has_verified_devices(self) -> bool:
        return any(known.verified_at for known in self.known_devices)

    @property
    def new_device(self) -> bool:
        """Not recognised, while the customer has proved themselves on other devices before."""
        return self.has_verified_devices and not self.device_recognised

    @cached_property
    def look(self) -> str:
        """The device's look when its id is fresh (new, tampered, or under an hour old): what a
        phone that drops its cookie between accounts keeps showing. "" otherwise."""
        fresh = (
            self.facts.device_cookie != "valid"
            or self.facts.device_cookie_age < FRESH_DEVICE_SECONDS
        )
        return fingerprint.look(self.attributes) if fresh else ""

    # --- network ----------------------------------------------------------------------------
    @cached_property
    def network(self) -> NetworkFacts:
        return network_facts(self.facts.ip_address)

    @cached_property
    def address_changed(self) -> bool:
        """The code of this case was asked for from another network than this one."""
        if self.moment != Moment.CODE_SUBMIT or not self.case_id:
            return False
        requested = (
            Evaluation.objects.filter(case_id=self.case_id, moment=Moment.CODE_REQUEST)
            .order_by("-created_at")
            .values_list("ip_prefix", flat=True)
            .first()
        )
        return requested is not None and requested != self.network.prefix

    # --- account ----------------------------------------------------------------------------
    @property
    def account_age_days(self) -> float:
        return _days_since(self.customer.date_joined) or 0.0

    @property
    def phone_changed_days(self) -> float | None:
        return _days_since(self.customer.phone_number_changed_at)

    @property
    def email_changed_days(self) -> float | None:
        return _days_since(self.customer.email_changed_at)

    @property
    def password_reset_days(self) -> float | None:
        return _days_since(self.customer.password_reset_at)

    @cached_property
    def channel_switched(self) -> bool:
        if not self.channel:
            return False
        last = (
            Evaluation.objects.filter(
                customer=self.customer, moment=Moment.CODE_SUBMIT, code_result="ok"
            )
            .order_by("-created_at")
            .values_list("channel", flat=True)
            .first()
        )
        return last is not None and last != self.channel

    def lockouts(self, days: int) -> int:
        if days in self.lockout_days:
            return self.counts[f"lockouts_{days}"]
        return Evaluation.objects.filter(
            customer=self.customer,
            moment=Moment.CODE_SUBMIT,
            code_result="too_many_attempts",
            created_at__gte=self.now - timedelta(days=days),
        ).count()

    @property
    def fraud_confirmed_before(self) -> bool:
        return self.counts["fraud_confirmed"] > 0

    @property
    def listed(self) -> str:
        """ "device" or "phone" when staff put this device or the customer's number on the block
        list (the device first), "" otherwise."""
        for kind in ("device", "phone"):
            if self.counts[f"listed_{kind}"]:
                return kind
        return ""

    @property
    def earlier_decisions(self) -> frozenset[str]:
        """The decisions other than allow taken on this case since ``attempt_since``."""
        return frozenset(
            decision for decision in DECISIONS_COUNTED if self.counts.get(f"earlier_{decision}")
        )

    # --- velocity ---------------------------------------------------------------------------
    @cached_property
    def velocity(self) -> dict[str, int]:
        """Counts over the last hour and the last day.

        ``*_requested`` and ``*_failed``: codes asked for and wrong codes in the last hour, per
        device, address prefix and phone number (the customer's); ``*_customers``: distinct
        customers on the device and on the prefix in 24 hours, this one included. Earlier
        evaluations only: the one being made is not yet written.
        """
        return {name: self.counts[name] for name in VELOCITY_NAMES}

    @cached_property
    def counts(self) -> dict[str, int]:
        """Everything an evaluation counts in the database, in one query: the velocity (over
        three indexes), the lock-outs, confirmed fraud, the staff block list and this attempt's
        earlier decisions (each an indexed subquery). Written in SQL because the ORM spent more
        time compiling these filtered counts than the database spent on them, and in one
        statement because each round trip costs more than the count.
        """
        ops = connection.ops
        hour = ops.adapt_datetimefield_value(self.now - timedelta(hours=1))
        day = ops.adapt_datetimefield_value(self.now - timedelta(hours=24))
        # A missing key is NULL, which equals nothing.
        keys = {
            "phone": ("customer_id", self.customer.pk),
            "device": ("device_id", self.facts.device_key or None),
            "prefix": ("ip_prefix", self.network.prefix or None),
        }
        columns, params = [], []
        # Fresh devices of one look on this network: one phone dropping its cookie per account.
        # Other ids only: a phone that keeps its cookie is counted by the device's crowd.
        columns.append(
            "COUNT(DISTINCT customer_id) FILTER (WHERE look = %s AND ip_prefix = %s"
            " AND customer_id <> %s AND (device_id IS NULL OR device_id <> %s))"
        )
        params += [
            self.look or None,
            self.network.prefix or None,
            self.customer.pk,
            self.facts.device_key or "",
        ]
        for key, (column, value) in keys.items():
            columns.append(
                f"COUNT(*) FILTER (WHERE {column} = %s AND created_at >= %s"
                f" AND moment = '{Moment.CODE_REQUEST}')"
            )
            params += [value, hour]
            columns.append(
                f"COUNT(*) FILTER (WHERE {column} = %s AND created_at >= %s"
                f" AND moment = '{Moment.CODE_SUBMIT}' AND code_failed)"
            )
            params += [value, hour]
            if key != "phone":
                columns.append(
                    f"COUNT(DISTINCT customer_id) FILTER (WHERE {column} = %s"
                    " AND customer_id <> %s)"
                )
                params += [value, self.customer.pk]
        extra_names, extra_columns = self._other_counts(params)
        columns += extra_columns
        # Only our own column names and constants are formatted in; every value is a parameter.
        sql = (
            f"SELECT {', '.join(columns)} FROM {Evaluation._meta.db_table}"  # noqa: S608
            # Each arm matches one index, (key, created_at), so a long history is never read.
            " WHERE (customer_id = %s AND created_at >= %s)"
            " OR (device_id = %s AND created_at >= %s)"
            " OR (ip_prefix = %s AND created_at >= %s)"
            " OR (look = %s AND created_at >= %s)"
        )
        for _column, value in keys.values():
            params += [value, day]
        params += [self.look or None, day]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        names = [*VELOCITY_NAMES, *extra_names]
        result = {name: int(value or 0) for name, value in zip(names, row, strict=True)}
        for key in ("device", "prefix", "look"):
            result[f"{key}_customers"] += 1  # this customer
        return result

    def _other_counts(self, params: list[Any]) -> tuple[list[str], list[str]]:
        """The counts beside the velocity, as scalar subqueries (their parameters appended)."""
        ops = connection.ops
        evaluations = Evaluation._meta.db_table
        names, columns = [], []
        for days in sorted(self.lockout_days):
            names.append(f"lockouts_{days}")
            columns.append(
                f"(SELECT COUNT(*) FROM {evaluations} WHERE customer_id = %s"  # noqa: S608
                " AND moment = %s AND code_result = %s AND created_at >= %s)"
            )
            since = ops.adapt_datetimefield_value(self.now - timedelta(days=days))
            params += [self.customer.pk, Moment.CODE_SUBMIT, "too_many_attempts", since]
        case_model = CaseOutcome._meta.get_field("case").related_model
        line_model = case_model._meta.get_field("credit_line").related_model
        names.append("fraud_confirmed")
        columns.append(
            f"(SELECT COUNT(*) FROM {CaseOutcome._meta.db_table} outcome"  # noqa: S608
            f" JOIN {case_model._meta.db_table} c ON c.id = outcome.case_id"
            f" JOIN {line_model._meta.db_table} line ON line.id = c.credit_line_id"
            " WHERE line.customer_id = %s AND outcome.outcome = %s)"
        )
        params += [self.customer.pk, CaseOutcome.Outcome.FRAUD]
        listed = {
            "device": self.facts.device_key or None,
            "phone": str(self.customer.phone_number or "-"),
        }
        for kind, value in listed.items():
            names.append(f"listed_{kind}")
            columns.append(
                f"(SELECT COUNT(*) FROM {ListEntry._meta.db_table}"  # noqa: S608
                " WHERE kind = %s AND value = %s AND status = %s)"
            )
            params += [kind, value, ListEntry.Status.ACTIVE]
        if self.case_id and self.attempt_since is not None:
            since = ops.adapt_datetimefield_value(self.attempt_since)
            for decision in DECISIONS_COUNTED:
                names.append(f"earlier_{decision}")
                columns.append(
                    f"(SELECT COUNT(*) FROM {evaluations} WHERE case_id = %s"  # noqa: S608
                    " AND created_at >= %s AND decision = %s)"
                )
                params += [self.case_id, since, decision]
        return names, columns

    # --- the record -------------------------------------------------------------------------
    def recorded(self) -> dict[str, Any]:
        """What the timeline keeps of the signals the rules read: identifying values hashed."""
        data: dict[str, Any] = {
            "device": pseudonym(self.facts.device_key),
            "device_cookie": self.facts.device_cookie,
            "device_recognised": self.device_recognition[0],
            "network": {
                "prefix": pseudonym(self.network.prefix),
                "listed": self.network.listed,
                "country": self.network.country,
                "asn": self.network.asn,
            },
            "browser": self.attributes.get("browser", ""),
            "os": self.attributes.get("os", ""),
        }
        if "velocity" in self.__dict__:
            data["velocity"] = self.velocity
        if self.facts.posted_malformed:
            data["device_facts"] = "malformed"
        return data
