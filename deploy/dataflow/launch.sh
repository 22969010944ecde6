#!/usr/bin/env bash
# Build semsim's Dataflow images and flex templates, and start jobs from them (see README.md). From anywhere:
#
#   deploy/dataflow/launch.sh images                                  # SDK image + 2 launcher images, pushed
#   deploy/dataflow/launch.sh templates                               # gs://$BUCKET/templates/semsim-{batch,stream}.json
#   deploy/dataflow/launch.sh batch 'gs://B/corpus/*.jsonl' gs://B/semsim/run1 [name=value ...]
#   deploy/dataflow/launch.sh stream projects/P/subscriptions/S gs://B/semsim/stream [name=value ...]
#
# PROJECT, REGION, BUCKET: required. REPO (default semsim): an Artifact Registry docker repository in REGION.
# TAG (default 0.1.0). BUILDER=docker builds and pushes with local docker instead of Cloud Build.
# EMBED_THREADS (default 1): --embed-threads for Dataflow's default of one SDK process per vCPU.
set -euo pipefail
case ${1:-} in
  images | templates | batch | stream) ;;
  *) sed -n '4,7s|^#   ||p' "$0" >&2; exit 2 ;;  # the usage, before asking for the settings
esac
cd "$(dirname "$0")/../.."
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET}"
registry=$REGION-docker.pkg.dev/$PROJECT/${REPO:-semsim}
tag=${TAG:-0.1.0}
sdk_image=$registry/semsim-sdk:$tag

images() {
  if [ "${BUILDER:-cloudbuild}" = docker ]; then
    docker build -f deploy/dataflow/sdk.Dockerfile -t "$sdk_image" .
    docker push "$sdk_image"
    for pipeline in batch stream; do
      local image=$registry/semsim-$pipeline-template:$tag
      docker build -f deploy/dataflow/flex-template.Dockerfile --build-arg "PIPELINE=$pipeline" -t "$image" .
      docker push "$image"
    done
  else
    gcloud builds submit --project "$PROJECT" --config deploy/dataflow/cloudbuild.yaml \
      --substitutions "_REGISTRY=$registry,_TAG=$tag" .
  fi
}

templates() {
  for pipeline in batch stream; do
    gcloud dataflow flex-template build "gs://$BUCKET/templates/semsim-$pipeline.json" \
      --project "$PROJECT" --sdk-language PYTHON \
      --image "$registry/semsim-$pipeline-template:$tag" \
      --metadata-file "deploy/dataflow/$pipeline-metadata.json"
  done
}

# run PIPELINE [name=value ...]: one job from the template; workers on the SDK image, Runner v2
run() {
  local pipeline=$1
  shift
  local params=(--parameters "sdk_container_image=$sdk_image" --parameters "embed_threads=${EMBED_THREADS:-1}")
  for param in "$@"; do
    params+=(--parameters "$param")
  done
  gcloud dataflow flex-template run "semsim-$pipeline-$(date +%Y%m%d-%H%M%S)" \
    --project "$PROJECT" --region "$REGION" \
    --template-file-gcs-location "gs://$BUCKET/templates/semsim-$pipeline.json" \
    --temp-location "gs://$BUCKET/tmp" --staging-location "gs://$BUCKET/staging" \
    --additional-experiments use_runner_v2 \
    "${params[@]}"
}

case ${1:-} in
  images) images ;;
  templates) templates ;;
  batch)
    [ $# -ge 3 ] || { echo "usage: $0 batch INPUT_GLOB OUTPUT_DIR [name=value ...]" >&2; exit 2; }
    run batch "input=$2" "output=$3" "${@:4}"
    ;;
  stream)
    [ $# -ge 3 ] || { echo "usage: $0 stream SUBSCRIPTION OUTPUT_DIR [name=value ...]" >&2; exit 2; }
    run stream "subscription=$2" "output=$3" "${@:4}"
    ;;
esac
