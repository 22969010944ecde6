#!/usr/bin/env bash
# Run `semsim batch` on a Flink cluster through Beam's Flink job server (see README.md):
#
#   JOB_SERVER=localhost deploy/flink/submit.sh 'gs://BUCKET/corpus/*.jsonl' gs://BUCKET/semsim/run1 [semsim flags]
#
# JOB_SERVER: the job server's host (ports 8099 and 8098). EMBED_THREADS (default 2): intra-op threads per worker process;
# keep task slots x EMBED_THREADS = the worker-pool sidecar's CPUs (2 x 2 = 4 in flink-deployment.yaml).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 2 ]; then
  echo "usage: JOB_SERVER=HOST $0 INPUT_GLOB OUTPUT_DIR [semsim flags]" >&2
  exit 2
fi
: "${JOB_SERVER:?set JOB_SERVER to the job server host, e.g. localhost after kubectl port-forward}"
input=$1
output=$2
shift 2
for path in "$input" "$output"; do
  case $path in
    *://*) ;;
    *) echo "warning: $path is local; the workers must see it at the same path (use gs:// or s3://)" >&2 ;;
  esac
done
flags=()
while IFS= read -r line; do
  case $line in '' | '#'*) continue ;; esac
  flags+=("${line//JOB_SERVER/$JOB_SERVER}")
done <"$here/portable-flags.txt"
exec semsim batch --input "$input" --output "$output" --embed-threads "${EMBED_THREADS:-2}" "${flags[@]}" "$@"
