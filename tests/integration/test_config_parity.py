"""``check-config`` and ``run`` share one validation path: a corpus of broken configurations.

Each case runs through both commands exactly as a user runs them (the installed console
script, in a subprocess): both exit 2 and name the same field, the value and who set it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("ibkr-bridge")


@dataclass(frozen=True)
class Case:
    name: str
    yaml: str
    field: str  # the field path both commands must name
    also: tuple[str, ...] = ()  # further text both must show (the value, the variable, a hint)
    env: dict[str, str] = field(default_factory=dict)


CORPUS = [
    Case("symbol-as-conid", 'subscriptions:\n  market_data:\n    conids: ["AAPL"]\n',
         "subscriptions.market_data.conids[0]", ("'AAPL'", "expected CONID", "a symbol is not a conid")),
    Case("negative-conid", 'subscriptions:\n  market_data:\n    conids: ["265598", "-5"]\n',
         "subscriptions.market_data.conids[1]", ("'-5'",)),
    Case("two-ladders-for-one-account", "subscriptions:\n  book:\n    - {conid: '265598'}\n    - {conid: '8314'}\n",
         "subscriptions.book", ("ubd+ACCOUNT",)),
    Case("book-conid-not-numeric", "subscriptions:\n  book:\n    - {conid: AAPL, account: DU1}\n",
         "subscriptions.book[0].conid", ("'AAPL'", "positive numeric conid")),
    Case("bad-combo", "subscriptions:\n  market_data:\n    conids: ['28812380;;;265598']\n",
         "subscriptions.market_data.conids[0]", ("SPREAD_CONID;;;CONID/RATIO",)),
    Case("spool-dir-under-a-file", "delivery:\n  spool_dir: {tmp}/a-file/spool\n",
         "delivery.spool_dir", ("is not a directory",)),
    Case("duration-with-a-unit", "session:\n  stale_after_s: 10s\n", "session.stale_after_s", ("'10s'",)),
    Case("negative-duration", "session:\n  tic_interval_s: -1\n", "session.tic_interval_s", ("greater than 0",)),
    Case("gateway-url-without-scheme", "gateway:\n  url: localhost:5000\n", "gateway.url",
         ("'localhost:5000'", "https://localhost:5000")),
    Case("sink-url-bad-scheme", "sink:\n  url: kafak://localhost:9092\n", "sink.url", ("kafka://host:port",)),
    Case("sink-url-without-host", "sink:\n  url: redis://\n", "sink.url", ("needs a host:port",)),
    Case("unknown-key", "session:\n  stale_afte_s: 3\n", "session.stale_afte_s", ("did you mean 'stale_after_s'",)),
    Case("unknown-section", "subscription:\n  orders: true\n", "subscription", ("did you mean 'subscriptions'",)),
    Case("unknown-destination-family", "destinations:\n  order: my.orders\n", "destinations",
         ("did you mean 'orders'",)),
    Case("secret-in-yaml", "sink:\n  url: redis://h:6379\n  redis:\n    password: hunter2\n",
         "sink.redis.password", ("BRIDGE_SINK__REDIS__PASSWORD",)),
    Case("missing-token-file", "admin:\n  token_file: {tmp}/no-such-token\n", "admin.token_file", ("does not exist",)),
    Case("admin-port-out-of-range", "admin:\n  port: 70000\n", "admin.port", ("70000",)),
    Case("bad-value-from-the-environment", "session:\n  tic_interval_s: 5\n", "session.stale_after_s",
         ("'abc'", "from BRIDGE_SESSION__STALE_AFTER_S"), {"BRIDGE_SESSION__STALE_AFTER_S": "abc"}),
    Case("yaml-syntax-error", "gateway: [unclosed\n", "line 2", ("bridge.yaml", "not valid YAML")),
]


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run([str(SCRIPT), *argv], env={**clean, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_check_config_and_run_both_refuse_and_name_the_same_field(case: Case, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    config = tmp_path / "bridge.yaml"
    config.write_text(case.yaml.replace("{tmp}", str(tmp_path)))
    checked = _run(["check-config", str(config)], case.env, tmp_path)
    ran = _run(["run", "--config", str(config)], case.env, tmp_path)
    for result in (checked, ran):
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert case.field in result.stderr, result.stderr
        for text in case.also:
            assert text in result.stderr, result.stderr
    assert checked.stderr.split(":", 1)[1] == ran.stderr.split(":", 1)[1]  # the same problems, worded alike


def test_a_bad_flag_value_is_blamed_on_the_flag(tmp_path: Path) -> None:
    ran = _run(["run", "--market-data", "265598,AAPL", "--sink", "stdout://"], {}, tmp_path)
    assert ran.returncode == 2
    assert "subscriptions.market_data.conids[1]: 'AAPL' is not allowed" in ran.stderr
    assert "(from --market-data)" in ran.stderr
