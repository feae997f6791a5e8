"""From `kbrec loadtest` flags to a run: the RunConfig, the workload and the target."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from loadtest.http_client import HttpTarget, parse_http_url
from loadtest.kbrec_api import kbrec_requests
from loadtest.runner import Load, RunConfig
from loadtest.sources import WorkloadError, load_workload
from loadtest.target import Target, TargetError
from loadtest.workload import Workload, pick_items

if TYPE_CHECKING:  # tritonclient is imported only when a Triton target is made
    from loadtest.triton_target import TritonModel

SINGLE_RUN_DURATION_S: Final = 30.0
# Time a sweep step may spend waiting for its last answers, in the default duration.
DRAIN_ALLOWANCE_S: Final = 2.0
TargetFactory = Callable[[], Awaitable[Target]]


class SetupError(Exception):
    """Flags, workload or target that cannot make a run; the message says why."""


def run_config(args: argparse.Namespace) -> RunConfig:
    sweep = args.sweep is not None
    loads = args.sweep if sweep else ((args.rate,) if args.mode == "open" else (args.concurrency,))
    duration = args.duration
    if duration is None:
        per_step = args.warmup_s + args.max_windows * args.window_s + DRAIN_ALLOWANCE_S
        duration = len(loads) * per_step if sweep else SINGLE_RUN_DURATION_S
    try:
        return RunConfig(
            mode=args.mode,
            loads=tuple(loads),
            sweep=sweep,
            poisson=args.poisson,
            duration_s=duration,
            max_requests=args.max_requests,
            warmup_s=args.warmup_s,
            window_s=args.window_s,
            max_windows=args.max_windows,
            stability=args.stability,
            max_p99_ms=args.max_p99_ms,
            max_error_rate=args.max_error_rate,
            max_lag_s=args.max_lag_ms / 1000,
            seed=args.seed,
            honour_retry_after=not args.ignore_retry_after,
        )
    except ValueError as exc:
        raise SetupError(str(exc)) from exc


def build_load(args: argparse.Namespace, config: RunConfig) -> Load:
    """The workload and a factory for the target (targets are made inside the event loop)."""
    _check_url(args)  # before loading a workload, so a wrong URL is the error reported
    try:
        splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
        workload = load_workload(args.workload, splits)
        picks = pick_items(workload, args.seed, args.zipf, args.write_fraction)
    except (WorkloadError, ValueError) as exc:
        raise SetupError(str(exc)) from exc
    # A closed loop needs a connection per concurrent request, whatever the cap says.
    max_in_flight = max(
        args.max_in_flight, int(max(config.loads)) if config.mode == "closed" else 1
    )
    description = (
        f"{workload.description}; {len(workload.accounts)} accounts, zipf s={args.zipf:g}, "
        f"writes {args.write_fraction:.0%}, seed {args.seed}"
    )
    try:
        if args.target == "triton":
            make_target = _triton_factory(args, workload, max_in_flight)
        else:
            make_target = _http_factory(args, workload, max_in_flight)
    except TargetError as exc:
        raise SetupError(str(exc)) from exc
    return Load(make_target, picks, workload.ops, f"{args.target} {args.url}", description)


def _check_url(args: argparse.Namespace) -> None:
    try:
        if args.target == "triton":
            from loadtest.triton_target import parse_grpc_url

            parse_grpc_url(args.url)
        else:
            parse_http_url(args.url)
    except TargetError as exc:
        raise SetupError(str(exc)) from exc


def _http_factory(
    args: argparse.Namespace, workload: Workload, max_in_flight: int
) -> TargetFactory:
    return kbrec_target(args.url, workload, args.top_k, max_in_flight, args.timeout_s)


def kbrec_target(
    url: str, workload: Workload, top_k: int, max_in_flight: int, timeout_s: float
) -> TargetFactory:
    """kbrec's HTTP API at `url` as a target factory, every item's request built now."""
    endpoint = parse_http_url(url)
    requests = kbrec_requests(endpoint, workload.items, top_k)

    async def make() -> Target:
        return HttpTarget(endpoint, requests, max_in_flight, timeout_s)

    return make


def _triton_factory(
    args: argparse.Namespace, workload: Workload, max_in_flight: int
) -> TargetFactory:
    from loadtest.triton_target import parse_grpc_url, triton_model

    if args.write_fraction > 0:
        raise TargetError("--write-fraction needs --target kbrec: Triton has no article API")
    parse_grpc_url(args.url)
    model = triton_model(workload, args.repository, args.model_version, args.model)
    return triton_target(args.url, model, max_in_flight, args.timeout_s)


def triton_target(
    url: str, model: TritonModel, max_in_flight: int, timeout_s: float
) -> TargetFactory:
    """Triton at `url` over gRPC as a target factory (the channel binds to the loop that
    makes it, so the target is made inside the run)."""
    from loadtest.triton_target import TritonTarget

    async def make() -> Target:
        return TritonTarget(url, model, max_in_flight, timeout_s)

    return make
