"""The TLS context for the gateway's REST and websocket connections.

Verification is on by default; ``insecure_tls`` turns it off, which is meant only
for the loopback gateway's self-signed certificate and is a visible config switch.
"""

from __future__ import annotations

import ssl


def build_ssl(insecure_tls: bool, ca_file: str | None) -> ssl.SSLContext:
    """Verifying TLS context; ``insecure_tls`` turns verification off, ``ca_file`` pins a CA."""
    context = ssl.create_default_context(cafile=ca_file)
    if insecure_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
