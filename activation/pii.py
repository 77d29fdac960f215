"""What staff without ``view_pii`` see of a customer: enough to work the case, not who it is."""

from typing import Any

from accounts.masking import mask_ip_address, mask_name
from accounts.roles import can
from risk.signals import pseudonym


def may_see_pii(user) -> bool:
    """Whether ``user`` sees customers' names, usernames and addresses whole."""
    return can(user, "view_pii")


def actor_label(username: str, *, is_staff: bool, pii: bool) -> str:
    """Name who did something: staff by username (who did what is the point), customers masked."""
    return username if pii or is_staff else mask_name(username)


def device_label(device_id: str, *, pii: bool) -> str:
    """A device id as shown: without ``pii``, the keyed hash the risk panel shows for it.

    The id singles out the customer's phone as an address does; its hash still tells staff
    which events share a device, and matches the risk panel and the block lists.
    """
    if pii or not device_id:
        return device_id
    return f"#{pseudonym(device_id)}"


def event_data(data: Any, *, pii: bool) -> Any:
    """Return an event's ``data`` as shown: without ``pii``, the addresses it holds are masked.

    Only what is shown changes; the stored data, which the hash chain covers, never does.
    """
    change = data.get("ip_changed") if isinstance(data, dict) else None
    if pii or not isinstance(change, dict):
        return data
    masked = {
        key: mask_ip_address(value) if isinstance(value, str) else value
        for key, value in change.items()
    }
    return {**data, "ip_changed": masked}


def event_record(event, *, pii: bool) -> dict[str, Any]:
    """An event as staff see it (the back office's timeline, the staff API); without ``pii`` the
    columns that name, locate or single out a customer are masked. The stored event, which the
    hash chain covers, is not changed."""
    actor = event.actor
    ip_address = event.ip_address or None
    return {
        "seq": event.seq,
        "created_at": event.created_at,
        "actor_type": event.actor_type,
        "actor": actor_label(actor.get_username(), is_staff=actor.is_staff, pii=pii)
        if actor is not None
        else None,
        "kind": event.kind,
        "state_before": event.state_before,
        "state_after": event.state_after,
        "data": event_data(event.data, pii=pii),
        "ip_address": ip_address if pii or ip_address is None else mask_ip_address(ip_address),
        "device_id": device_label(event.device_id, pii=pii),
    }
