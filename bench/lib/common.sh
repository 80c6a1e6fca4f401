# Sourced by the bench/*.sh entry points (from the project root): the checks and set-up they share, and the runner
# that starts one orchestrator (bench/*.ts) in its own session so everything it starts stops with it.
#   bench_prepare TAG [redis]  as root; the native addon; proto types; with `redis`, Debian's redis-server (installed
#                              if missing)
#   bench_run_orchestrator FILE ARGS...

bench_prepare() {
  local tag=$1 redis=${2:-}
  if [[ $(id -u) -ne 0 ]]; then
    echo "bench: run as root (the mmap shim's userfaultfd handles kernel-mode faults only for root)" >&2
    exit 2
  fi
  if [[ $redis == redis ]] && ! command -v redis-server >/dev/null; then
    echo "[$tag] installing Debian's redis-server" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2 ||
      { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2; }
  fi
  if [[ ! -f native/build/Release/hotpot_native.node ]]; then
    echo "[$tag] building the native addon" >&2
    npm run build:native >&2
  fi
  [[ -d services/generated ]] || npm run gen:proto >&2
}

# The orchestrator runs in its own session and process group, so everything it starts (nodes, dispatcher, Redis,
# floors, app processes) can be stopped as one group if it dies or is interrupted; on a normal exit it has already
# stopped all of them itself.
bench_run_orchestrator() {
  setsid node --import tsx "$@" &
  BENCH_PID=$!
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  wait "$BENCH_PID"
}

bench_cleanup() {
  if kill -0 "$BENCH_PID" 2>/dev/null; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true # graceful: the orchestrator tears its processes down
    for _ in $(seq 50); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.2; done
  fi
  kill -KILL -- "-$BENCH_PID" 2>/dev/null || true
}
