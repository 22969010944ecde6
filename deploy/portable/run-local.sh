#!/usr/bin/env bash
# Run `semsim batch` through Beam's portable runner on this machine: Beam's Python job service and an SDK worker
# pool run as separate processes (the path a Flink deployment takes: Job API submission, Fn API workers started by
# the pool), and both are stopped by pid when the job ends or fails.
#
#   deploy/portable/run-local.sh --input GLOB --output DIR [semsim batch flags]
#
# JOB_PORT / POOL_PORT pick the ports (default 8099 / 50000); PYTHON the interpreter with semsim installed (its folder
# goes first on PATH: the worker pool starts each SDK worker as `python`). Logs go to LOG_DIR (default: a temp dir).
set -euo pipefail
python=$(command -v "${PYTHON:-python}")
export PATH="$(dirname "$python"):$PATH"
job_port=${JOB_PORT:-8099}
pool_port=${POOL_PORT:-50000}
log_dir=${LOG_DIR:-$(mktemp -d)}
mkdir -p "$log_dir"
pids=()

stop() {
  for pid in "${pids[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true  # each service leads its own process group (its workers too)
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap stop EXIT

wait_for_port() {
  for _ in $(seq 600); do
    (: > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run-local: nothing listens on port $1 after 60 s; see $log_dir" >&2
  return 1
}

setsid "$python" -m apache_beam.runners.portability.local_job_service_main --port "$job_port" \
  > "$log_dir/job-service.log" 2>&1 &
pids+=($!)
setsid "$python" -m apache_beam.runners.worker.worker_pool_main --service_port "$pool_port" \
  > "$log_dir/worker-pool.log" 2>&1 &
pids+=($!)
echo "run-local: job service pid ${pids[0]} on :$job_port, worker pool pid ${pids[1]} on :$pool_port, logs in $log_dir"
wait_for_port "$job_port"
wait_for_port "$pool_port"

# The submission flags of deploy/flink (one list for both), pointed at the local services: the Python job service
# stages artifacts on its job port.
flags=()
while IFS= read -r line; do
  case $line in
    '' | '#'*) continue ;;
    --job_endpoint=* | --artifact_endpoint=*) line="${line%%=*}=localhost:$job_port" ;;
    --environment_config=*) line="--environment_config=localhost:$pool_port" ;;
  esac
  flags+=("$line")
done <"$(dirname "$0")/../flink/portable-flags.txt"
"$python" -m pipelines.cli batch "$@" "${flags[@]}"
