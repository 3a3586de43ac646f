"""Configuration: precedence, precise errors, secrets only from env or files, the shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_settings
from bridge.errors import ConfigError

CONFIG_DIR = Path(__file__).parents[2] / "config"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value.problems


@pytest.mark.parametrize("example", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_example_config_loads(example: Path) -> None:
    settings = load_settings(example)
    assert settings.subscriptions.market_data.conids


def test_defaults_apply_without_a_file() -> None:
    settings = load_settings(None)
    assert settings.session.stale_after_s == 25 and settings.gateway.insecure_tls is False
    assert settings.sink.url == "stdout://" and settings.admin.host == "127.0.0.1"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "session:\n  stale_after_s: 10\n  tic_interval_s: 20\n")
    monkeypatch.setenv("BRIDGE_SESSION__STALE_AFTER_S", "7")
    settings = load_settings(path)
    assert (settings.session.stale_after_s, settings.session.tic_interval_s) == (7, 20)


def test_a_bad_type_names_the_field_and_the_value(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, "session:\n  stale_after_s: soon\n"))
    assert problem.startswith("session.stale_after_s: 'soon' is not allowed")


def test_an_unknown_key_is_an_error_not_a_silent_default(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, "subscriptions:\n  market_dta:\n    conids: [1]\n"))
    assert problem.startswith("subscriptions.market_dta: unknown key")


def test_the_session_section_is_the_ingest_cores_own_settings_type(tmp_path: Path) -> None:
    from bridge.ingest.session_types import SessionSettings

    settings = load_settings(write(tmp_path, "session:\n  smh_timeout_s: 12\n  expected_cadence_s: {md: 9}\n"))
    assert type(settings.session) is SessionSettings
    assert settings.session.smh_timeout_s == 12 and settings.session.expected_cadence_s == {"md": 9.0}
    assert settings.session.reauthenticate is None  # unset: the composition root decides by gateway.mode


def test_an_unknown_session_key_says_which_one_was_meant(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, "session:\n  tic_intervl_s: 5\n"))
    assert problem.startswith("session.tic_intervl_s: unknown key; did you mean 'tic_interval_s'?")


@pytest.mark.parametrize(("key", "value"), [("reconnect_floor_s", -1), ("smh_max_concurrent", 6),
                                            ("reconnect_multiplier", 0.5)])  # fmt: skip
def test_session_bounds_name_the_field(tmp_path: Path, key: str, value: float) -> None:
    (problem,) = problems(write(tmp_path, f"session:\n  {key}: {value}\n"))
    assert problem.startswith(f"session.{key}: {value} is not allowed")


def test_an_unknown_cadence_channel_is_refused_with_the_channels(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, "session:\n  expected_cadence_s: {xx: 5}\n"))
    assert "unknown channel(s) xx; channels are md" in problem


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "session:\n  stale_after_s: -1\nsink:\n  url: ftp://x\nadmin:\n  port: 70000\n"))
    assert [p.split(":")[0] for p in found] == ["session.stale_after_s", "sink.url", "admin.port"]


def test_a_bad_sink_url_says_what_is_allowed(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, "sink:\n  url: kafka://\n"))
    assert "kafka:// needs a host:port" in problem


def test_a_secret_in_yaml_is_refused_and_the_right_place_is_named(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, "sink:\n  url: redis://h:6379\n  redis:\n    password: hunter2\n"))
    assert "BRIDGE_SINK__REDIS__PASSWORD" in problem and "hunter2" not in problem


def test_a_missing_secret_file_is_reported(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, f"admin:\n  token_file: {tmp_path}/nope\n"))
    assert problem.startswith("admin.token_file:")


def test_sasl_without_a_password_is_reported(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, "sink:\n  url: kafka://h:9092\n  kafka:\n    sasl_mechanism: PLAIN\n    sasl_username: u\n"))
    assert problem.startswith("sink.kafka.sasl_mechanism")


def test_secrets_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_ADMIN__TOKEN", "s3cret")
    settings = load_settings(None)
    assert settings.admin.token is not None and settings.admin.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_comma_separated_conids_are_accepted_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SUBSCRIPTIONS__MARKET_DATA__CONIDS", '["265598","8314"]')
    assert load_settings(None).subscriptions.market_data.conids == ["265598", "8314"]


def test_unreadable_yaml_is_a_clear_error(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, "gateway: [unclosed\n"))
    assert "not valid YAML" in problem


def test_a_bad_value_from_the_environment_names_the_variable_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "session:\n  tic_interval_s: 20\n")
    monkeypatch.setenv("BRIDGE_SESSION__STALE_AFTER_S", "abc")
    (problem,) = problems(path)
    assert problem.startswith("session.stale_after_s: 'abc' is not allowed")
    assert problem.endswith("(from BRIDGE_SESSION__STALE_AFTER_S)") and str(path) not in problem


def test_an_unknown_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, "session:\n  stale_afte_s: 3\n"))
    assert "did you mean 'stale_after_s'?" in problem


def test_a_yaml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "session:\n  tic_interval_s: 5\ngateway: [unclosed\n"))
    (problem,) = caught.value.problems
    assert problem.startswith(f"{tmp_path / 'bridge.yaml'}: line 4") and "<unicode string>" not in problem


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SINK__URL", "redis://env:6379")
    settings = load_settings(None, {"sink": {"url": "kafka://flag:9092"}}, {("sink", "url"): "--sink"})
    assert settings.sink.url == "kafka://flag:9092"


def test_comma_separated_conids_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SUBSCRIPTIONS__MARKET_DATA__CONIDS", "265598,8314@SMART")
    assert load_settings(None).subscriptions.market_data.conids == ["265598", "8314@SMART"]


@pytest.mark.parametrize("conid", ["AAPL", "-5", "12x", "", "265598@"])
def test_a_market_data_target_must_be_a_numeric_conid(conid: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"subscriptions": {"market_data": {"conids": [conid, "265598"]}}})
    (problem,) = caught.value.problems
    assert problem.startswith(f"subscriptions.market_data.conids[0]: {conid!r} is not allowed")


def test_every_problem_shows_even_when_some_values_do_not_parse(tmp_path: Path) -> None:
    text = f"session:\n  stale_after_s: x\nsubscriptions:\n  market_data:\n    conids: [AAPL]\ndelivery:\n  spool_dir: {tmp_path}/f/s\n"
    (tmp_path / "f").write_text("")
    found = problems(write(tmp_path, text))
    assert [p.split(":")[0] for p in found] == ["session.stale_after_s", "subscriptions.market_data.conids[0]", "delivery.spool_dir"]


@pytest.mark.parametrize("example", ["local-kafka.yaml", "local-redis.yaml"])
def test_the_local_examples_spool_where_the_user_running_them_can_write(example: str) -> None:
    spool_dir = load_settings(CONFIG_DIR / example).delivery.spool_dir
    assert not spool_dir.is_absolute()  # never a root-only system path for a local run


def test_combo_targets_are_accepted_and_bad_targets_name_the_field(tmp_path: Path) -> None:
    settings = load_settings(None, {"subscriptions": {"market_data": {"conids": "265598,28812380;;;265598/1,8314/-1"}}})
    assert settings.subscriptions.market_data.conids == ["265598", "28812380;;;265598/1,8314/-1"]
    (problem,) = problems(write(tmp_path, "subscriptions:\n  market_data:\n    conids: ['28812380;;;265598']\n"))
    assert problem.startswith("subscriptions.market_data.conids") and "SPREAD_CONID;;;CONID/RATIO" in problem


def test_more_than_five_bars_subscriptions_are_refused_with_the_reason(tmp_path: Path) -> None:
    bars = "".join(f"    - {{conid: '{conid}'}}\n" for conid in range(1, 7))
    (problem,) = problems(write(tmp_path, f"subscriptions:\n  bars:\n{bars}"))
    assert problem.startswith("subscriptions.bars") and "at most 5" in problem and "remove 1" in problem


def test_two_ladders_for_one_account_are_refused_saying_why(tmp_path: Path) -> None:
    text = "subscriptions:\n  book:\n    - {conid: '265598'}\n    - {conid: '8314'}\n"
    (problem,) = problems(write(tmp_path, text))
    assert problem.startswith("subscriptions.book") and "ubd+ACCOUNT" in problem


def test_the_bars_time_zone_must_be_a_known_zone(tmp_path: Path) -> None:
    assert load_settings(None, {"gateway": {"bars_time_zone": "America/New_York"}}).gateway.bars_time_zone
    (problem,) = problems(write(tmp_path, "gateway:\n  bars_time_zone: Mars/Olympus\n"))
    assert problem.startswith("gateway.bars_time_zone") and "IANA" in problem
