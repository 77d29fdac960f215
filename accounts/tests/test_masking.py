import pytest

from accounts.masking import mask_email, mask_phone_number


@pytest.mark.parametrize(
    ("number", "masked"),
    [("+8613812345678", "138****5678"), ("+14155552671", "141****2671"), ("+86123", "***23")],
)
def test_mask_phone_number(number, masked):
    assert mask_phone_number(number) == masked


@pytest.mark.parametrize(
    ("address", "masked"),
    [("zhang.wei@example.com", "z***@example.com"), ("a@b.cn", "a***@b.cn"), ("broken", "***")],
)
def test_mask_email(address, masked):
    assert mask_email(address) == masked
