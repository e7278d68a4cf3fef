# Two targets:
#   docker build --target train -t transfer-train .   # CUDA torch; runs the pipeline (dvc repro / Prefect flow)
#   docker build --target serve -t transfer-serve .   # torch-free: onnxruntime-gpu + tokenizers + numpy
# The serve image takes an exported package (models/onnx, classification or translation) mounted at /model.

# ---------------------------------------------------------------- train
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS train
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    PREFECT_HOME=/work/.prefect PREFECT_SERVER_ANALYTICS_ENABLED=false
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip git make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /work
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CUDA build of the pinned torch first, so requirements.txt's pin is already satisfied.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
COPY requirements.txt constraints.txt ./
RUN grep -v '^torch==' constraints.txt > constraints-gpu.txt \
    && pip install -r requirements.txt -c constraints-gpu.txt
COPY . .
CMD ["python", "-m", "flows.pipeline"]

# ---------------------------------------------------------------- serve
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS serve
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Only the torch-free runtime ships: serving/ is a distribution of its own (serving/pyproject.toml,
# exact pins). [gpu] = onnxruntime-gpu 1.26.0, a CUDA 12 build like this image (1.27+ need CUDA 13),
# and never the CPU onnxruntime beside it. Built from a copy outside /app: no build/ or *.egg-info
# is left in the working directory.
COPY serving /tmp/serving
# (build/ from a local `pip install ./serving` is dropped first: setuptools would reuse it.)
RUN rm -rf /tmp/serving/build && pip install "/tmp/serving[gpu]" && rm -rf /tmp/serving
WORKDIR /app
# The model package is mounted or copied to /model.
ENV MODEL_DIR=/model
# Classifier or translator, by the manifest's task (translation: add --beams N).
ENTRYPOINT ["python", "-m", "serving"]
