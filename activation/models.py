import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from audit.models import APPEND_ONLY, ChainedEvent


class CreditLine(models.Model):
    """A credit product approved for a customer; its status mirrors the core's."""

    class Status(models.TextChoices):
        INACTIVE = "inactive", _("Not active yet")
        PENDING = "pending", _("Activation pending")
        ACTIVE = "active", _("Active")
        CLOSED = "closed", _("Closed")

    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="credit_lines"
    )
    reference = models.CharField(_("reference"), max_length=32, unique=True)
    product_name = models.CharField(_("product"), max_length=100)
    credit_limit = models.DecimalField(_("credit limit"), max_digits=12, decimal_places=2)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.INACTIVE
    )
    # The highest version the core has reported; anything older is stale news.
    core_version = models.BigIntegerField(default=0)
    core_activation_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("credit line")
        verbose_name_plural = _("credit lines")
        indexes = [
            # The back office's search matches a reference case-insensitively (UPPER(reference)).
            models.Index(Upper("reference"), name="credit_line_reference_upper"),
        ]

    def __str__(self) -> str:
        return f"{self.reference} ({self.product_name})"


class CaseState(models.TextChoices):
    PENDING_VERIFICATION = "pending_verification", _("Waiting for verification")
    SUBMITTING = "submitting", _("Sending to the credit system")
    AWAITING_CONFIRMATION = "awaiting_confirmation", _("Waiting for confirmation")
    FAILED = "failed", _("Failed")
    NEEDS_REVIEW = "needs_review", _("Being reviewed by our staff")
    ACTIVATED = "activated", _("Activated")
    CLOSED = "closed", _("Closed")


TERMINAL_STATES = frozenset({CaseState.ACTIVATED, CaseState.CLOSED})
OPEN_STATES = frozenset(set(CaseState) - TERMINAL_STATES)


class FailureReason(models.TextChoices):
    CODE_EXPIRED = "code_expired", _("The code expired")
    CODE_INVALID = "code_invalid", _("The code was not right")
    TOO_MANY_ATTEMPTS = "too_many_attempts", _("Too many wrong codes")
    DELIVERY_FAILED = "delivery_failed", _("The code could not be delivered")
    CORE_BUSY = "core_busy", _("The credit system was busy")
    CORE_UNAVAILABLE = "core_unavailable", _("The credit system did not answer")
    CORE_REJECTED = "core_rejected", _("The credit system refused the activation")
    SYNC_TIMEOUT = "sync_timeout", _("The credit system did not confirm in time")
    RISK_REVIEW = "risk_review", _("A security check is needed")


class RiskLevel(models.TextChoices):
    LOW = "low", _("Low")
    MEDIUM = "medium", _("Medium")
    HIGH = "high", _("High")


class ActivationCase(models.Model):
    """One effort to get one credit line activated. Change it only through ``services``."""

    credit_line = models.ForeignKey(CreditLine, on_delete=models.PROTECT, related_name="cases")
    state = models.CharField(
        _("state"), max_length=32, choices=CaseState.choices, default=CaseState.FAILED
    )
    failure_reason = models.CharField(
        _("failure reason"), max_length=32, choices=FailureReason.choices, blank=True
    )
    failure_detail = models.CharField(
        _("failure detail"), max_length=200, blank=True, help_text=_("e.g. the core's sub-reason")
    )
    risk_level = models.CharField(
        _("risk level"), max_length=8, choices=RiskLevel.choices, default=RiskLevel.LOW
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="assigned_cases",
    )
    retry_count = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(default=timezone.now)
    state_changed_at = models.DateTimeField(default=timezone.now)
    sla_due_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("activation case")
        verbose_name_plural = _("activation cases")
        permissions = [
            ("work_case", _("Can work cases: assign, note, resubmit, return, close")),
            ("request_override", _("Can request an override")),
            ("approve_override", _("Can approve or reject an override")),
            ("bulk_recover", _("Can resubmit cases in bulk after an outage")),
            ("export_case_history", _("Can export case histories")),
            ("view_pii", _("Can see customers' names and phone numbers in exports")),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["credit_line"],
                condition=~Q(state__in=["activated", "closed"]),
                name="one_open_case_per_credit_line",
            )
        ]
        indexes = [
            models.Index(fields=["state", "state_changed_at"]),
            # The work queue's order (most overdue first, cases without an SLA last; the admin
            # adds -id to make it total), unfiltered and filtered by state or failure reason,
            # so a page of it reads 50 index entries, not every case. PostgreSQL's ascending
            # order puts NULLs last, as the queue asks.
            models.Index(fields=["sla_due_at", "opened_at", "-id"], name="case_queue_order"),
            models.Index(
                fields=["state", "sla_due_at", "opened_at", "-id"], name="case_queue_by_state"
            ),
            models.Index(
                fields=["failure_reason", "sla_due_at", "opened_at", "-id"],
                name="case_queue_by_reason",
                condition=~Q(failure_reason=""),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.credit_line.reference} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


class ActorType(models.TextChoices):
    CUSTOMER = "customer", _("Customer")
    STAFF = "staff", _("Staff")
    SYSTEM = "system", _("System")
    CORE = "core", _("Core credit system")


class CaseEvent(ChainedEvent):
    """One thing that happened to a case; append-only and hash-chained per case."""

    case = models.ForeignKey(ActivationCase, on_delete=models.PROTECT, related_name="events")
    seq = models.PositiveIntegerField()
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    state_before = models.CharField(max_length=32, blank=True)
    state_after = models.CharField(max_length=32, blank=True)
    device_id = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)

    class Meta:
        verbose_name = _("case event")
        verbose_name_plural = _("case events")
        ordering = ["case_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["case", "seq"], name="one_event_per_case_seq")
        ]
        indexes = [
            # The back-office dashboard counts outcomes over the last hours through this
            # index alone: it holds only openings and state changes into an outcome.
            models.Index(
                fields=["created_at", "state_after"],
                name="case_event_outcome_at",
                condition=Q(
                    kind__in=["case.opened", "state.changed"],
                    state_after__in=["activated", "failed", "needs_review", "closed"],
                ),
            )
        ]
        triggers = [APPEND_ONLY]

    def __str__(self) -> str:
        return f"{self.case_id}#{self.seq} {self.kind}"


