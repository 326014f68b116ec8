"""Settings from the environment, each read and checked in one place.

A bad or missing value raises `ConfigError` with one line that names the
variable; `python -m pyworker` prints that line and exits with status 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from .http import ClientLimits, ServerLimits
from .http.json_checks import MAX_JSON_DEPTH
from .logs import LOG_FORMATS
from .sessions import DEFAULT_MAX_SESSIONS


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line naming it."""


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value not in (None, "") else None


def env_str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    return _get(env, name) or default


def env_required(env: Mapping[str, str], name: str, what: str) -> str:
    value = _get(env, name)
    if value is None:
        raise ConfigError(f"{name} is not set: {what}")
    return value


N = TypeVar("N", int, float)


def _env_number(env: Mapping[str, str], name: str, default: N, minimum: N, parse: Callable[[str], N], kind: str) -> N:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {kind}, not {raw!r}") from None
    if not value >= minimum:  # also refuses NaN
        raise ConfigError(f"{name} must be at least {minimum:g}, not {raw}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    return _env_number(env, name, default, minimum, int, "a whole number")


def env_float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _env_number(env, name, default, minimum, float, "a number")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


REPORTS_OFF = {"off", "none"}


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """Who the worker is and where it reports: read first, so that a worker
    whose other settings are wrong can still tell the autoscaler why."""

    addrs: tuple[str, ...]  # empty: reports (and key fetching) are off
    worker_id: int
    master_token: str
    public_url: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReportConfig:
        e = os.environ if env is None else env
        raw = env_str(e, "REPORT_ADDR", "https://run.vast.ai") or ""
        addrs: tuple[str, ...] = ()
        if raw.strip().lower() not in REPORTS_OFF:
            addrs = tuple(a.strip().rstrip("/") for a in raw.split(",") if a.strip())
            for addr in addrs:
                if not addr.startswith(("http://", "https://")):
                    raise ConfigError(f"REPORT_ADDR must list http:// or https:// URLs, not {addr!r}")
        port = env_int(e, "WORKER_PORT", 3000, minimum=0)
        public_url = None
        worker_id = 0
        if addrs:
            worker_id = env_int(e, "CONTAINER_ID", 0) if _get(e, "CONTAINER_ID") else -1
            if worker_id < 0:
                raise ConfigError("CONTAINER_ID is not set: the instance id the worker reports as `id`")
            ip = env_required(e, "PUBLIC_IPADDR", "the instance's public address, part of the worker's URL")
            public_port = env_required(
                e, f"VAST_TCP_PORT_{port}", f"the public port mapped to WORKER_PORT {port}, part of the worker's URL"
            )
            scheme = "https" if env_bool(e, "USE_SSL", False) else "http"
            public_url = f"{scheme}://{ip}:{public_port}"
        return cls(addrs, worker_id, env_str(e, "MASTER_TOKEN", "") or "", public_url)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything `start_server` reads from the environment."""

    host: str
    port: int
    model_log: str | None
    model_server_url: str | None
    reports: ReportConfig
    unsecured: bool
    signature_schemes: tuple[str, ...]
    check_url: bool
    use_ssl: bool
    ssl_cert: str
    ssl_key: str
    state_dir: str
    model_name: str
    benchmark_concurrency: int | None
    health_interval_s: float
    server_limits: ServerLimits
    max_json_depth: int
    client_limits: ClientLimits
    shutdown_grace_s: float
    log_level: str
    log_format: str  # text or json
    max_sessions: int
    # The plain-HTTP listener for /session/end (None: off).
    session_end_host: str
    session_end_port: int | None
    # The Prometheus listener for /metrics (None: off).
    metrics_host: str
    metrics_port: int | None
    ready_timeout_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        e = os.environ if env is None else env
        server_defaults = ServerLimits()
        client_defaults = ClientLimits()
        reports = ReportConfig.from_env(e)
        unsecured = env_bool(e, "UNSECURED", False)
        if not reports.addrs and not unsecured:
            raise ConfigError(
                "REPORT_ADDR is off, so there is no autoscaler to fetch the public key from: "
                "set UNSECURED=true for local development"
            )
        schemes = tuple(
            s.strip() for s in (env_str(e, "PYWORKER_SIGNATURE_SCHEMES", "url") or "url").split(",") if s.strip()
        )
        for scheme in schemes:
            if scheme not in ("url", "all-fields"):
                raise ConfigError(f"PYWORKER_SIGNATURE_SCHEMES takes url and all-fields, not {scheme!r}")
        concurrency = env_int(e, "PYWORKER_BENCHMARK_CONCURRENCY", 0, minimum=0)
        port = env_int(e, "WORKER_PORT", 3000, minimum=0)
        return cls(
            host=env_str(e, "WORKER_HOST", "0.0.0.0") or "0.0.0.0",
            port=port,
            model_log=env_str(e, "MODEL_LOG"),
            model_server_url=env_str(e, "MODEL_SERVER_URL"),
            reports=reports,
            unsecured=unsecured,
            signature_schemes=schemes or ("url",),
            check_url=env_bool(e, "PYWORKER_CHECK_URL", True),
            use_ssl=env_bool(e, "USE_SSL", False),
            ssl_cert=env_str(e, "PYWORKER_SSL_CERT", "/etc/instance.crt") or "/etc/instance.crt",
            ssl_key=env_str(e, "PYWORKER_SSL_KEY", "/etc/instance.key") or "/etc/instance.key",
            state_dir=env_str(e, "PYWORKER_STATE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "pyworker"),
            model_name=env_str(e, "MODEL_NAME", "") or "",
            benchmark_concurrency=concurrency or None,
            health_interval_s=env_float(e, "PYWORKER_HEALTH_INTERVAL_S", 10.0, 0.01),
            server_limits=ServerLimits(
                max_header_bytes=env_int(e, "PYWORKER_MAX_HEADER_BYTES", server_defaults.max_header_bytes, 1024),
                max_body_bytes=env_int(e, "PYWORKER_MAX_BODY_BYTES", server_defaults.max_body_bytes, 1),
                header_timeout_s=env_float(e, "PYWORKER_HEADER_TIMEOUT_S", server_defaults.header_timeout_s, 0.001),
                body_timeout_s=env_float(e, "PYWORKER_BODY_TIMEOUT_S", server_defaults.body_timeout_s, 0.001),
                keepalive_timeout_s=env_float(
                    e, "PYWORKER_KEEPALIVE_TIMEOUT_S", server_defaults.keepalive_timeout_s, 0.001
                ),
                min_body_rate=env_float(e, "PYWORKER_MIN_BODY_RATE", server_defaults.min_body_rate, 0.0),
                body_rate_grace_s=env_float(e, "PYWORKER_BODY_RATE_GRACE_S", server_defaults.body_rate_grace_s, 0.0),
                send_timeout_s=env_float(e, "PYWORKER_SEND_TIMEOUT_S", server_defaults.send_timeout_s, 0.001),
                linger_s=env_float(e, "PYWORKER_LINGER_S", server_defaults.linger_s, 0.0),
                max_connections=env_int(e, "PYWORKER_MAX_CONNECTIONS", server_defaults.max_connections, 1),
            ),
            max_json_depth=env_int(e, "PYWORKER_MAX_JSON_DEPTH", MAX_JSON_DEPTH, 1),
            client_limits=ClientLimits(
                connect_timeout_s=env_float(e, "MODEL_CONNECT_TIMEOUT_S", client_defaults.connect_timeout_s, 0.001),
                read_timeout_s=env_float(e, "MODEL_READ_TIMEOUT_S", client_defaults.read_timeout_s, 0.001),
            ),
            shutdown_grace_s=env_float(e, "PYWORKER_SHUTDOWN_GRACE_S", 10.0),
            log_level=(env_str(e, "PYWORKER_LOG_LEVEL", "INFO") or "INFO").upper(),
            log_format=_log_format(e),
            max_sessions=env_int(e, "PYWORKER_MAX_SESSIONS", DEFAULT_MAX_SESSIONS, minimum=-1),
            session_end_host=env_str(e, "PYWORKER_SESSION_END_HOST", "127.0.0.1") or "127.0.0.1",
            session_end_port=_side_port(e, "WORKER_HTTP_PORT", port, 1),
            metrics_host=env_str(e, "PYWORKER_METRICS_HOST", "127.0.0.1") or "127.0.0.1",
            metrics_port=_side_port(e, "PYWORKER_METRICS_PORT", port, 2),
            ready_timeout_s=env_float(e, "PYWORKER_READY_TIMEOUT_S", 1200.0, 1.0),
        )


def _log_format(env: Mapping[str, str]) -> str:
    value = (env_str(env, "PYWORKER_LOG_FORMAT", "text") or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"PYWORKER_LOG_FORMAT is text or json, not {value!r}")
    return value


def _side_port(env: Mapping[str, str], name: str, port: int, offset: int) -> int | None:
    """A side listener's port from `name`: a port, or off; by default WORKER_PORT + `offset`
    (any free port when WORKER_PORT is 0)."""
    raw = _get(env, name)
    if raw is not None and raw.strip().lower() in REPORTS_OFF | {"false", "0"}:
        return None
    if raw is None:
        return port + offset if port else 0
    value = env_int(env, name, 0, minimum=1)
    if value > 65535:
        raise ConfigError(f"{name} must be a port number (1-65535) or off, not {raw}")
    return value
