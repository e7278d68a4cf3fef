# Two targets:
#   docker build --target train -t transfer-train .   # CUDA torch; runs the pipeline (the Prefect flow)
#   docker build --target serve -t transfer-serve .   # torch-free: ./serving[gpu] (onnxruntime-gpu, tokenizers,
#                                                     # numpy and the HTTP server), nothing of the pipeline
#
# Serving an exported package (models/onnx, classification or translation) mounted at /model:
#   HTTP on 0.0.0.0:8000 (GET /health is liveness; the image's HEALTHCHECK polls it):
#     docker run --gpus all -p 8000:8000 -v $PWD/models/onnx:/model:ro transfer-serve
#   stdin -> JSON lines on stdout: arguments after the image name replace CMD, and without --port
#   `python -m serving` reads stdin (translation: add --beams N):
#     docker run -i --rm --gpus all -v $PWD/models/onnx:/model:ro transfer-serve /model < texts.txt
#   a shell or any other command:  docker run -it --entrypoint bash transfer-serve
# Training: docker run --gpus all transfer-train  (the demo data: mount it at /work/data/external).
#
# CUDA: both targets use CUDA 12.8 + cuDNN 9. onnxruntime-gpu 1.26.0 (serving/pyproject.toml [gpu])
# is the newest PyPI build for CUDA 12 (its [cuda] extra needs nvidia-*-cu12; 1.27.0 and later
# need -cu13, i.e. CUDA 13 and driver >= 580), and torch comes from the cu128 index.
# tests/test_packaging.py checks the image tag, the torch index and the pins against each other.
#
# apt packages are not version-pinned (DL3008 is ignored where they are installed, below): Ubuntu's
# noble-updates/noble-security pockets keep only the newest build of a package, so a pinned version
# disappears with the next security fix and the build then fails. What the results depend on is
# pinned: the base image tag and every pip package (exact pins, constraints.txt).

# ---------------------------------------------------------------- train
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS train
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    PREFECT_HOME=/work/.prefect PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
# Ubuntu 24.04's Python 3.12; git for DVC, make for the Makefile. The user `train` (10001:10001) owns /work.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv git make \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && groupadd --gid 10001 train \
    && useradd -l --create-home --uid 10001 --gid 10001 --shell /bin/bash train \
    && install -d -o train -g train /work
ENV PATH=/opt/venv/bin:$PATH
# CUDA build of the pinned torch first, so requirements.txt's pin (torch==2.13.0) is already satisfied.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
COPY requirements.txt constraints.txt /tmp/requirements/
RUN grep -v '^torch==' /tmp/requirements/constraints.txt > /tmp/requirements/constraints-gpu.txt \
    && pip install -r /tmp/requirements/requirements.txt -c /tmp/requirements/constraints-gpu.txt \
    && rm -rf /tmp/requirements
WORKDIR /work
COPY --chown=10001:10001 . .
USER 10001:10001
# .git stays out of the build context (.dockerignore) and DVC needs a git repository: the copied
# tree becomes the first commit of a new one (`dvc exp run` branches from a commit).
RUN git init -q \
    && git add -A \
    && git -c user.name=transfer-train -c user.email=train@localhost commit -qm "transfer-train image"
CMD ["python", "-m", "flows.pipeline"]

# ---------------------------------------------------------------- serve
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS serve
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && groupadd --gid 10001 serve \
    && useradd -l --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin serve
ENV PATH=/opt/venv/bin:$PATH
# Only the torch-free runtime ships: serving/ is a distribution of its own (serving/pyproject.toml,
# exact pins) and [gpu] is onnxruntime-gpu, never the CPU onnxruntime beside it (both install
# onnxruntime/). constraints.txt pins what those pins pull in (fastapi's starlette, pydantic, ...).
# Built from a copy in /tmp that is removed after: no build/ or *.egg-info is left in the image
# (.dockerignore keeps a local serving/build out of the context; setuptools would reuse it).
COPY serving /tmp/serving
COPY constraints.txt /tmp/constraints.txt
RUN pip install -c /tmp/constraints.txt "/tmp/serving[gpu]" \
    && rm -rf /tmp/serving /tmp/constraints.txt
# The model package is mounted (read-only is enough) or copied to /model; `python -m serving`
# with no PACKAGE argument also reads it from MODEL_DIR.
ENV MODEL_DIR=/model
WORKDIR /home/serve
# Numeric, so that a runtime (Kubernetes runAsNonRoot) can see that it is not root.
USER 10001:10001
EXPOSE 8000
# Liveness by Python's urllib (no curl in the image): any error or non-2xx status exits non-zero.
# It polls port 8000, CMD's port: a container started with another --port needs --health-cmd too.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python", "-m", "serving"]
CMD ["/model", "--host", "0.0.0.0", "--port", "8000"]
