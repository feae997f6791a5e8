#!/usr/bin/env bash
# Entry point of Dockerfile.gpu: Triton (ONNX Runtime backend on the GPU) on the
# repository at $KBREC_REPOSITORY, then `kbrec serve` through it, in one container.
#
# - Triton loads only the `encoder` model (explicit model control: a later
#   `load_model` swaps versions without failed requests) and listens on loopback,
#   except its Prometheus metrics; kbrec is the public face on $KBREC_PORT.
# - kbrec starts once Triton reports the model ready (TensorRT builds its engines
#   on first load, which can take minutes: TRITON_READY_TIMEOUT_S).
# - SIGTERM/SIGINT stop kbrec first (it drains HTTP requests), then Triton.
#   If either process dies, the other is stopped too and the container exits
#   non-zero, so the orchestrator restarts both together.
set -euo pipefail

repository="${KBREC_REPOSITORY:-/models}"
grpc_port="${TRITON_GRPC_PORT:-8001}"
http_port="${TRITON_HTTP_PORT:-8010}" # not 8000: that is kbrec's
metrics_port="${TRITON_METRICS_PORT:-8002}"
ready_timeout_s="${TRITON_READY_TIMEOUT_S:-600}"

triton_pid=""
kbrec_pid=""

log() { echo "entrypoint: $*" >&2; }

stop_all() {
    trap - TERM INT
    if [[ -n "$kbrec_pid" ]] && kill -0 "$kbrec_pid" 2>/dev/null; then
        kill -TERM "$kbrec_pid"
        wait "$kbrec_pid" || true
    fi
    if [[ -n "$triton_pid" ]] && kill -0 "$triton_pid" 2>/dev/null; then
        kill -TERM "$triton_pid"
        wait "$triton_pid" || true
    fi
}

# shellcheck disable=SC2317  # called by the trap below
on_signal() {
    log "stopping kbrec, then Triton"
    stop_all
    exit 0
}
trap on_signal TERM INT

model_ready() {
    python -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:${http_port}/v2/models/encoder/ready" 2>/dev/null
}

tritonserver \
    --model-repository="$repository" \
    --model-control-mode=explicit \
    --load-model=encoder \
    --grpc-address=127.0.0.1 --grpc-port="$grpc_port" \
    --http-address=127.0.0.1 --http-port="$http_port" \
    --metrics-port="$metrics_port" \
    --exit-on-error=true &
triton_pid=$!

deadline=$((SECONDS + ready_timeout_s))
until model_ready; do
    if ! kill -0 "$triton_pid" 2>/dev/null; then
        status=0
        wait "$triton_pid" || status=$?
        log "tritonserver exited with status $status before the encoder was ready"
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "the encoder was not ready after ${ready_timeout_s} s"
        stop_all
        exit 1
    fi
    sleep 1
done
log "Triton is ready; starting kbrec"

kbrec serve \
    --triton-url "grpc://127.0.0.1:${grpc_port}" \
    --repository "$repository" \
    --host 0.0.0.0 &
kbrec_pid=$!

status=0
wait -n "$triton_pid" "$kbrec_pid" || status=$?
log "a process exited (status $status); stopping the other"
stop_all
exit $((status == 0 ? 1 : status))
