"""Security by default: loopback unless a key (or an explicit --insecure) says otherwise; the CLI's refusals."""

from __future__ import annotations

import pytest

from deepstrata.cli import main
from deepstrata.errors import ConfigError
from deepstrata.serve.settings import ServeSettings, is_loopback, resolve_api_key


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_needs_no_key(host):
    assert is_loopback(host)
    ServeSettings(run="r", host=host).check()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_any_other_address_needs_a_key_or_insecure(host):
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="needs --api-key KEY .* --insecure"):
        ServeSettings(run="r", host=host).check()
    ServeSettings(run="r", host=host, api_key="a-long-key").check()
    ServeSettings(run="r", host=host, insecure=True).check()


@pytest.mark.parametrize("change, flag", [({"port": 70000}, "--port"), ({"max_batch": 0}, "--max-batch"),
                                          ({"workers": 0}, "--workers"), ({"max_wait_ms": -1}, "--max-wait-ms"),
                                          ({"max_body_mb": 0}, "--max-body-mb"), ({"api_key": "short"}, "--api-key")])
def test_bad_values_are_refused_by_flag(change, flag):
    with pytest.raises(ConfigError, match=flag):
        ServeSettings(run="r", **change).check()


def test_the_key_comes_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.setenv("DEEPSTRATA_API_KEY", "from-the-env")
    assert resolve_api_key(None) == "from-the-env" and resolve_api_key("from-flag") == "from-flag"
    monkeypatch.setenv("DEEPSTRATA_API_KEY", "")
    assert resolve_api_key(None) is None


def test_cli_refuses_a_public_bind_without_a_key_in_one_line(image_run, capsys, monkeypatch):
    monkeypatch.delenv("DEEPSTRATA_API_KEY", raising=False)
    assert main(["serve", str(image_run.path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deepstrata: error: --host 0.0.0.0: binding beyond this machine")


def test_serve_help_says_the_security_rules(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for said in ("binds 127.0.0.1", "--api-key KEY", "DEEPSTRATA_API_KEY", "--insecure", "400", "422", "413"):
        assert said in text


def test_a_port_in_use_is_a_one_line_refusal(image_run, capsys):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", str(image_run.path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--port {port}: cannot listen there" in err
