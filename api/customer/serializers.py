"""What the customer API reads and writes; strings in the language of ``Accept-Language``."""

from rest_framework import serializers

from activation.models import CaseState, FailureReason
from verification.models import Channel

from ..models import AppSession


class SignInSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="Phone number or username.")
    password = serializers.CharField(max_length=128, trim_whitespace=False)
    platform = serializers.ChoiceField(choices=AppSession.Platform.choices)
    device_name = serializers.CharField(max_length=100, required=False, default="")
    app_version = serializers.CharField(max_length=32, required=False, default="")


class RefreshSerializer(serializers.Serializer):
    refresh = serializers.CharField(max_length=2000)


class AppSessionSerializer(serializers.ModelSerializer):
    current = serializers.SerializerMethodField()

    class Meta:
        model = AppSession
        fields = [
            "id",
            "platform",
            "device_name",
            "app_version",
            "created_at",
            "last_used_at",
            "current",
        ]

    def get_current(self, session: AppSession) -> bool:
        current = self.context.get("current")
        return current is not None and current.pk == session.pk


class TokensSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()
    token_type = serializers.CharField(default="Bearer")
    expires_in = serializers.IntegerField(help_text="Seconds the access token lasts.")
    session = AppSessionSerializer()
    device_token = serializers.CharField(
        allow_blank=True,
        help_text="At sign-in only (empty on refresh): keep it secret and send it as "
        "X-Device-Token when this installation signs in again.",
    )


class ExplanationSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=FailureReason.choices)
    title = serializers.CharField()
    what_happened = serializers.CharField()
    what_to_do = serializers.CharField()
    waiting_helps = serializers.BooleanField()


class CaseSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=CaseState.choices)
    state_label = serializers.CharField()
    in_progress = serializers.BooleanField()
    can_retry = serializers.BooleanField()
    opened_at = serializers.DateTimeField()
    state_changed_at = serializers.DateTimeField()
    explanation = ExplanationSerializer(allow_null=True)


class CreditLineSerializer(serializers.Serializer):
    reference = serializers.CharField()
    product_name = serializers.CharField()
    status = serializers.CharField()
    cases = CaseSerializer(many=True)


class ChannelSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    label = serializers.CharField()
    destination = serializers.CharField(help_text="Masked: where the code goes.")
    sends_code = serializers.BooleanField()


class RequestCodeSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)


class CodeRequestedSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    destination = serializers.CharField()
    resend_in = serializers.IntegerField(help_text="Seconds before another code may be sent.")


class SubmitCodeSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    code = serializers.CharField(
        max_length=20000,
        help_text="The code; for a passkey, the JSON of the authenticator's assertion.",
    )
    submission_id = serializers.UUIDField(required=False)
