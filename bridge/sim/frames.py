"""Server-to-client frames of the simulated gateway, byte for byte as reference §1.4-§3 shows them.

Also the RFC 6455 frame header, because the simulator writes pre-encoded frames straight to the
transport (one ``write`` per batch) instead of one library call per frame.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

SERVER_NAME = "JifZ11074"
SERVER_VERSION = "Build 10.45.1a, Apr 22, 2026 1:39:05 PM"

_LEN1 = struct.Struct("!BB").pack
_LEN2 = struct.Struct("!BBH").pack
_LEN3 = struct.Struct("!BBQ").pack

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_PING = 0x9


def ws_header(length: int, opcode: int = OP_TEXT) -> bytes:
    """Header of an unmasked, final server frame carrying ``length`` payload bytes."""
    first = 0x80 | opcode
    if length < 126:
        return _LEN1(first, length)
    if length < 65536:
        return _LEN2(first, 126, length)
    return _LEN3(first, 127, length)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def system_success(username: str) -> dict[str, Any]:
    return {"topic": "system", "success": username, "isFT": False, "isPaper": False}


def heartbeat(epoch_ms: int) -> dict[str, Any]:
    return {"topic": "system", "hb": epoch_ms}


def account_props() -> dict[str, Any]:
    return {
        "hasChildAccounts": False,
        "supportsCashQty": True,
        "supportsFractions": True,
        "noFXConv": False,
        "isProp": False,
        "allowCustomerTime": False,
        "liteUnderPro": False,
        "autoFx": False,
    }


def accounts_payload(account: str, session_id: str) -> dict[str, Any]:
    """The body of ``GET /iserver/accounts``; ``act.args`` mirrors it (reference §1.4)."""
    return {
        "accounts": [account],
        "acctProps": {account: account_props()},
        "aliases": {account: account},
        "allowFeatures": {
            "showGFIS": True,
            "showEUCostReport": False,
            "allowEventContract": True,
            "allowFXConv": True,
            "allowFinancialLens": False,
            "allowMTA": True,
            "allowTypeAhead": True,
            "allowEventTrading": True,
            "snapshotRefreshTimeout": 30,
            "liteUser": False,
            "showWebNews": True,
            "research": True,
            "debugPnl": True,
            "showTaxOpt": True,
            "showImpactDashboard": True,
            "allowDynAccount": False,
            "allowCrypto": False,
            "allowFA": False,
            "allowLiteUnderPro": False,
            "allowedAssetTypes": "STK,CFD,OPT,FOP,WAR,FUT,BAG,PDC,CASH,IND,BOND,BILL,FUND,SLB,News,CMDTY,"
            "IOPT,ICU,ICS,PHYSS,CRYPTO",
            "restrictTradeSubscription": False,
            "showUKUserLabels": False,
            "sideBySide": True,
        },
        "chartPeriods": {
            "STK": ["*"],
            "CFD": ["*"],
            "OPT": ["2h", "1d", "2d", "1w", "1m"],
            "FOP": ["2h", "1d", "2d", "1w", "1m"],
            "WAR": ["*"],
            "IOPT": ["*"],
            "FUT": ["*"],
            "CASH": ["*"],
            "IND": ["*"],
            "BOND": ["*"],
            "FUND": ["*"],
            "CMDTY": ["*"],
            "PHYSS": ["*"],
            "CRYPTO": ["*"],
        },
        "groups": [],
        "profiles": [],
        "selectedAccount": account,
        "serverInfo": {"serverName": SERVER_NAME, "serverVersion": SERVER_VERSION},
        "sessionId": session_id,
        "isFT": False,
        "isPaper": account.startswith("D"),
    }


def act(account: str, internal_session_id: str) -> dict[str, Any]:
    return {"topic": "act", "args": accounts_payload(account, internal_session_id)}


def sts_full(username: str, authenticated: bool, competing: bool, fail: str = "") -> dict[str, Any]:
    return {
        "topic": "sts",
        "args": {
            "connected": True,
            "authenticated": authenticated,
            "established": authenticated,
            "competing": competing,
            "message": "",
            "fail": fail,
            "serverName": SERVER_NAME,
            "serverVersion": SERVER_VERSION,
            "username": username,
        },
    }


def sts_lost() -> list[dict[str, Any]]:
    """Loss of authentication as older gateways send it: three one-key frames (reference §3.2)."""
    return [
        {"topic": "sts", "args": {"authenticated": False}},
        {"topic": "sts", "args": {"competing": False}},
        {"topic": "sts", "args": {"message": ""}},
    ]


def sts_competing() -> dict[str, Any]:
    return {
        "topic": "sts",
        "args": {"authenticated": False, "competing": True, "message": "", "fail": "Competing session"},
    }


def tic_reply(session_id: str, last_accessed_ms: int) -> dict[str, Any]:
    return {"topic": "tic", "alive": True, "id": session_id, "lastAccessed": last_accessed_ms}


def unknown_topic(text: str) -> dict[str, Any]:
    """Answer to a message whose first three characters are no topic (envelope unconfirmed, §8.1)."""
    return {"error": f"Topic unknown '{text[:3]}'", "code": 400}


def no_accounts(verb: str = "smd") -> dict[str, Any]:
    return {"error": "No accounts", "code": 500, "topic": verb}


WAITING_FOR_SESSION: dict[str, Any] = {"message": "waiting for session"}
UNSUBSCRIBED_SUMMARY: dict[str, Any] = {"result": "unsubscribed from summary"}
UNSUBSCRIBED_LEDGER: dict[str, Any] = {"result": "unsubscribed from ledger"}
