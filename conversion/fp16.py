"""FP16 versions: `model_fp16.onnx` next to the FP32 `model.onnx`, with the same contract.

The graph computes in FP16 inside and keeps its edges: `input_ids` int32 in, `embedding`
float32 out (casts at the edges), and the ops ONNX Runtime's converter blocks (Max,
Range, ... its default block list) stay FP32 with casts around them. The model is
published only if, on the corpus, FP16 agrees with FP32 (`require_fp16`):
- every article's and test query's embedding has cosine >= 0.999 with FP32's;
- the top 5 articles of >= 99% of test queries, each ranked within its own account as
  serving does, are the same five.
Both models run in ONNX Runtime on the CPU here (slower in FP16, but the same numbers a
GPU computes up to its own rounding).

The converter is `onnxruntime.transformers.float16`, which ships with onnxruntime: on
this encoder onnxconverter-common 1.16 wrote graphs onnx.checker rejects (an epsilon
shared with a blocked Max left FP32 under FP16 adds; casts whose types no longer
matched). ORT's converter appends the casts it inserts at the end of the node list, so
the nodes are sorted again before saving.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from kbrec.records import ARTICLES_FILE, QUERIES_FILE, article_text, read_articles, read_queries
from kbrec.tokenization import TextTokenizer, pad_batch

FP16_MODEL_FILE: Final = "model_fp16.onnx"
MIN_COSINE: Final = 0.999
MIN_TOP5_AGREEMENT: Final = 0.99
TOP: Final = 5
TEST_SPLIT: Final = "test"
EMBED_BATCH: Final = 32

Embed = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Fp16Report:
    articles: int
    queries: int
    min_cosine: float
    mean_cosine: float
    top5_agreement: float  # share of test queries with the same five articles
    top5_same_order: float  # ... in the same order (reported, not gated)

    @property
    def passed(self) -> bool:
        return self.min_cosine >= MIN_COSINE and self.top5_agreement >= MIN_TOP5_AGREEMENT

    def describe(self) -> str:
        return (
            f"FP16 vs FP32 on {self.articles} articles and {self.queries} test queries: "
            f"cosine min {self.min_cosine:.6f} (mean {self.mean_cosine:.6f}, gate {MIN_COSINE}), "
            f"same top {TOP} for {self.top5_agreement:.1%} (gate {MIN_TOP5_AGREEMENT:.0%}; "
            f"same order {self.top5_same_order:.1%})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "articles": self.articles,
            "queries": self.queries,
            "min_cosine": self.min_cosine,
            "mean_cosine": self.mean_cosine,
            "top5_agreement": self.top5_agreement,
            "top5_same_order": self.top5_same_order,
            "gates": {"min_cosine": MIN_COSINE, "top5_agreement": MIN_TOP5_AGREEMENT},
        }


def convert_to_fp16(source: Path, target: Path) -> None:
    """Write the FP16 form of the FP32 model at `source` to `target` (same I/O types)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(source))
    # Its INFO lines print whole node protos (initializers it casts for blocked nodes).
    converter_log = logging.getLogger("onnxruntime.transformers.float16")
    level = converter_log.level
    converter_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # One warning per constant clamped into FP16's range (1e-12 epsilons, -1e9 masks).
            warnings.simplefilter("ignore", UserWarning)
            converted = convert_float_to_float16(model, keep_io_types=True)
    finally:
        converter_log.setLevel(level)
    OnnxModel(converted).topological_sort()
    onnx.save(converted, str(target))


def check_corpus(corpus: Path) -> None:
    """The files the FP16 check reads exist, and there are test queries (before slow work)."""
    for name in (ARTICLES_FILE, QUERIES_FILE):
        if not (corpus / name).is_file():
            raise FileNotFoundError(f"the FP16 check needs {corpus / name} (kbrec corpus fetch)")
    if not any(query.split == TEST_SPLIT for query in read_queries(corpus / QUERIES_FILE)):
        raise ValueError(f"{corpus / QUERIES_FILE} has no {TEST_SPLIT} queries")


def compare_fp16(
    fp32: Embed,
    fp16: Embed,
    corpus: Path,
    tokenizer: Path,
    max_length: int,
    log: Callable[[str], None] = print,
) -> Fp16Report:
    """Embed the corpus's articles and test queries with both models and compare."""
    articles = read_articles(corpus / ARTICLES_FILE)
    queries = [q for q in read_queries(corpus / QUERIES_FILE) if q.split == TEST_SPLIT]
    texts = [article_text(a) for a in articles] + [q.text for q in queries]
    encoder = TextTokenizer(tokenizer, max_length)
    token_rows = encoder.encode(texts)
    log(f"FP16 check: embedding {len(articles)} articles and {len(queries)} queries twice…")
    full, half = embed_rows(fp32, token_rows), embed_rows(fp16, token_rows)
    cosines = np.sum(normalized(full) * normalized(half), axis=1)
    article_rows: dict[str, list[int]] = defaultdict(list)
    for row, article in enumerate(articles):
        article_rows[article.account_id].append(row)
    same_set = same_order = 0
    for number, query in enumerate(queries):
        rows = article_rows.get(query.account_id, [])
        ids = [articles[row].article_id for row in rows]
        query_row = len(articles) + number
        want = top_ids(full[rows] @ full[query_row], ids)
        got = top_ids(half[rows] @ half[query_row], ids)
        same_set += set(want) == set(got)
        same_order += want == got
    count = max(len(queries), 1)
    return Fp16Report(
        articles=len(articles),
        queries=len(queries),
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
        top5_agreement=same_set / count,
        top5_same_order=same_order / count,
    )


def require_fp16(report: Fp16Report) -> None:
    from conversion.errors import ConversionError

    if not report.passed:
        raise ConversionError(f"FP16 model refused: {report.describe()}")


def embed_rows(embed: Embed, rows: Sequence[Sequence[int]]) -> np.ndarray:
    """Embeddings of token rows in batches of similar lengths (little padding)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out: np.ndarray | None = None
    for start in range(0, len(order), EMBED_BATCH):
        batch = order[start : start + EMBED_BATCH]
        vectors = np.asarray(embed(pad_batch([rows[i] for i in batch])), dtype=np.float32)
        if out is None:
            out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
        out[batch] = vectors
    assert out is not None
    return out


def normalized(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def top_ids(scores: np.ndarray, ids: Sequence[str]) -> list[str]:
    """The `TOP` best ids by score, ties by id (as serving breaks them)."""
    order = np.lexsort((np.array(ids), -scores))
    return [ids[i] for i in order[:TOP]]
