import pytest

from verification.normalize import normalize_code


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("123456", "123456"),
        (" 123 456 ", "123456"),
        ("123-456", "123456"),
        ("１２３４５６", "123456"),
        ("１２３－４５６", "123456"),
        ("Your Activation Rescue code is 123456. It expires in 5 minutes.", "123456"),
        ("【激活救援】您的验证码是 023349，5 分钟内有效。", "023349"),
        ("12345", ""),
        ("1234567", ""),
        ("codes 123456 and 654321", ""),
        ("", ""),
    ],
)
def test_normalize_code(typed, expected):
    assert normalize_code(typed) == expected
