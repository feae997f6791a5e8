"""Helpers for the server tests: a word-level tokenizer, a bag-of-words ONNX encoder,
model versions in a repository, a fake backend, and servers on free loopback ports.

The bag-of-words encoder (mean of per-token random vectors, L2-normalised) is a real
ONNX model for ONNX Runtime; like any encoder, a text identical to an article's
title ranks that article first among distinct articles.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from starlette.applications import Starlette

from kbrec.repository import (
    METADATA_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    ModelVersion,
    VersionMetadata,
)
from kbrec.repository import publish_version as publish
from kbrec.tokenization import sha256_file
from server.inference.backends.base import BackendError, normalize_rows

REPO_ROOT = Path(__file__).resolve().parents[2]
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
# One string, split once: easier to read and extend than a list of 90 quoted words.
VOCAB_TEXT = """
reset password account login email invoice refund billing printer page numbers margins
fonts tables charts formulas filters images columns headers footnotes bookmarks comments
shortcuts templates macros borders colors sorting hyperlinks styles export import backup
restore sync calendar contacts notifications privacy security token api webhook team
invite remove delete update upgrade downgrade plan trial cancel subscription mobile app
desktop install uninstall language theme dark mode offline search archive label filter
how do i my the a to in of and with for on change set up add new
"""
VOCAB_WORDS = tuple(dict.fromkeys(VOCAB_TEXT.split()))
DIM = 16
MAX_LENGTH = 32
DEADLINE_S = 60.0


def write_word_tokenizer(path: Path, words: Sequence[str] = VOCAB_WORDS) -> None:
    """A WordLevel tokenizer.json: lower case, whitespace split, [CLS] … [SEP], [PAD] = 0."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *dict.fromkeys(words)))}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(path))


def vocab_size() -> int:
    return len(SPECIAL_TOKENS) + len(dict.fromkeys(VOCAB_WORDS))


