"""Settings: environment over TOML over defaults; every invalid value is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrypoints.settings import SettingsError, load_settings
from tests.integration.test_http_support import bounded

__all__ = ["bounded"]


def test_defaults_are_the_embedded_zero_config() -> None:
    s = load_settings({})
    assert s.database_backend == "sqlite"
    assert s.sqlite_path == Path("./chatcore-data") / "chatcore.db"
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8000, 1)
    assert s.limits.max_page_size == 100 and s.limits.default_page_size == 50
    assert s.max_request_body_bytes == 64 * 1024


def test_environment_overrides_the_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "chatcore.toml"
    config.write_text(
        'port = 9000\npublic_url = "https://chat.example"\n'
        "[limits]\nmax_message_chars = 100\nmax_page_size = 20\ndefault_page_size = 10\n"
        "[auth]\naccess_token_ttl_s = 600\n"
    )
    s = load_settings(
        {
            "CHATCORE_CONFIG": str(config),
            "CHATCORE_PORT": "9100",
            "CHATCORE_MAX_PAGE_SIZE": "30",
            "CHATCORE_CORS_ORIGINS": "https://a.example, https://b.example",
            "CHATCORE_TEST_REDIS_URL": "ignored",
        }
    )
    assert s.port == 9100
    assert s.limits.max_message_chars == 100 and s.limits.max_page_size == 30
    assert s.auth.access_token_ttl_s == 600
    assert s.auth.public_url == s.public_url == "https://chat.example"
    assert s.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CHATCORE_PORT": "eighty"}, "CHATCORE_PORT"),
        ({"CHATCORE_PORT": "70000"}, "CHATCORE_PORT"),
        ({"CHATCORE_WORKERS": "0"}, "CHATCORE_WORKERS"),
        ({"CHATCORE_WS_PORT": "8000"}, "CHATCORE_WS_PORT"),  # the HTTP port itself
        ({"CHATCORE_WS_PORT": "0"}, "CHATCORE_WS_PORT"),  # clients must know it
        ({"CHATCORE_WS_PORT": "70000"}, "CHATCORE_WS_PORT"),
        ({"CHATCORE_MAX_REQUEST_BODY_BYTES": "10"}, "CHATCORE_MAX_REQUEST_BODY_BYTES"),
        ({"CHATCORE_MAX_MESSAGE_CHARS": "0"}, "CHATCORE_MAX_MESSAGE_CHARS"),
        ({"CHATCORE_DEFAULT_PAGE_SIZE": "500"}, "CHATCORE_DEFAULT_PAGE_SIZE"),
        ({"CHATCORE_ACCESS_TOKEN_TTL_S": "7200"}, "CHATCORE_ACCESS_TOKEN_TTL_S"),
        ({"CHATCORE_PUBLIC_URL": "chat.example"}, "CHATCORE_PUBLIC_URL"),
        ({"CHATCORE_CORS_ORIGINS": "https://a.example/path"}, "CHATCORE_CORS_ORIGINS"),
        ({"CHATCORE_DATABASE_URL": "postgres://u:pw@db/x"}, "CHATCORE_DATABASE_URL"),
        ({"CHATCORE_BROKER_URL": "amqp://x"}, "CHATCORE_BROKER_URL"),
        ({"CHATCORE_SECRET_KEY": "abcd"}, "CHATCORE_SECRET_KEY"),
        ({"CHATCORE_LOG_LEVEL": "LOUD"}, "CHATCORE_LOG_LEVEL"),
        ({"CHATCORE_CONFIG": "/nonexistent/chatcore.toml"}, "CHATCORE_CONFIG"),
    ],
)
def test_invalid_settings_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(env)
    assert str(error.value).startswith(named), error.value
    assert "pw" not in str(error.value)


def test_unknown_keys_in_the_toml_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="CHATCORE_PROT"):
        load_settings({"CHATCORE_CONFIG": str(config)})


def test_the_secret_key_is_never_printed() -> None:
    s = load_settings({"CHATCORE_SECRET_KEY": "ab" * 32})
    assert "ab" * 32 not in repr(s)
