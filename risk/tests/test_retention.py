from datetime import timedelta

import pytest
from django.utils import timezone

from risk.models import Evaluation, FiredRule, Moment, Rule
from risk.tasks import purge_evaluations
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def test_evaluations_past_their_retention_go_with_their_fired_rules(settings):
    settings.RISK_EVALUATION_RETENTION_DAYS = 400
    customer = CustomerFactory()
    rule = Rule.objects.filter(version__number=1).first()
    now = timezone.now()
    ages = {"old": 401, "older": 700, "kept": 399, "new": 0}
    made = {}
    for name, days in ages.items():
        evaluation = Evaluation.objects.create(
            moment=Moment.CODE_REQUEST,
            customer=customer,
            decision="allow",
            created_at=now - timedelta(days=days),
        )
        FiredRule.objects.create(evaluation=evaluation, rule=rule, score=rule.score)
        made[name] = evaluation.pk

    assert purge_evaluations.apply().get() == 2

    assert set(Evaluation.objects.values_list("pk", flat=True)) == {made["kept"], made["new"]}
    assert set(FiredRule.objects.values_list("evaluation_id", flat=True)) == {
        made["kept"],
        made["new"],
    }


def test_the_purge_works_in_batches(settings):
    from risk.services.retention import purge_old_evaluations

    customer = CustomerFactory()
    old = timezone.now() - timedelta(days=settings.RISK_EVALUATION_RETENTION_DAYS + 1)
    Evaluation.objects.bulk_create(
        [
            Evaluation(moment=Moment.SIGN_IN, customer=customer, decision="allow", created_at=old)
            for _ in range(7)
        ]
    )
    assert purge_old_evaluations(batch=3) == 7
    assert not Evaluation.objects.exists()
