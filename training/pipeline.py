"""`kbrec train` and `kbrec evaluate`: corpus → (fine-tuned) encoder → export, with evaluation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import tensorflow as tf

from kbrec.errors import CommandError
from kbrec.records import (
    ARTICLES_FILE,
    QUERIES_FILE,
    Article,
    Query,
    article_text,
    read_articles,
    read_queries,
)
from kbrec.tokenization import TextTokenizer
from training.embedding import make_embedder
from training.encoder import EncoderConfig, TextEncoder, build_encoder
from training.evaluation import (
    BM25Ranker,
    EmbeddingRanker,
    Metrics,
    Ranker,
    evaluate,
    format_table,
)
from training.export import export_encoder, read_config
from training.faq import faq_queries
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


# The two evaluations of every model: index entries held out from training (in
# domain) and hand-written questions (out of domain: training never sees that style).
IN_DOMAIN = "index entries"
OUT_OF_DOMAIN = "FAQ questions"
Results = dict[str, dict[str, Metrics]]


def embedding_ranker(
    model_fn: Callable[[tf.Tensor], tf.Tensor],
    tokenizer: TextTokenizer,
    articles: Sequence[Article],
    article_length: int,
) -> EmbeddingRanker:
    # Queries are far shorter than article_length, so one truncation serves both.
    embed = make_embedder(model_fn, tokenizer, max_length=article_length)
    # One call for all articles lets the embedder sort them by length globally.
    return EmbeddingRanker(articles, embed, article_text=article_text, batch_size=1 << 16)


def score(
    results: Results,
    name: str,
    ranker: Ranker,
    queries: Sequence[Query],
    faq: Sequence[Query],
    split: str,
) -> None:
    """Add `name`'s metrics on both query sets (evaluate now: the model may change later)."""
    results.setdefault(IN_DOMAIN, {})[name] = evaluate(ranker, queries, split)
    if faq:  # a user's own corpus has none of the LibreOffice articles they name
        results.setdefault(OUT_OF_DOMAIN, {})[name] = evaluate(ranker, faq, "test")


def print_results(results: Results, split: str) -> None:
    titles = {
        IN_DOMAIN: f"Held-out index entries ({split} split), ranked within their own account:",
        OUT_OF_DOMAIN: "Hand-written FAQ questions (out of domain), same ranking:",
    }
    for key, rows in results.items():
        print(f"\n{titles[key]}\n\n{format_table(rows)}")


def run_training(options: TrainOptions) -> dict[str, object]:
    """Returns metrics.json's content; the export lands in `options.out`."""
    articles, queries = load_corpus(options.corpus)
    faq = faq_queries({(a.account_id, a.article_id) for a in articles})
    tokenizer_file = tokenizer_path()
    model = _initial_model(options)
    tokenizer = TextTokenizer(tokenizer_file, model.config.max_length)
    config = options.train
    results: Results = {}
    evaluating = options.evaluate and any(q.split == options.split for q in queries)
    if evaluating:
        started = time.perf_counter()
        for name, ranker in bm25_rankers(articles).items():
            score(results, name, ranker, queries, faq, options.split)
        label = "MiniLM as shipped" if options.init == "minilm" else "random init"
        ranker = embedding_ranker(model, tokenizer, articles, config.article_length)
        score(results, label, ranker, queries, faq, options.split)
        log.info("baselines evaluated in %.0f s", time.perf_counter() - started)
    summary = train(model, tokenizer, articles, queries, config)
    if evaluating and config.max_steps > 0:
        ranker = embedding_ranker(model, tokenizer, articles, config.article_length)
        score(
            results, f"fine-tuned ({config.max_steps} steps)", ranker, queries, faq, options.split
        )
    metrics: dict[str, object] = {
        "init": options.init,
        "corpus": str(options.corpus),
        "split": options.split,
        "train": summary,
        "train_config": config.to_dict(),
        "evaluation": {
            key: {name: asdict(m) for name, m in rows.items()} for key, rows in results.items()
        },
    }
    export_encoder(model, options.out, tokenizer_file, metrics)
    print_results(results, options.split)
    print(f"\nexported {options.out} (SavedModel, tokenizer.json, metrics.json)")
    return metrics


def bm25_rankers(articles: Sequence[Article]) -> dict[str, Ranker]:
    return {
        "BM25 (stemmed)": BM25Ranker(articles, stem=True),
        "BM25 (no stemming)": BM25Ranker(articles, stem=False),
    }


def _initial_model(options: TrainOptions) -> TextEncoder:
    if options.init == "minilm":
        return load_minilm(seed=options.train.seed)
    if options.init == "random":
        return build_encoder(options.random_config or EncoderConfig(), seed=options.train.seed)
    raise CommandError(f"unknown --init {options.init!r}: use minilm or random")


def run_evaluation(
    corpus: Path, saved_models: Sequence[Path], split: str, article_length: int
) -> Results:
    """BM25 and each exported SavedModel on the same queries."""
    articles, queries = load_corpus(corpus)
    if not any(q.split == split for q in queries):
        raise CommandError(f"{corpus / QUERIES_FILE} has no {split!r} queries")
    faq = faq_queries({(a.account_id, a.article_id) for a in articles})
    results: Results = {}
    for name, ranker in bm25_rankers(articles).items():
        score(results, name, ranker, queries, faq, split)
    for path in saved_models:
        if not (path / "saved_model.pb").is_file():
            raise CommandError(f"{path} is not a SavedModel export (no saved_model.pb)")
        # The loaded object owns the variables: keep it referenced, not just its signature.
        loaded = tf.saved_model.load(str(path))
        tokenizer = TextTokenizer(path / "tokenizer.json", read_config(path).max_length)

        def model_fn(ids: tf.Tensor, model: object = loaded) -> tf.Tensor:
            return model.signatures["serving_default"](input_ids=ids)["embedding"]

        ranker = embedding_ranker(model_fn, tokenizer, articles, article_length)
        score(results, str(path), ranker, queries, faq, split)
    print_results(results, split)
    return results
