"""Service settings: one frozen object of nested sections, built from defaults,
`KBREC_*` variables and flags.

Each section belongs to the part it configures and holds the one default of each of
its knobs: `BatchingConfig` (server.inference.batching), `BackfillPacing`
(server.versions.backfill), and the sections below. Every knob has a flat name,
unique across sections (`max_wait_ms`, `backfill_share`, …), which is its
environment variable `KBREC_<NAME>` and its `kbrec serve` flag `--<name-with-dashes>`;
flags win over the environment, the environment over the defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from server.inference.array_modules import RANKING_DEVICES, RANKING_DTYPES
from server.inference.backends.base import ENCODER_DEVICES
from server.inference.batching import BatchingConfig
from server.inference.cores import usable_cores
from server.storage.opening import store_location
from server.versions.backfill import BackfillPacing

ENV_PREFIX = "KBREC_"
# Each instance holds its own copy of the model's weights (MiniLM: 90 MB); past a few,
# more cores go to each instance's intra-op threads instead.
AUTO_MAX_INSTANCES: Final = 4

# The `kbrec serve --help` text of each knob.
SETTING_HELP: Final[dict[str, str]] = {
    "repository": "model repository (Triton layout)",
    "db": "article store: a SQLite file or a postgresql:// URL",
    "repository_poll_s": "seconds between checks of the repository for new versions (0: off)",
    "feed_wait_s": (
        "longest wait between reads of the store's change log (writes of other processes; "
        "PostgreSQL wakes the reader at once, SQLite is polled every 20 ms)"
    ),
    "leader_check_s": "seconds between checks that the lifecycle leader is alive (or gone)",
    "host": "address to listen on",
    "port": "port to listen on (0: any free port)",
    "max_body_bytes": "largest request body (413 above)",
    "max_query_bytes": "largest recommendation text in UTF-8 bytes (413 above)",
    "max_import_bytes": "largest Zendesk import body (413 above)",
    "max_import_articles": "most articles (drafts included) in one Zendesk import (413 above)",
    "max_concurrent_imports": "imports running at once in a process (503 for one more)",
    "import_chunk_articles": "articles per transaction of an import (embedded, then committed)",
    "retry_after_s": "Retry-After seconds sent with 429/503",
    "access_log": "log every request (uvicorn access log)",
    "limit_concurrency": (
        "connections and requests a process serves at once; uvicorn answers 503 beyond "
        "(0: no limit)"
    ),
    "workers": (
        "processes serving the port, each with its own model session and index "
        "(a worker that dies is restarted)"
    ),
    "max_batch_size": "most queries embedded in one backend call",
    "max_wait_ms": "longest a query waits for others to join its batch",
    "target_p99_ms": (
        "p99 latency target, ms: the batcher sizes batches and waits to meet it "
        "(0: fixed --max-wait-ms)"
    ),
    "max_queue": "queries waiting for a batch before new ones get a 503",
    "max_queue_ms": (
        "a query whose expected wait for its batch (rows ahead ÷ served rate) is over this "
        "gets a 503 at once; one still queued after twice this is dropped with a 503 "
        "(0: only --max-queue)"
    ),
    "ingest_max_batch_size": "most articles embedded in one backend call",
    "ingest_max_queue": "article writes waiting to be embedded before a 503",
    "ingest_every": "when both wait: query batches run per article batch (article share bound)",
    "intra_op_threads": (
        "ONNX Runtime intra-op threads of each model instance (0: its share of the cores "
        "this process may use)"
    ),
    "tokenizer_threads": "threads that tokenize off the event loop",
    "model_instances": (
        "batches embedded at once: the embedded encoder loads this many sessions (each "
        "its own copy of the weights, with its share of the cores as intra-op threads); "
        "with Triton, calls in flight to it (0: one per core this process may use, at "
        f"most {AUTO_MAX_INSTANCES}, on the CPU; 1 on a GPU or with Triton)"
    ),
    "lone_batch_threads": (
        "ONNX Runtime intra-op threads of one more session, which embeds a batch that "
        "starts while no other is running, so that a query alone is not held to one "
        "instance's cores (0: this process's share of the cores; no such session when "
        "an instance has as many)"
    ),
    "ranking_threads": (
        "threads of NumPy's BLAS in CPU ranking (idle ones spin on the cores the encoder "
        "needs; more pays off only for accounts of many thousands of articles)"
    ),
    "backfill_threads": "embedded: ONNX Runtime threads of the re-embedding session",
    "triton_url": "embed through Triton at grpc://HOST:PORT (empty: embedded ONNX Runtime)",
    "triton_timeout_s": "deadline of every Triton call, seconds (503 when exceeded)",
    "device": (
        "embedded encoder: cpu, or cuda (ONNX Runtime's CUDA provider, TensorRT first when "
        "present; needs onnxruntime-gpu)"
    ),
    "ranking_device": (
        "where articles are ranked: cpu (a host matrix per account), cuda (every vector of a "
        "version in one GPU array, CuPy) or auto (cuda when CuPy finds a GPU)"
    ),
    "ranking_dtype": "GPU ranking: float32 or float16 article vectors (scores are float32)",
    "recommendation_log": (
        "log every answered request (ids, scores, version, arm; off the request path) for "
        "feedback, experiment reports and threshold suggestions"
    ),
    "log_query_text": "also log the ticket text of each request (privacy: off by default)",
    "log_retention_days": "days logged requests and their feedback are kept (0: for ever)",
    "log_flush_ms": (
        "the log is written in batches this often; feedback waits up to this long for a "
        "request not yet written"
    ),
    "log_max_queue": "logged requests waiting to be written before further ones are dropped",
    "min_score": (
        "default minimum score of a returned recommendation (-1: all); an account's own "
        "minimum (PUT /v1/accounts/{id}/settings) wins"
    ),
    "backfill_share": "most of the backend's time re-embedding for a new version may take (0-1]",
    "backfill_step_tokens": "most padded tokens per re-embedding call (a query waits <= one)",
    "admin_token_file": (
        "file holding the admin token, which turns authentication on (or the variable "
        "KBREC_ADMIN_TOKEN; never a flag: command lines are visible to every user of the host)"
    ),
    "allowed_hosts": (
        "Host header values served, comma-separated ('*.example.com', '*': any); "
        "default: loopback names on a loopback address, any elsewhere"
    ),
    "key_cache_s": "seconds an API key's validity is cached: a revocation applies within this",
    "max_account_articles": "articles an account may hold, unless its own quota says (409 above)",
    "max_article_bytes": "title and body bytes of an article, unless its account's quota says",
}


def require_positive(section: object, *names: str) -> None:
    for name in names:
        if getattr(section, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(section, name)}")


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1 << 20
    max_import_bytes: int = 64 << 20
    # A ticket's first few hundred tokens are all the model reads: 16 KiB is far more.
    max_query_bytes: int = 16 << 10
    retry_after_s: int = 1
    access_log: bool = False
    workers: int = 1
    limit_concurrency: int = 1024

    def __post_init__(self) -> None:
        require_positive(self, "max_body_bytes", "max_import_bytes", "max_query_bytes")
        require_positive(self, "retry_after_s", "workers")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.limit_concurrency < 0:
            raise ValueError(f"limit_concurrency must be >= 0, got {self.limit_concurrency}")


@dataclass(frozen=True)
class InferenceSettings:
    intra_op_threads: int = 0
    tokenizer_threads: int = 2
    ranking_threads: int = 1
    model_instances: int = 0  # 0: `instances` chooses
    lone_batch_threads: int = 0  # 0: the process's share of the cores
    backfill_threads: int = 1
    triton_url: str = ""
    triton_timeout_s: float = 5.0
    device: str = "cpu"
    ranking_device: str = "cpu"
    ranking_dtype: str = "float32"

    def __post_init__(self) -> None:
        require_positive(
            self,
            "tokenizer_threads",
            "ranking_threads",
            "backfill_threads",
            "triton_timeout_s",
        )
        for name, allowed in (
            ("device", ENCODER_DEVICES),
            ("ranking_device", RANKING_DEVICES),
            ("ranking_dtype", RANKING_DTYPES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.device != "cpu" and self.triton_url:
            raise ValueError("device is the embedded encoder's: Triton places its model itself")
        if self.intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")
        if self.model_instances < 0:
            raise ValueError(f"model_instances must be >= 0, got {self.model_instances}")
        if self.lone_batch_threads < 0:
            raise ValueError(f"lone_batch_threads must be >= 0, got {self.lone_batch_threads}")
        if self.triton_url and not self.triton_url.startswith("grpc://"):
            raise ValueError(f"triton_url must be grpc://HOST:PORT, got {self.triton_url!r}")

    def core_share(self, workers: int) -> int:
        """The cores each of `workers` processes may count on (at least one)."""
        return max(1, usable_cores() // workers)

    def instances(self, workers: int) -> int:
        """Model instances of each process: as set, else one per core it may use (its
        share among `workers`), at most AUTO_MAX_INSTANCES, when ONNX Runtime embeds on
        the CPU; one on a GPU or with Triton, which batch on their own. On the CPU,
        one-thread instances side by side outrun one instance of all the threads, whose
        threads wait at every operator's barrier (BENCHMARKS.md: 1.2× saturation and a
        5× lower p50 at 75 % load on two cores)."""
        if self.model_instances:
            return self.model_instances
        if self.device != "cpu" or self.triton_url:
            return 1
        return min(self.core_share(workers), AUTO_MAX_INSTANCES)


@dataclass(frozen=True)
class ImportSettings:
    max_import_articles: int = 10_000
    max_concurrent_imports: int = 1
    import_chunk_articles: int = 256

    def __post_init__(self) -> None:
        require_positive(
            self, "max_import_articles", "max_concurrent_imports", "import_chunk_articles"
        )


@dataclass(frozen=True)
class AccessSettings:
    """Authentication and the accounts' default quotas (server.http.auth)."""

    admin_token_file: str = ""  # "" and no KBREC_ADMIN_TOKEN: no authentication (loopback only)
    allowed_hosts: str = ""
    key_cache_s: float = 5.0
    max_account_articles: int = 100_000
    max_article_bytes: int = 256 << 10

    def __post_init__(self) -> None:
        require_positive(self, "key_cache_s", "max_account_articles", "max_article_bytes")
        for pattern in self.host_patterns:
            wildcard = pattern == "*" or pattern.startswith("*.")
            if "*" in (pattern[1:] if wildcard else pattern):
                raise ValueError(f"allowed_hosts: {pattern!r} is not a name, '*' or '*.domain'")

    @property
    def host_patterns(self) -> list[str]:
        return [host.strip().lower() for host in self.allowed_hosts.split(",") if host.strip()]


