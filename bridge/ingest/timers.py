"""The clocks of one gateway socket, as data (pure): keepalives, silence, the authentication
deadline and auth polling. The session asks what is due at ``now_ns``; nothing here reads a clock.
"""

from __future__ import annotations

from bridge.ingest.session_types import NS_PER_S, Action, PollAuthStatus, Reauthenticate, SessionSettings


def _ns(seconds: float) -> int:
    return int(seconds * NS_PER_S)


class SocketTimers:
    """Deadlines of one socket, from when it opened."""

    def __init__(self, settings: SessionSettings, now_ns: int) -> None:
        self._settings = settings
        self._opened_ns = now_ns
        self._last_frame_ns = now_ns  # the last frame on this socket, or when it opened
        self._next_tic_ns = now_ns + _ns(settings.tic_interval_s)
        self._next_tickle_ns = now_ns + _ns(settings.tickle_interval_s)
        self._next_auth_poll_ns: int | None = None
        self._next_reauth_ns: int | None = None

    def frame_received(self, now_ns: int) -> None:
        self._last_frame_ns = now_ns

    def auth_ok(self) -> None:
        """Authenticated: no more polling."""
        self._next_auth_poll_ns = self._next_reauth_ns = None

    def auth_lost(self, now_ns: int) -> None:
        """Auth lost on an open socket: poll the REST status now (and re-authenticate if configured)."""
        self._next_auth_poll_ns = now_ns
        self._next_reauth_ns = now_ns if self._settings.reauthenticate else None

    def deadlines(self, connected: bool, closing: bool) -> list[int]:
        """Every pending deadline; ``connected``: open but not yet authenticated."""
        settings = self._settings
        deadlines = [self._next_tic_ns, self._next_tickle_ns]
        if not closing:
            deadlines.append(self._last_frame_ns + _ns(settings.stale_after_s))
            if connected:
                deadlines.append(self._opened_ns + _ns(settings.auth_timeout_s))
        deadlines.extend(t for t in (self._next_auth_poll_ns, self._next_reauth_ns) if t is not None)
        return deadlines

    def keepalives_due(self, now_ns: int) -> tuple[bool, bool]:
        """(send a ``tic`` now, ``POST /tickle`` now); each rescheduled when due."""
        tic = now_ns >= self._next_tic_ns
        if tic:
            self._next_tic_ns = now_ns + _ns(self._settings.tic_interval_s)
        tickle = now_ns >= self._next_tickle_ns
        if tickle:
            self._next_tickle_ns = now_ns + _ns(self._settings.tickle_interval_s)
        return tic, tickle

    def silence(self, now_ns: int, connected: bool) -> str | None:
        """Why the socket should be replaced now (silent too long, or not authenticated in time)."""
        silent_ns = now_ns - self._last_frame_ns
        if silent_ns >= _ns(self._settings.stale_after_s):
            return f"stale: no frame for {silent_ns / NS_PER_S:.1f} s"
        if connected and now_ns - self._opened_ns >= _ns(self._settings.auth_timeout_s):
            return f"not authenticated within {self._settings.auth_timeout_s} s"
        return None

    def polls_due(self, now_ns: int) -> list[Action]:
        """The auth status poll and re-authentication due now, each rescheduled."""
        actions: list[Action] = []
        if self._next_auth_poll_ns is not None and now_ns >= self._next_auth_poll_ns:
            actions.append(PollAuthStatus())
            self._next_auth_poll_ns = now_ns + _ns(self._settings.auth_poll_s)
        if self._next_reauth_ns is not None and now_ns >= self._next_reauth_ns:
            actions.append(Reauthenticate())
            self._next_reauth_ns = now_ns + _ns(self._settings.reauthenticate_interval_s)
        return actions