class CoreRequest(models.Model):
    """An outbox row: a message the portal owes the core, written with the change that needs it."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting to be sent")
        IN_FLIGHT = "in_flight", _("Being sent")
        SUCCEEDED = "succeeded", _("Delivered")
        FAILED = "failed", _("Given up")

    case = models.ForeignKey(ActivationCase, on_delete=models.PROTECT, related_name="core_requests")
    # One key for every retry of one submission, so the core never activates twice.
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("core request")
        verbose_name_plural = _("core requests")
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.idempotency_key} ({self.status})"


# What staff see of a delivery to the core (the back office's case page, the staff API).
CORE_REQUEST_FIELDS = (
    "idempotency_key",
    "status",
    "attempts",
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "created_at",
    "completed_at",
)


class OverrideRequest(models.Model):
    """A step one person may not take alone: an agent asks, a different supervisor decides."""

    class Kind(models.TextChoices):
        MARK_ACTIVATED = "mark_activated", _("Mark activated (the core confirmed out of band)")
        RESUBMIT_UNVERIFIED = "resubmit_unverified", _("Resubmit without customer verification")

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting for approval")
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")

    case = models.ForeignKey(ActivationCase, on_delete=models.PROTECT, related_name="overrides")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason = models.TextField()
    core_reference = models.CharField(max_length=100, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    # The case as the requester saw it: an approval after it moved on is refused.
    case_state_at_request = models.CharField(max_length=32)
    case_changed_at_request = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)

    class Meta:
        verbose_name = _("override request")
        verbose_name_plural = _("override requests")
        constraints = [
            models.UniqueConstraint(
                fields=["case"],
                condition=Q(status="pending"),
                name="one_pending_override_per_case",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for case {self.case_id} ({self.status})"


class CodeSubmission(models.Model):
    """The answer given to one submitted code form, so a resubmission gets the same answer."""

    case = models.ForeignKey(ActivationCase, on_delete=models.CASCADE, related_name="+")
    # A random id printed into each code form: a double tap or a browser retry repeats it.
    submission_id = models.UUIDField(unique=True)
    result = models.CharField(max_length=32)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("code submission")
        verbose_name_plural = _("code submissions")

    def __str__(self) -> str:
        return f"{self.submission_id}: {self.result}"


class CoreCallback(models.Model):
    """A callback received from the core, kept so that a redelivery is recognised."""

    webhook_id = models.CharField(max_length=128, unique=True)
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("core callback")
        verbose_name_plural = _("core callbacks")

    def __str__(self) -> str:
        return self.webhook_id


class CoreSubmissionSwitch(models.Model):
    """The emergency switch: while paused, retries are accepted and queued but not sent."""

    paused = models.BooleanField(default=False)
    reason = models.CharField(max_length=500, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("core submission switch")
        verbose_name_plural = _("core submission switch")
        permissions = [("operate_core_switch", _("Can pause and resume core submissions"))]

    def __str__(self) -> str:
        return "paused" if self.paused else "running"


class CaseExport(models.Model):
    """One export of case histories, and its manifest once the last byte is out."""

    format = models.CharField(max_length=8)
    filters = models.JSONField(default=dict)
    pii = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    manifest = models.JSONField(null=True, blank=True)

    class Meta:
        verbose_name = _("case export")
        verbose_name_plural = _("case exports")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"export {self.pk} ({self.format})"


class BulkRecoveryJob(models.Model):
    """One bulk recovery after an outage: who asked, for which window, and how far it has got."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Waiting for a worker")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Stopped by an error")

    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    since = models.DateTimeField(_("failed since"))
    until = models.DateTimeField(_("failed before"))
    reason = models.CharField(_("reason"), max_length=500)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Cases in the window when the job started; each is then resubmitted or skipped (handled
    # by staff in the meantime), so processed == total once it is done.
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    resubmitted = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    # The highest case id handled: a job picked up again after a lost worker goes on from here.
    last_case_id = models.BigIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        verbose_name = _("bulk recovery job")
        verbose_name_plural = _("bulk recovery jobs")
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"bulk recovery {self.pk} ({self.status})"

    @property
    def in_progress(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def percent_done(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        return int(100 * self.processed / self.total) if self.total else 0
