"""One settings object, read from `CHATCORE_*` environment variables and an optional TOML file.

Precedence: defaults < the TOML file named by `CHATCORE_CONFIG` < environment variables.
Limits (`chatcore.domain.limits.Limits`) and authentication settings (`AuthSettings`) sit in
`[limits]` / `[auth]` tables in TOML and are flat in the environment
(`CHATCORE_MAX_MESSAGE_CHARS`, `CHATCORE_ACCESS_TOKEN_TTL_S`). An invalid value stops start-up with a
`SettingsError` that names the setting as the operator wrote it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from chatcore.application.auth import AuthSettings
from chatcore.domain.limits import Limits

PREFIX = "CHATCORE_"
CONFIG_VAR = "CHATCORE_CONFIG"

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Where and how to listen.
    host: str = "127.0.0.1"
    port: Port = 8000
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # Public base URL of this server: links in mails are built from it, never from `Host`.
    public_url: str = DEFAULT_PUBLIC_URL
    cors_origins: list[str] = []
    # Real-time transport (`/v1/ws`). Browser origins allowed to open a WebSocket; empty means the
    # origin of public_url only. A request without Origin needs the Authorization header.
    allowed_origins: list[str] = []
    # A port for WebSockets only, served by the `websockets` library in each worker beside
    # granian's port (`entrypoints.ws_listener`): about 30 KiB per idle socket against granian's
    # 160. `/v1/ws` stays on `port` too. None: no second listener.
    ws_port: Port | None = None
    ws_max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 65_536
    ws_frames_per_minute: Positive = 100  # sustained client frames per socket (a token bucket)
    ws_burst: Positive = 20  # frames above the rate; as many refused frames in a row close it
    ws_max_sockets_per_user: Positive = 10  # per process
    ws_send_queue_frames: Positive = 1000  # unsent frames per socket before it must resume
    ws_send_queue_bytes: Positive = 1024 * 1024
    ws_send_timeout_s: PositiveSeconds = 10.0  # one send blocked this long: the client is stalled
    ws_heartbeat_s: PositiveSeconds = 30.0  # a heartbeat frame after this long without sending
    ws_ping_interval_s: PositiveSeconds = 20.0  # a silent client is asked to answer after this
    ws_ping_timeout_s: PositiveSeconds = 20.0  # ... and closed when it does not within this
    # Long-polling (`/v1/updates`): polls of one user waiting at once, per process; more get 429.
    longpoll_max_per_user: Positive = 10
    # Requests in progress per worker (waiting long-polls included); more wait for a slot before
    # they are read. granian's own default (1,024) lets 1,024 waiting long-polls stall every other
    # request of the worker until one answers.
    max_concurrent_requests: Annotated[int, msgspec.Meta(ge=64, le=1_000_000)] = 16_384
    # Whole request body, per request; larger bodies get 413 before any handler runs.
    max_request_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    # Storage and infrastructure. Empty means the embedded default.
    data_dir: str = "./chatcore-data"
    database_url: str = ""  # "" = SQLite file in data_dir; "memory://"; "sqlite:///path"
    # MongoDB only. True (the default) refuses a standalone server at start-up: the change and its
    # events commit in one multi-document transaction, which needs a replica set. False accepts a
    # server that says it is none (the mongoeco wire server of the tests) once a probe shows that
    # it isolates and rolls back transactions; a server that does not is refused all the same.
    mongo_require_replica_set: bool = True
    # MongoDB only: the budget of each database call (CSOT timeoutMS). A dead or frozen database
    # answers 503 + Retry-After after about this long, within the 5 s SECURITY.md R3 asks for.
    mongo_timeout_s: Annotated[float, msgspec.Meta(ge=0.1, le=60)] = 4.0
    broker_url: str = ""  # "" = in-process event bus
    # Live sessions kept in memory, so a request's session check costs no statement. Only without
    # a broker (one process changes the sessions; see adapters/session_cache.py). 0: none kept.
    session_cache_entries: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 50_000
    # Redis keys and Pub/Sub channels start with this: deployments sharing one Redis differ here.
    broker_prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "chatcore:"
    # The outbox relay: a sweep every relay_interval_s publishes what the publish after each commit
    # could not (broker down); failed sweeps back off up to relay_backoff_max_s.
    relay_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    relay_backoff_max_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    # `chatcore worker`: stream entries a dead worker left unacked are taken over after this.
    stream_claim_idle_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    # With SMTP, mail is spooled in the data dir and retried after this, doubling (capped at 1 h).
    mail_retry_backoff_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    smtp_url: str = ""  # "" = folder mailer writing .eml files into data_dir
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # How long log lines may wait in memory before they are written (warnings and errors are
    # written at once; so is everything when stderr is a terminal). 0: every line at once.
    log_flush_s: Annotated[float, msgspec.Meta(ge=0, le=10)] = 0.2
    # Signing/HMAC key material (hex, >= 32 bytes). Empty: generated on first run and kept
    # (mode 0600) in data_dir; with the memory database, a fresh key per process.
    secret_key: str = ""
    limits: Limits = Limits()
    auth: AuthSettings = AuthSettings()

    def __repr__(self) -> str:  # never print the key
        return f"Settings(host={self.host!r}, port={self.port}, database={self.database_backend})"

    @property
    def database_backend(self) -> str:
        """`sqlite`, `memory` or `mongodb`, from `database_url`."""
        url = self.database_url
        if not url or url.startswith("sqlite:"):
            return "sqlite"
        if url.startswith("memory:"):
            return "memory"
        if url.startswith(("mongodb://", "mongodb+srv://")):
            return "mongodb"
        raise SettingsError(f"CHATCORE_DATABASE_URL: unsupported scheme in {_redact(url)!r}")

    @property
    def sqlite_path(self) -> Path:
        url = self.database_url
        if url.startswith("sqlite:///"):
            return Path(url.removeprefix("sqlite:///"))
        if url.startswith("sqlite:"):
            raise SettingsError("CHATCORE_DATABASE_URL: write sqlite:///path/to/file.db")
        return Path(self.data_dir) / "chatcore.db"


_NESTED = {
    "limits": frozenset(Limits.__struct_fields__),
    "auth": frozenset(AuthSettings.__struct_fields__) - {"public_url"},
}
_LIMIT_FIELDS = _NESTED["limits"]
_LIST_FIELDS = frozenset({"cors_origins", "allowed_origins"})
_TOP_FIELDS = frozenset(Settings.__struct_fields__) - set(_NESTED)


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def _env_name(path: str) -> str:
    """`$.limits.max_message_chars` -> `CHATCORE_MAX_MESSAGE_CHARS`."""
    parts = [p for p in path.removeprefix("$").split(".") if p]
    if parts and parts[0] in _NESTED:
        parts = parts[1:]
    return PREFIX + "_".join(parts).upper() if parts else "settings"


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(PREFIX) or name == CONFIG_VAR:
            continue
        key = name.removeprefix(PREFIX).lower()
        if key in _LIST_FIELDS:
            raw[key] = [v.strip() for v in value.split(",") if v.strip()]
        elif key in _TOP_FIELDS:
            raw[key] = value
        else:
            for table, fields in _NESTED.items():
                if key in fields:
                    raw.setdefault(table, {})[key] = value
        # Other CHATCORE_* variables belong to other components (tests); not ours to refuse.
    return raw


def _from_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"{CONFIG_VAR}: cannot read {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{CONFIG_VAR}: {path!r} is not valid TOML: {exc}") from None


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings; raises SettingsError naming the first invalid setting."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    if config := environ.get(CONFIG_VAR):
        merged = _from_toml(config)
    env = _from_env(environ)
    tables = {t: {**merged.get(t, {}), **env.pop(t, {}), **overrides.pop(t, {})} for t in _NESTED}
    merged.update(env)
    merged.update(overrides)
    for table, values in tables.items():
        if values:
            merged[table] = values
    # One public URL for the whole server: the auth links are built from it.
    merged.setdefault("auth", {})["public_url"] = merged.get("public_url", DEFAULT_PUBLIC_URL)
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        where = re.search(r"at `([^`]+)`", message)
        unknown = re.search(r"unknown field `([^`]+)`", message)
        name = _env_name(where[1]) if where else "settings"
        named = re.match(r"([a-z]+(?:_[a-z0-9]+)+) ", message)
        if name == "settings" and named:  # a nested object's own check names the field first
            name = _env_name(named[1])
        if unknown:
            name = _env_name(f"{where[1] if where else '$'}.{unknown[1]}")
        raise SettingsError(f"{name}: {message.split(' - at ')[0]}") from None
    except (TypeError, ValueError) as exc:  # a nested settings object's own checks
        named = re.search(r"\b([a-z]+(?:_[a-z0-9]+)+)\b", str(exc))
        name = _env_name(named[1]) if named else "settings"
        raise SettingsError(f"{name}: {exc}") from None
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    settings.database_backend  # noqa: B018 - raises on an unsupported scheme
    settings.sqlite_path  # noqa: B018
    if not re.match(r"^https?://[^/\s]+", settings.public_url):
        raise SettingsError("CHATCORE_PUBLIC_URL: must be an absolute http(s) URL")
    for origin in settings.cors_origins:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise SettingsError(f"CHATCORE_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port])")
    for origin in settings.allowed_origins:
        if not re.match(r"^https?://[^/\s]+$", origin):
            raise SettingsError(f"CHATCORE_ALLOWED_ORIGINS: {origin!r} is not an origin (scheme://host)")
    if settings.secret_key:
        try:
            key = bytes.fromhex(settings.secret_key)
        except ValueError:
            raise SettingsError("CHATCORE_SECRET_KEY: must be hex") from None
        if len(key) < 32:
            raise SettingsError("CHATCORE_SECRET_KEY: must hold at least 32 bytes (64 hex digits)")
    for field in _LIMIT_FIELDS:
        if getattr(settings.limits, field) < 1:
            raise SettingsError(f"{_env_name(field)}: must be at least 1")
    limits = settings.limits
    if limits.default_page_size > limits.max_page_size:
        raise SettingsError("CHATCORE_DEFAULT_PAGE_SIZE: must not exceed CHATCORE_MAX_PAGE_SIZE")
    if settings.ws_port is not None and settings.ws_port in (0, settings.port):
        raise SettingsError("CHATCORE_WS_PORT: must be a fixed port other than CHATCORE_PORT")
    if settings.broker_url and not settings.broker_url.startswith(("redis://", "rediss://")):
        raise SettingsError(f"CHATCORE_BROKER_URL: unsupported scheme in {_redact(settings.broker_url)!r}")
    if settings.smtp_url and not settings.smtp_url.startswith(("smtp://", "smtps://")):
        raise SettingsError(f"CHATCORE_SMTP_URL: unsupported scheme in {_redact(settings.smtp_url)!r}")
