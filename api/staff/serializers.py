"""What the staff API reads and writes. Outputs are built from plain dicts (``presenters``), so
each field's type here is exactly what the OpenAPI document says."""

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from activation.models import (
    ActorType,
    CaseState,
    CoreRequest,
    FailureReason,
    OverrideRequest,
    RiskLevel,
)

# A search term longer than any case id, reference or phone number finds nothing.
MAX_SEARCH_LENGTH = 100
EXPORT_FORMATS = [("csv", "CSV"), ("jsonl", "JSON Lines")]


# --- The queue -----------------------------------------------------------------------


class StaffQueueFilterSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=CaseState.choices, required=False)
    failure_reason = serializers.ChoiceField(choices=FailureReason.choices, required=False)
    assignee = serializers.RegexField(
        r"^(me|none|[1-9][0-9]{0,17})$",
        required=False,
        help_text=_('"me", "none" (unassigned) or a staff member\'s id.'),
    )
    q = serializers.CharField(
        required=False,
        max_length=MAX_SEARCH_LENGTH,
        help_text=_("Case id, credit-line reference, phone number or its last 4 digits."),
    )


class StaffMemberSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class StaffCaseSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reference = serializers.CharField(help_text=_("The credit line's reference."))
    customer_phone = serializers.CharField(help_text=_("Always masked."))
    state = serializers.ChoiceField(choices=CaseState.choices)
    failure_reason = serializers.CharField(help_text=_("Empty when the case has not failed."))
    risk_level = serializers.ChoiceField(choices=RiskLevel.choices)
    assignee = StaffMemberSerializer(allow_null=True)
    opened_at = serializers.DateTimeField()
    sla_due_at = serializers.DateTimeField(allow_null=True)


class StaffCasePageSerializer(serializers.Serializer):
    """One page of the queue; follow ``next`` for the one after it."""

    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = StaffCaseSummarySerializer(many=True)


# --- One case -----------------------------------------------------------------------


class StaffCaseEventSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    actor_type = serializers.ChoiceField(choices=ActorType.choices)
    actor = serializers.CharField(
        allow_null=True, help_text=_("Staff by username; a customer masked without view_pii.")
    )
    kind = serializers.CharField()
    state_before = serializers.CharField()
    state_after = serializers.CharField()
    data = serializers.JSONField()
    ip_address = serializers.CharField(allow_null=True)
    device_id = serializers.CharField()
    hash = serializers.CharField()


class StaffCoreRequestSerializer(serializers.Serializer):
    idempotency_key = serializers.UUIDField()
    status = serializers.ChoiceField(choices=CoreRequest.Status.choices)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)


class StaffOverrideSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=OverrideRequest.Kind.choices)
    status = serializers.ChoiceField(choices=OverrideRequest.Status.choices)
    reason = serializers.CharField()
    core_reference = serializers.CharField()
    requested_by = serializers.CharField()
    requested_at = serializers.DateTimeField()
    decided_by = serializers.CharField(allow_null=True)
    decided_at = serializers.DateTimeField(allow_null=True)


class StaffCreditLineSerializer(serializers.Serializer):
    reference = serializers.CharField()
    product_name = serializers.CharField()
    status = serializers.CharField()


class StaffCaseDetailSerializer(StaffCaseSummarySerializer):
    customer = serializers.CharField(
        help_text=_("The customer's username, masked without view_pii.")
    )
    credit_line = StaffCreditLineSerializer()
    failure_detail = serializers.CharField()
    retry_count = serializers.IntegerField()
    state_changed_at = serializers.DateTimeField()
    closed_at = serializers.DateTimeField(allow_null=True)
    timeline = StaffCaseEventSerializer(many=True)
    core_requests = StaffCoreRequestSerializer(many=True)
    overrides = StaffOverrideSerializer(many=True)


# --- Actions -----------------------------------------------------------------------


class StaffCaseActionInputSerializer(serializers.Serializer):
    """What an action takes; each action reads the fields it needs (as the case page's form)."""

    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    text = serializers.CharField(
        required=False, allow_blank=True, max_length=2000, help_text=_("The note (note).")
    )
    reason_code = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=32,
        help_text=_("Why the case is closed (close)."),
    )
    kind = serializers.ChoiceField(
        choices=OverrideRequest.Kind.choices,
        required=False,
        help_text=_("The kind of override (request_override)."),
    )
    core_reference = serializers.CharField(required=False, allow_blank=True, max_length=100)
    override_id = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        help_text=_("The override to decide (approve_override, reject_override)."),
    )


class StaffCaseActionResultSerializer(serializers.Serializer):
    message = serializers.CharField()
    case = StaffCaseDetailSerializer()


# --- Exports -----------------------------------------------------------------------


class StaffExportInputSerializer(serializers.Serializer):
    since = serializers.DateTimeField(required=False, allow_null=True)
    until = serializers.DateTimeField(required=False, allow_null=True)
    states = serializers.ListField(
        child=serializers.ChoiceField(choices=CaseState.choices), required=False, max_length=20
    )
    reasons = serializers.ListField(
        child=serializers.ChoiceField(choices=FailureReason.choices),
        required=False,
        max_length=20,
    )
    format = serializers.ChoiceField(choices=EXPORT_FORMATS, default="csv")

    def validate(self, attrs):
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and since >= until:
            raise serializers.ValidationError({"until": _("Must be after the start.")})
        return attrs


class StaffDownloadQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(
        choices=EXPORT_FORMATS,
        required=False,
        help_text=_("The file's format; the one chosen at the start if unset."),
    )


class StaffExportSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    format = serializers.ChoiceField(choices=EXPORT_FORMATS)
    filters = serializers.JSONField()
    pii = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
    download_url = serializers.CharField()
    manifest_url = serializers.CharField()


class StaffManifestSerializer(serializers.Serializer):
    format = serializers.CharField()
    filters = serializers.JSONField()
    exported_by = serializers.CharField()
    exported_at = serializers.CharField()
    pii = serializers.BooleanField()
    rows = serializers.IntegerField()
    sha256 = serializers.CharField()
    chain_heads = serializers.DictField(child=serializers.JSONField())