@dataclass(frozen=True)
class FeedbackSettings:
    """The recommendation log, the feedback on it and the precision knob
    (server.experiments; its room is on this layer, so the section is kept here)."""

    recommendation_log: bool = True
    log_query_text: bool = False  # privacy: the ticket text is not stored unless asked
    log_retention_days: float = 30.0
    log_flush_ms: float = 250.0
    log_max_queue: int = 10_000
    min_score: float = -1.0  # scores are cosine similarities: -1 returns everything

    def __post_init__(self) -> None:
        require_positive(self, "log_flush_ms", "log_max_queue")
        if self.log_retention_days < 0:
            raise ValueError(f"log_retention_days must be >= 0, got {self.log_retention_days}")
        if not -1.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [-1, 1], got {self.min_score}")


# A section's knobs are named by its fields, behind this prefix.
SECTION_PREFIX: Final = {"backfill": "backfill_"}


@dataclass(frozen=True)
class Settings:
    repository: Path = Path("model_repository")
    db: str | Path = Path("data/kbrec.sqlite")  # a SQLite file or a postgresql:// URL
    repository_poll_s: float = 2.0
    feed_wait_s: float = 1.0
    leader_check_s: float = 1.0
    http: HttpSettings = field(default_factory=HttpSettings)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    imports: ImportSettings = field(default_factory=ImportSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)
    backfill: BackfillPacing = field(default_factory=BackfillPacing)

    def __post_init__(self) -> None:
        object.__setattr__(self, "db", store_location(self.db))  # a URL stays text
        if self.repository_poll_s < 0:
            raise ValueError(f"repository_poll_s must be >= 0, got {self.repository_poll_s}")
        require_positive(self, "feed_wait_s", "leader_check_s")

    @classmethod
    def of(cls, **knobs: Any) -> Settings:
        """Settings from flat knob names (`port=0, max_wait_ms=1`), defaults elsewhere."""
        unknown = knobs.keys() - KNOBS.keys()
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        for name, value in knobs.items():
            section, field_name = KNOBS[name].path
            if section is None:
                top[field_name] = value
            else:
                sections.setdefault(section, {})[field_name] = value
        for section, values in sections.items():
            top[section] = SECTION_TYPES[section](**values)
        return cls(**top)

    @property
    def base_url(self) -> str:
        host = f"[{self.http.host}]" if ":" in self.http.host else self.http.host
        return f"http://{host}:{self.http.port}"


