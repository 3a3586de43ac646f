"""Configuration of the OAuth mode: the Web API host by default, the key set from a file, no key
material in YAML; the gateway session override from the environment or a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import build_parser, run_overrides
from bridge.config import WEB_API_URL, load_settings
from bridge.errors import ConfigError


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value.problems


def test_oauth_mode_defaults_to_the_web_api_host_with_tls_verified(tmp_path: Path) -> None:
    key_set = tmp_path / "oauth.json"
    key_set.write_text("{}")
    settings = load_settings(None, {"gateway": {"mode": "oauth", "oauth_file": str(key_set)}})
    assert settings.gateway.url == WEB_API_URL == "https://api.ibkr.com"
    assert settings.gateway.ws_url == "wss://api.ibkr.com/v1/api/ws"
    assert settings.gateway.insecure_tls is False and settings.gateway.compete is False


def test_an_explicit_url_wins_in_oauth_mode(tmp_path: Path) -> None:
    key_set = tmp_path / "oauth.json"
    key_set.write_text("{}")
    settings = load_settings(None, {"gateway": {"mode": "oauth", "oauth_file": str(key_set),
                                                "url": "https://1.api.ibkr.com"}})  # fmt: skip
    assert settings.gateway.url == "https://1.api.ibkr.com"


def test_gateway_mode_keeps_the_local_gateway_default() -> None:
    settings = load_settings(None)
    assert settings.gateway.mode == "gateway" and settings.gateway.url == "https://localhost:5000"


def test_oauth_mode_without_a_key_set_names_the_field_and_the_ways_to_set_it(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, "gateway:\n  mode: oauth\n")
    assert problem.startswith("gateway.oauth_file:") and "BRIDGE_GATEWAY__OAUTH_FILE" in problem


def test_a_missing_key_set_file_is_reported(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, f"gateway:\n  mode: oauth\n  oauth_file: {tmp_path}/nope.json\n")
    assert problem.startswith("gateway.oauth_file:") and "does not exist" in problem


@pytest.mark.parametrize("key", ["consumer_key", "access_token", "access_token_secret"])
def test_oauth_key_material_in_yaml_is_refused_without_echoing_it(tmp_path: Path, key: str) -> None:
    found = problems(tmp_path, f"gateway:\n  mode: oauth\n  {key}: SUPERSECRET\n")
    assert any(p.startswith(f"gateway.{key}: secrets are not read from YAML") and "gateway.oauth_file" in p
               for p in found)  # fmt: skip
    assert not any("SUPERSECRET" in p for p in found)


def test_the_key_set_file_can_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_set = tmp_path / "oauth.json"
    key_set.write_text("{}")
    monkeypatch.setenv("BRIDGE_GATEWAY__MODE", "oauth")
    monkeypatch.setenv("BRIDGE_GATEWAY__OAUTH_FILE", str(key_set))
    settings = load_settings(None)
    assert settings.gateway.oauth_file == key_set and settings.gateway.url == WEB_API_URL


def test_run_oauth_flag_selects_the_mode_and_the_key_set() -> None:
    args = build_parser().parse_args(["run", "--oauth", "/keys/oauth.json"])
    assert run_overrides(args)["gateway"] == {"mode": "oauth", "oauth_file": "/keys/oauth.json"}


def test_the_session_override_from_both_env_and_file_is_ambiguous(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    session_file = tmp_path / "session"
    session_file.write_text("abc\n")
    monkeypatch.setenv("BRIDGE_GATEWAY__SESSION", "def")
    (problem,) = problems(tmp_path, f"gateway:\n  session_file: {session_file}\n")
    assert problem.startswith("gateway.session_file:") and "not both" in problem


def test_check_config_reports_the_key_sets_own_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.cli import main

    key_set = tmp_path / "oauth.json"
    key_set.write_text('{"consumer_key": "ABCDEFGHI"}')
    path = tmp_path / "bridge.yaml"
    path.write_text(f"gateway:\n  mode: oauth\n  oauth_file: {key_set}\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "access_token is required" in err and "signature_key_fp" in err and "ABCDEFGHI" not in err
