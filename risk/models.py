"""The checkpoint's data: devices, rule sets, evaluations, staff outcomes and lists."""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Moment(models.TextChoices):
    SIGN_IN = "sign_in", _("Sign-in")
    CODE_REQUEST = "code_request", _("Code request")
    CODE_SUBMIT = "code_submit", _("Code submit")


class Decision(models.TextChoices):
    """Ordered from mildest to strongest; ``DECISION_ORDER`` compares them."""

    ALLOW = "allow", _("Allow")
    STEP_UP = "step_up", _("Ask for a stronger factor")
    REVIEW = "review", _("Hand to staff for review")
    BLOCK = "block", _("Block")


DECISION_ORDER = {decision: rank for rank, decision in enumerate(Decision)}


def strongest(*decisions: str) -> str:
    return max(decisions, key=DECISION_ORDER.__getitem__, default=Decision.ALLOW)


class Device(models.Model):
    """A browser or app installation, known by the id in its signed first-party cookie."""

    key = models.CharField(max_length=64, primary_key=True)
    # The stable client attributes last seen with this id (see ``risk.fingerprint``).
    attributes = models.JSONField(default=dict)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("device")
        verbose_name_plural = _("devices")

    def __str__(self) -> str:
        return self.key[:12]


class KnownDevice(models.Model):
    """A device a customer used; ``verified_at`` once they proved themselves on it."""

    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="known_devices"
    )
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="customers")
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("known device")
        verbose_name_plural = _("known devices")
        constraints = [
            models.UniqueConstraint(fields=["customer", "device"], name="one_known_device_row")
        ]
        indexes = [models.Index(fields=["customer", "-last_seen"])]

    def __str__(self) -> str:
        return f"{self.customer_id}:{self.device_id[:12]}"


class RuleSetVersion(models.Model):
    """One version of the rule set: its rules and the thresholds that turn scores into decisions.

    A version is edited while it is a draft; proposing freezes it; a second person publishes it
    (live) or a single person runs it in shadow, where it only records what it would decide.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        PROPOSED = "proposed", _("Waiting for a second person")
        SHADOW = "shadow", _("Shadow (records only)")
        LIVE = "live", _("Live")
        RETIRED = "retired", _("Retired")

    number = models.PositiveIntegerField(_("version"), unique=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.DRAFT
    )
    step_up_at = models.PositiveIntegerField(
        _("step up at score"), help_text=_("A total score at or above this asks for more proof.")
    )
    review_at = models.PositiveIntegerField(
        _("review at score"), help_text=_("A total score at or above this hands the case to staff.")
    )
    note = models.CharField(_("what changed"), max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("rule set version")
        verbose_name_plural = _("rule set versions")
        ordering = ["-number"]
        permissions = [
            ("view_risk", _("Can see risk evaluations, rules and lists")),
            ("edit_rules", _("Can edit and propose rule set versions")),
            ("publish_rules", _("Can publish a rule set version another person proposed")),
            ("record_risk_outcome", _("Can record the outcome of a reviewed case")),
            ("manage_risk_lists", _("Can propose and approve list changes")),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="live"), name="one_live_rule_set"
            ),
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="shadow"), name="one_shadow_rule_set"
            ),
        ]

    def __str__(self) -> str:
        return f"v{self.number} ({self.get_status_display()})"


class Rule(models.Model):
    """A rule of a predefined kind (``risk.rules.KINDS``) with its parameters and score."""

    version = models.ForeignKey(RuleSetVersion, on_delete=models.CASCADE, related_name="rules")
    kind = models.CharField(_("kind"), max_length=40)
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    score = models.PositiveIntegerField(_("score"))
    enabled = models.BooleanField(_("enabled"), default=True)

    class Meta:
        verbose_name = _("rule")
        verbose_name_plural = _("rules")
        ordering = ["version", "pk"]

    def __str__(self) -> str:
        return f"{self.kind} {self.params} +{self.score}"


class Evaluation(models.Model):
    """One pass through the checkpoint: what was seen, which rules fired, what was decided."""

    moment = models.CharField(max_length=16, choices=Moment.choices)
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="risk_evaluations"
    )
    case = models.ForeignKey(
        "activation.ActivationCase",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="risk_evaluations",
    )
    device = models.ForeignKey(Device, on_delete=models.SET_NULL, null=True, related_name="+")
    ip_prefix = models.CharField(max_length=64, blank=True)
    # A hash of the device's look (model, browser, system, screen, time zone, …): one phone that
    # drops its cookie between accounts still looks the same (see risk.fingerprint.look).
    look = models.CharField(max_length=32, blank=True)
    channel = models.CharField(max_length=16, blank=True)
    # The code's result at a submit ("ok", "code_invalid" …), for the failed-code counters.
    code_result = models.CharField(max_length=32, blank=True)
    code_failed = models.BooleanField(default=False)
    version = models.ForeignKey(
        RuleSetVersion, on_delete=models.PROTECT, null=True, related_name="evaluations"
    )
    score = models.PositiveIntegerField(default=0)
    decision = models.CharField(max_length=16, choices=Decision.choices)
    shadow_version = models.ForeignKey(
        RuleSetVersion, on_delete=models.PROTECT, null=True, related_name="shadow_evaluations"
    )
    shadow_score = models.PositiveIntegerField(null=True)
    shadow_decision = models.CharField(max_length=16, choices=Decision.choices, blank=True)
    # The signals as recorded on the timeline: identifying values hashed.
    signals = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("risk evaluation")
        verbose_name_plural = _("risk evaluations")
        indexes = [
            models.Index(fields=["device", "created_at"]),
            models.Index(fields=["ip_prefix", "created_at"]),
            models.Index(fields=["look", "created_at"]),
            models.Index(fields=["customer", "created_at"]),
            models.Index(fields=["case", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.moment} {self.decision} ({self.score})"


class FiredRule(models.Model):
    """A rule that fired in an evaluation, live or shadow; the rules page counts these."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="fired")
    rule = models.ForeignKey(Rule, on_delete=models.PROTECT, related_name="firings")
    shadow = models.BooleanField(default=False)
    score = models.PositiveIntegerField()

    class Meta:
        verbose_name = _("fired rule")
        verbose_name_plural = _("fired rules")

    def __str__(self) -> str:
        return f"{self.rule_id}+{self.score}"


