"""QR codes for setting up an authenticator app, as inline SVG (no image request, no script)."""

import base64

import qrcode
import qrcode.image.svg


def qr_svg(text: str) -> str:
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=10)
    return image.to_string(encoding="unicode")


def totp_secret(device) -> str:
    """The device's key as people type it into an authenticator app (base32)."""
    return base64.b32encode(device.bin_key).decode()
