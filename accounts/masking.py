"""Show enough of a destination for a person to recognise it, and no more."""


def mask_phone_number(e164: str) -> str:
    """Return ``138****5678`` for ``+8613812345678``: the national number's head and tail."""
    digits = e164.lstrip("+")
    if digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    if len(digits) <= 7:
        return "*" * max(len(digits) - 2, 0) + digits[-2:]
    return f"{digits[:3]}****{digits[-4:]}"


def mask_email(address: str) -> str:
    """Return ``z***@example.com`` for ``zhang.wei@example.com``."""
    local, _at, domain = address.partition("@")
    if not domain:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_name(name: str) -> str:
    """Return ``W***`` for ``Wei Zhang``: the first character only."""
    return f"{name[:1]}***" if name else ""


def mask_ip_address(address: str) -> str:
    """Return ``203.0.*.*`` for ``203.0.113.7`` and ``2001:db8:*`` for IPv6: the network only."""
    if not address:
        return ""
    if ":" in address:
        return ":".join(address.split(":")[:2]) + ":*"
    return ".".join(address.split(".")[:2]) + ".*.*"