def embedding_table(size: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((size, dim)).astype(np.float32)


def write_bag_of_words_onnx(
    path: Path, table: np.ndarray, input_name: str = "input_ids", output_name: str = "embedding"
) -> None:
    """input_ids int32 [batch, seq] → L2-normalised mean of the non-padding rows of `table`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Gather", ["table", input_name], ["rows"]),
        helper.make_node("Greater", [input_name, "zero"], ["is_token"]),
        helper.make_node("Cast", ["is_token"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["rows", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["safe_count"]),
        helper.make_node("Div", ["summed", "safe_count"], ["mean"]),
        helper.make_node("LpNormalization", ["mean"], [output_name], axis=1, p=2),
    ]
    initializers = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array(0, dtype=np.int32), "zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
    ]
    graph = helper.make_graph(
        nodes,
        "bag_of_words",
        [helper.make_tensor_value_info(input_name, TensorProto.INT32, ["batch", "seq"])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", table.shape[1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def publish_bag_of_words_version(
    repository: Path,
    seed: int = 0,
    dim: int = DIM,
    max_length: int = MAX_LENGTH,
    version: int | None = None,
) -> int:
    """Publish a valid version (bag-of-words ONNX + word tokenizer) and return its number."""
    return publish(
        repository, lambda out: build_bag_of_words(out, seed, dim, max_length), version=version
    )


def build_bag_of_words(
    out: Path,
    seed: int,
    dim: int = DIM,
    max_length: int = MAX_LENGTH,
    metadata_dim: int | None = None,
) -> None:
    """A bag-of-words version's files; `metadata_dim` makes metadata.json lie about dim."""
    write_word_tokenizer(out / TOKENIZER_FILE)
    write_bag_of_words_onnx(out / MODEL_FILE, embedding_table(vocab_size(), dim, seed))
    write_metadata(out, metadata_dim or dim, max_length)


def write_metadata(out: Path, dim: int, max_length: int) -> None:
    metadata = VersionMetadata(
        dim=dim,
        max_length=max_length,
        tokenizer_sha256=sha256_file(out / TOKENIZER_FILE),
        model_sha256=sha256_file(out / MODEL_FILE),
        source={"saved_model": "tests", "digest": "0" * 64},
        parity={"max_abs_diff": 0.0, "tolerance": 1e-4, "cases": []},
        created_at="2026-11-27T00:00:00+00:00",
    )
    (out / METADATA_FILE).write_text(metadata.to_json(), encoding="utf-8")


@dataclass
class FakeBackend:
    """`EmbeddingBackend` without ONNX Runtime: bag-of-words vectors of the token ids.

    `calls` records each batch's shape and `group_calls` the number of batches of each
    `embed_groups` call; `gate`, when set, holds every call until released.
    """

    model_version: int
    dim: int = DIM
    max_length: int = MAX_LENGTH
    table: np.ndarray = field(default_factory=lambda: embedding_table(vocab_size(), DIM, 0))
    calls: list[tuple[int, int]] = field(default_factory=list)
    group_calls: list[int] = field(default_factory=list)
    fail_with: Exception | None = None
    gate: asyncio.Event | None = None
    closed: bool = False

    async def embed(self, token_ids: np.ndarray) -> np.ndarray:
        self.calls.append(token_ids.shape)
        if token_ids.shape[1] > self.max_length:  # as strict as the real backend
            raise BackendError(f"{token_ids.shape[1]} tokens > max length {self.max_length}")
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        mask = (token_ids > 0)[..., None]
        summed = (self.table[token_ids] * mask).sum(axis=1)
        return normalize_rows(summed / np.maximum(mask.sum(axis=1), 1))

    async def embed_groups(self, groups: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.group_calls.append(len(groups))
        return [await self.embed(group) for group in groups]

    isolates_background = False

    async def embed_background(self, token_ids: np.ndarray) -> np.ndarray:
        return await self.embed(token_ids)

    async def end_background(self) -> None:
        return None

    async def health(self) -> bool:
        return not self.closed

    async def close(self) -> None:
        self.closed = True


class FakeProvider:
    """A `BackendProvider` for create_app that makes (and records) FakeBackends."""

    def __init__(
        self,
        backends: list[FakeBackend] | None = None,
        make: Callable[[ModelVersion], FakeBackend] | None = None,
    ) -> None:
        self.backends = backends
        self.make = make or (lambda v: FakeBackend(v.number, v.metadata.dim, v.metadata.max_length))

    async def open(self, version: ModelVersion) -> FakeBackend:
        backend = self.make(version)
        if self.backends is not None:
            self.backends.append(backend)
        return backend

    async def hold(self, versions: Collection[ModelVersion]) -> None:
        return None


def loopback_listener() -> socket.socket:
    """A socket already bound to a free loopback port: no window for another process."""
    return socket.create_server(("127.0.0.1", 0))


@contextlib.contextmanager
def serve_in_thread(app: Starlette) -> Iterator[str]:
    """Run `app` on uvicorn in a thread on a free port; yields its base URL once started."""
    listener = loopback_listener()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn start")
        if not server.started:
            raise RuntimeError("uvicorn did not start (lifespan failed?)")
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(DEADLINE_S)
        listener.close()


def wait_until(condition, what: str, deadline_s: float = DEADLINE_S) -> None:
    """Poll `condition` until true; fail with `what` after the deadline (no blind sleeps)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def wait_ready(base_url: str) -> None:
    def ready() -> bool:
        try:
            return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, f"{base_url}/readyz")


class ServeProcess:
    """`kbrec serve --port 0` as a child process; the URL comes from its ready log line.

    `kbrec` is the command that runs the CLI: this checkout's by default, or another
    installation's `kbrec` script (run from `cwd`, away from this checkout's packages).
    """

    READY = re.compile(r"kbrec ready on (http://\S+) ")

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        kbrec: Sequence[str] = (sys.executable, "-m", "cli.main"),
        cwd: Path = REPO_ROOT,
    ) -> None:
        command = [*kbrec, "serve", "--port", "0", *args]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._ready: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            match = self.READY.search(line)
            if match:
                self._ready.put(match.group(1))
        self._ready.put(None)  # exited

    def _wait_for_url(self) -> str:
        try:
            url = self._ready.get(timeout=DEADLINE_S)
        except queue.Empty:
            url = None
        if url is None:
            self.stop()
            raise RuntimeError("kbrec serve did not get ready:\n" + self.output())
        return url

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        """SIGTERM, then wait for the exit and the last line of output.

        uvicorn shuts down gracefully and then re-raises the signal, so a clean stop
        returns -SIGTERM. A process still running after the deadline is killed (and the
        timeout raised): no test leaves a server behind.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(DEADLINE_S)
            raise
        self._reader.join(DEADLINE_S)
        return code

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def metric_value(metrics_text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sample `name{labels}` of a Prometheus text exposition, 0 if absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted((labels or {}).items()))
    for line in metrics_text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, label_text = sample.partition("{")
        found = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if sample_name == name and found == wanted:
            return float(value)
    return 0.0
