"""Service settings: one frozen object built from defaults, `KBREC_*` variables and flags.

Every field can be set as the environment variable `KBREC_<FIELD>` (upper case) and
as the `kbrec serve` flag `--<field-with-dashes>`; flags win over the environment,
the environment over the defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ENV_PREFIX = "KBREC_"

# The `kbrec serve --help` text of each field.
SETTING_HELP: Final[dict[str, str]] = {
    "repository": "model repository (Triton layout)",
    "db": "SQLite article store",
    "host": "address to listen on",
    "port": "port to listen on (0: any free port)",
    "max_batch_size": "most queries embedded in one backend call",
    "max_wait_ms": "longest a query waits for others to join its batch",
    "max_queue": "queries waiting for a batch before new ones get a 503",
    "ingest_max_batch_size": "most articles embedded in one backend call",
    "ingest_max_queue": "article writes waiting to be embedded before a 503",
    "ingest_every": "when both wait: query batches run per article batch (article share bound)",
    "intra_op_threads": "ONNX Runtime intra-op threads (0: ONNX Runtime decides)",
    "tokenizer_threads": "threads that tokenize off the event loop",
    "max_body_bytes": "largest request body (413 above)",
    "max_import_bytes": "largest Zendesk import body (413 above)",
    "retry_after_s": "Retry-After seconds sent with 429/503",
    "access_log": "log every request (uvicorn access log)",
    "triton_url": "embed through Triton at grpc://HOST:PORT (empty: embedded ONNX Runtime)",
    "triton_timeout_s": "deadline of every Triton call, seconds (503 when exceeded)",
    "repository_poll_s": "seconds between checks of the repository for new versions (0: off)",
    "backfill_share": "most of the backend's time re-embedding for a new version may take (0-1]",
    "backfill_step_tokens": "most padded tokens per re-embedding call (a query waits <= one)",
    "backfill_threads": "embedded: ONNX Runtime threads of the re-embedding session",
}


@dataclass(frozen=True)
class Settings:
    """See SETTING_HELP for what each field means."""

    repository: Path = Path("model_repository")
    db: Path = Path("data/kbrec.sqlite")
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 256
    ingest_max_batch_size: int = 8
    ingest_max_queue: int = 64
    ingest_every: int = 4
    intra_op_threads: int = 0
    tokenizer_threads: int = 2
    max_body_bytes: int = 1 << 20
    max_import_bytes: int = 64 << 20
    retry_after_s: int = 1
    access_log: bool = False
    triton_url: str = ""
    triton_timeout_s: float = 5.0
    repository_poll_s: float = 2.0
    backfill_share: float = 1.0
    backfill_step_tokens: int = 256
    backfill_threads: int = 1

    def __post_init__(self) -> None:
        positive = (
            "max_batch_size",
            "max_queue",
            "ingest_max_batch_size",
            "ingest_max_queue",
            "ingest_every",
            "tokenizer_threads",
            "max_body_bytes",
            "max_import_bytes",
            "retry_after_s",
            "backfill_step_tokens",
            "backfill_threads",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_queue < self.max_batch_size:
            raise ValueError("max_queue must be >= max_batch_size, or batches never fill")
        if self.ingest_max_queue < self.ingest_max_batch_size:
            raise ValueError("ingest_max_queue must be >= ingest_max_batch_size")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.triton_url and not self.triton_url.startswith("grpc://"):
            raise ValueError(f"triton_url must be grpc://HOST:PORT, got {self.triton_url!r}")
        if self.repository_poll_s < 0:
            raise ValueError(f"repository_poll_s must be >= 0, got {self.repository_poll_s}")
        if not 0 < self.backfill_share <= 1:
            raise ValueError(f"backfill_share must be in (0, 1], got {self.backfill_share}")
        if self.triton_timeout_s <= 0:
            raise ValueError(f"triton_timeout_s must be > 0, got {self.triton_timeout_s}")

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {text!r}")


def field_parser(settings_field: dataclasses.Field[Any]) -> Callable[[str], Any]:
    """How a text value (environment variable or flag) becomes the field's type."""
    default = settings_field.default
    if isinstance(default, bool):
        return parse_bool
    if isinstance(default, Path):
        return Path
    return type(default)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def settings_from(
    environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Defaults, then `KBREC_*` variables, then `overrides` (flags; None means unset).

    Raises ValueError naming the variable or field that is malformed.
    """
    values: dict[str, Any] = {}
    for settings_field in dataclasses.fields(Settings):
        variable = env_name(settings_field.name)
        if variable in environ:
            try:
                values[settings_field.name] = field_parser(settings_field)(environ[variable])
            except ValueError as exc:
                raise ValueError(f"{variable}: {exc}") from exc
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    return Settings(**values)
