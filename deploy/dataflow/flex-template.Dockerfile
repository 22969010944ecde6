# A Dataflow flex-template launcher for one semsim pipeline (PIPELINE=batch or stream): it builds the job graph and
# submits it; the workers run the SDK image given as sdk_container_image (sdk.Dockerfile), else install semsim from
# the setup file. Build from the repository root:
#   docker build -f deploy/dataflow/flex-template.Dockerfile --build-arg PIPELINE=batch -t IMAGE .
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base

ARG PIPELINE=batch

# The CPU build first: the torch that PyPI serves for Linux is the multi-GB CUDA build.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /template
COPY setup.py README.md ./
COPY requirements/ requirements/
COPY semsim_core/ semsim_core/
COPY transforms/ transforms/
COPY pipelines/ pipelines/
COPY deploy/dataflow/flex_main.py ./
RUN pip install --no-cache-dir -c requirements/constraints.txt .

ENV SEMSIM_PIPELINE=${PIPELINE}
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/flex_main.py
ENV FLEX_TEMPLATE_PYTHON_SETUP_FILE=/template/setup.py
