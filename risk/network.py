"""Network facts: the address's prefix, the lists of VPN, proxy and hosting ranges, GeoIP."""

import ipaddress
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

NETWORK_LABELS = ("vpn", "proxy", "hosting")
# Ranges staff keep in the back office are re-read at most this often per process.
STAFF_RANGES_TTL = 30.0


def client_address(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address parsed, or None; ``::ffff:a.b.c.d`` as ``a.b.c.d``: a dual-stack socket shows
    IPv4 clients so, while the lists and GeoIP files name them in IPv4."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def _prefix(ip) -> str:
    length = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{length}", strict=False))


def address_prefix(address: str | None) -> str:
    """The /24 of an IPv4 address or the /64 of an IPv6 one (where one household sits)."""
    ip = client_address(address)
    return _prefix(ip) if ip is not None else ""


def parse_range_line(line: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str] | None:
    """``CIDR [label]`` per line, ``#`` starts a comment; None for a blank or bad line."""
    line = line.split("#", 1)[0].strip()
    if not line:
        return None
    parts = line.split()
    try:
        network = ipaddress.ip_network(parts[0], strict=False)
    except ValueError:
        return None
    label = parts[1].lower() if len(parts) > 1 and parts[1].lower() in NETWORK_LABELS else "vpn"
    return network, label


@lru_cache(maxsize=4)
def _file_ranges(path: str, mtime: float) -> tuple:
    ranges = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parsed = parse_range_line(line)
            if parsed is None and line.split("#", 1)[0].strip():
                logger.warning("risk network list %s line %d is not a CIDR range", path, number)
            elif parsed is not None:
                ranges.append(parsed)
    return tuple(ranges)


def file_ranges() -> tuple:
    path = settings.RISK_NETWORK_LIST_FILE
    if not path:
        return ()
    try:
        return _file_ranges(path, Path(path).stat().st_mtime)
    except OSError:
        logger.warning("risk network list %s cannot be read", path)
        return ()


_staff_ranges: dict[str, object] = {"at": 0.0, "ranges": ()}


def forget_staff_ranges() -> None:
    """Read the staff's ranges again at the next lookup (called when they change)."""
    _staff_ranges["at"] = 0.0


def staff_ranges() -> tuple:
    if time.monotonic() - _staff_ranges["at"] > STAFF_RANGES_TTL:
        from .models import ListEntry

        ranges = []
        entries = ListEntry.objects.filter(
            kind=ListEntry.Kind.NETWORK, status=ListEntry.Status.ACTIVE
        ).values_list("value", "label")
        for value, label in entries:
            parsed = parse_range_line(f"{value} {label}")
            if parsed is not None:
                ranges.append(parsed)
        _staff_ranges.update(at=time.monotonic(), ranges=tuple(ranges))
    return _staff_ranges["ranges"]


def _listed(ip) -> str:
    for network, label in (*file_ranges(), *staff_ranges()):
        if ip.version == network.version and ip in network:
            return label
    return ""


def listed_label(address: str | None) -> str:
    """``vpn``, ``proxy`` or ``hosting`` if the address is in a listed range, else ""."""
    ip = client_address(address)
    return _listed(ip) if ip is not None else ""


@lru_cache(maxsize=4)
def _reader(path: str, mtime: float):
    import maxminddb

    return maxminddb.open_database(path)


def _lookup(path: str, ip) -> dict:
    if not path or ip is None:
        return {}
    try:
        record = _reader(path, Path(path).stat().st_mtime).get(str(ip))
    # A corrupt or half-copied file raises maxminddb's InvalidDatabaseError, a RuntimeError:
    # GeoIP is then unknown, never a failed sign-in.
    except (OSError, ValueError, RuntimeError) as error:
        logger.warning("GeoIP database %s cannot be read: %s", path, error)
        return {}
    return record if isinstance(record, dict) else {}


@dataclass(frozen=True)
class NetworkFacts:
    address: str | None
    prefix: str
    listed: str  # "", "vpn", "proxy" or "hosting"
    country: str  # ISO code, "" when unknown
    asn: int | None


def network_facts(address: str | None) -> NetworkFacts:
    ip = client_address(address)  # parsed once for the prefix, the lists and GeoIP
    country_record = _lookup(settings.RISK_GEOIP_COUNTRY_DB, ip)
    asn_record = _lookup(settings.RISK_GEOIP_ASN_DB, ip)
    country = (country_record.get("country") or {}).get("iso_code", "")
    asn = asn_record.get("autonomous_system_number")
    return NetworkFacts(
        address=address,
        prefix=_prefix(ip) if ip is not None else "",
        listed=_listed(ip) if ip is not None else "",
        country=country if isinstance(country, str) else "",
        asn=asn if isinstance(asn, int) else None,
    )