@dataclass(frozen=True)
class Knob:
    name: str  # flat: the flag and the environment variable
    path: tuple[str | None, str]  # (section field or None, field in it)
    field: dataclasses.Field[Any]

    @property
    def default(self) -> Any:
        return self.field.default

    def value(self, settings: Settings) -> Any:
        section, name = self.path
        holder = settings if section is None else getattr(settings, section)
        return getattr(holder, name)


def _sections() -> dict[str, type[Any]]:
    return {
        f.name: f.default_factory  # type: ignore[misc]
        for f in dataclasses.fields(Settings)
        if f.default_factory is not dataclasses.MISSING
    }


def _knobs() -> dict[str, Knob]:
    knobs: dict[str, Knob] = {}
    for top in dataclasses.fields(Settings):
        if top.name in SECTION_TYPES:
            prefix = SECTION_PREFIX.get(top.name, "")
            for inner in dataclasses.fields(SECTION_TYPES[top.name]):
                add_knob(knobs, Knob(prefix + inner.name, (top.name, inner.name), inner))
        else:
            add_knob(knobs, Knob(top.name, (None, top.name), top))
    return knobs


def add_knob(knobs: dict[str, Knob], knob: Knob) -> None:
    if knob.name in knobs:  # one flag and one variable per knob
        raise RuntimeError(f"two settings are named {knob.name!r}")
    knobs[knob.name] = knob


SECTION_TYPES: Final[dict[str, type[Any]]] = _sections()
KNOBS: Final[dict[str, Knob]] = _knobs()


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {text!r}")


def knob_parser(knob: Knob) -> Callable[[str], Any]:
    """How a text value (environment variable or flag) becomes the knob's type."""
    default = knob.default
    if knob.name == "db":
        return store_location
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

    Raises ValueError naming the variable or knob that is malformed.
    """
    values: dict[str, Any] = {}
    for knob in KNOBS.values():
        variable = env_name(knob.name)
        if variable in environ:
            try:
                values[knob.name] = knob_parser(knob)(environ[variable])
            except ValueError as exc:
                raise ValueError(f"{variable}: {exc}") from exc
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    return Settings.of(**values)