class CaseOutcome(models.Model):
    """What staff concluded about a case the checkpoint stopped or flagged."""

    class Outcome(models.TextChoices):
        FRAUD = "fraud", _("Confirmed fraud")
        LEGITIMATE = "legitimate", _("Legitimate (false alarm)")

    case = models.OneToOneField(
        "activation.ActivationCase", on_delete=models.PROTECT, related_name="risk_outcome"
    )
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    note = models.CharField(_("note"), max_length=500, blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("risk outcome")
        verbose_name_plural = _("risk outcomes")

    def __str__(self) -> str:
        return f"{self.case_id}: {self.outcome}"


class ListEntry(models.Model):
    """A device or phone number staff blocked, or a network range marked as VPN, proxy or hosting.

    Block entries take effect only once a second person approves them; ranges at once.
    """

    class Kind(models.TextChoices):
        DEVICE = "device", _("Blocked device")
        PHONE = "phone", _("Blocked phone number")
        NETWORK = "network", _("VPN, proxy or hosting range")

    class Status(models.TextChoices):
        PROPOSED = "proposed", _("Waiting for a second person")
        ACTIVE = "active", _("Active")
        REJECTED = "rejected", _("Rejected")
        REMOVED = "removed", _("Removed")

    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    # A device key, a phone number in E.164, or a CIDR range.
    value = models.CharField(_("value"), max_length=64)
    label = models.CharField(
        _("label"), max_length=16, blank=True, help_text=_("vpn, proxy or hosting")
    )
    reason = models.CharField(_("reason"), max_length=500)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PROPOSED
    )
    case = models.ForeignKey(
        "activation.ActivationCase",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    # Lifting a block takes two people too: one proposes it (the block keeps applying), another
    # carries it out.
    removal_proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    removal_proposed_at = models.DateTimeField(null=True, blank=True)
    removal_reason = models.CharField(_("reason for lifting"), max_length=500, blank=True)
    removed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("list entry")
        verbose_name_plural = _("list entries")
        indexes = [models.Index(fields=["kind", "value", "status"])]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "value"],
                condition=models.Q(status__in=["proposed", "active"]),
                name="one_open_list_entry",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.value}"
