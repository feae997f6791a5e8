"""`kbrec train` and `kbrec evaluate`: corpus → (fine-tuned) encoder → export, with evaluation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import tensorflow as tf

from kbrec.errors import CommandError
from kbrec.tokenization import TextTokenizer
from training.corpus.records import (
    ARTICLES_FILE,
    QUERIES_FILE,
    Article,
    Query,
    read_articles,
    read_queries,
)
from training.embedding import make_embedder
from training.encoder import EncoderConfig, TextEncoder, build_encoder
from training.evaluation import BM25Ranker, EmbeddingRanker, Metrics, evaluate, format_table
from training.export import export_encoder, read_config
from training.pairs import article_text
from training.pretrained import load_minilm, tokenizer_path
from training.train import TrainConfig, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    corpus: Path
    out: Path
    train: TrainConfig
    init: str = "minilm"  # or "random": small sizes from `random_config`
    random_config: EncoderConfig | None = None
    evaluate: bool = True
    split: str = "test"


def load_corpus(corpus: Path) -> tuple[list[Article], list[Query]]:
    articles_file, queries_file = corpus / ARTICLES_FILE, corpus / QUERIES_FILE
    if not articles_file.is_file():
        raise CommandError(f"{articles_file} not found: run `kbrec corpus fetch --out {corpus}`")
    articles = read_articles(articles_file)
    queries = read_queries(queries_file) if queries_file.is_file() else []
    if not articles:
        raise CommandError(f"{articles_file} has no articles")
    return articles, queries


def embedding_metrics(
    model_fn: Callable[[tf.Tensor], tf.Tensor],
    tokenizer: TextTokenizer,
    articles: Sequence[Article],
    queries: Sequence[Query],
    article_length: int,
    split: str,
) -> Metrics:
    # Index-entry queries are far shorter than article_length, so one truncation serves both.
    embed = make_embedder(model_fn, tokenizer, max_length=article_length)
    ranker = EmbeddingRanker(articles, embed, article_text=article_text)
    return evaluate(ranker, queries, split=split)


def run_training(options: TrainOptions) -> dict[str, object]:
    """Returns metrics.json's content; the export lands in `options.out`."""
    articles, queries = load_corpus(options.corpus)
    tokenizer_file = tokenizer_path()
    model = _initial_model(options)
    tokenizer = TextTokenizer(tokenizer_file, model.config.max_length)
    config = options.train
    results: dict[str, Metrics] = {}
    has_queries = any(q.split == options.split for q in queries)
    if options.evaluate and has_queries:
        started = time.perf_counter()
        results["BM25 (stemmed)"] = evaluate(
            BM25Ranker(articles, stem=True), queries, options.split
        )
        results["BM25 (no stemming)"] = evaluate(
            BM25Ranker(articles, stem=False), queries, options.split
        )
        label = "MiniLM as shipped" if options.init == "minilm" else "random init"
        results[label] = embedding_metrics(
            model, tokenizer, articles, queries, config.article_length, options.split
        )
        log.info("baselines evaluated in %.0f s", time.perf_counter() - started)
    summary = train(model, tokenizer, articles, queries, config)
    if options.evaluate and has_queries and config.max_steps > 0:
        results[f"fine-tuned ({config.max_steps} steps)"] = embedding_metrics(
            model, tokenizer, articles, queries, config.article_length, options.split
        )
    metrics: dict[str, object] = {
        "init": options.init,
        "corpus": str(options.corpus),
        "split": options.split,
        "train": summary,
        "train_config": config.to_dict(),
        "evaluation": {name: asdict(m) for name, m in results.items()},
    }
    export_encoder(model, options.out, tokenizer_file, metrics)
    if results:
        print(f"\nRanking within each query's own account, {options.split} split:\n")
        print(format_table(results))
    print(f"\nexported {options.out} (SavedModel, tokenizer.json, metrics.json)")
    return metrics


def _initial_model(options: TrainOptions) -> TextEncoder:
    if options.init == "minilm":
        return load_minilm(seed=options.train.seed)
    if options.init == "random":
        return build_encoder(options.random_config or EncoderConfig(), seed=options.train.seed)
    raise CommandError(f"unknown --init {options.init!r}: use minilm or random")


def run_evaluation(
    corpus: Path, saved_models: Sequence[Path], split: str, article_length: int
) -> dict[str, Metrics]:
    """BM25 and each exported SavedModel on the same split."""
    articles, queries = load_corpus(corpus)
    if not any(q.split == split for q in queries):
        raise CommandError(f"{corpus / QUERIES_FILE} has no {split!r} queries")
    results = {
        "BM25 (stemmed)": evaluate(BM25Ranker(articles, stem=True), queries, split),
        "BM25 (no stemming)": evaluate(BM25Ranker(articles, stem=False), queries, split),
    }
    for path in saved_models:
        if not (path / "saved_model.pb").is_file():
            raise CommandError(f"{path} is not a SavedModel export (no saved_model.pb)")
        signature = tf.saved_model.load(str(path)).signatures["serving_default"]
        tokenizer = TextTokenizer(path / "tokenizer.json", read_config(path).max_length)

        def model_fn(ids: tf.Tensor, fn: Callable = signature) -> tf.Tensor:
            return fn(input_ids=ids)["embedding"]

        results[str(path)] = embedding_metrics(
            model_fn, tokenizer, articles, queries, article_length, split
        )
    print(format_table(results))
    return results
