# trainer on CUDA: `docker run --gpus all -v $PWD/outputs:/workspace/outputs -v hf-cache:/cache IMAGE pipeline …`
# Also SkyPilot's `image_id: docker:IMAGE` (it runs setup/run inside the container as root through sudo).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG DEBIAN_FRONTEND=noninteractive
# git: Go sources given as git URLs; sudo: SkyPilot needs root or passwordless sudo inside the container.
# gcc, libc6-dev, python3-dev: Triton compiles its kernels (TRL's fused LM head at the first CUDA training step,
# torch.compile, vLLM) with the C compiler against Python's headers at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev git sudo \
        ca-certificates \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface \
    PYTHONUNBUFFERED=1
RUN python3 -m venv /opt/venv

# Dependencies first, from the lock file CI installs from, so a code change does not reinstall them.
# torch: the locked version, built for the base image's CUDA (12.8) from PyTorch's own index. PyPI's wheel of this
# torch is a CUDA 13 build, which needs a newer driver than many cloud GPU images have: there torch would see no GPU
# (and `trainer train` refuses a real model without one). CUDA 12.8 runs on any driver from 570 on.
# The wandb extra: sky/train.yaml passes WANDB_API_KEY, and training.wandb=auto then reports to W&B.
# flash-attention has no wheel for this torch: sdpa is used (model.attn_implementation=auto).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
RUN pip install --index-url "$TORCH_INDEX_URL" -c requirements.lock torch \
    && mkdir trainer && touch trainer/__init__.py \
    && pip install -c requirements.lock ".[wandb]" \
    && pip uninstall -y trainer \
    && rm -rf trainer build ./*.egg-info

COPY trainer/ trainer/
COPY configs/ configs/
COPY scripts/ scripts/
RUN pip install --no-deps -c requirements.lock .

# Non-root by default; passwordless sudo for SkyPilot, which runs its setup as root inside the container.
RUN useradd --create-home --uid 1001 --shell /bin/bash trainer \
    && echo "trainer ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/trainer \
    && chmod 0440 /etc/sudoers.d/trainer \
    && mkdir -p /cache /workspace/outputs \
    && chown -R trainer:trainer /cache /workspace
USER 1001:1001
# SkyPilot's container set-up and W&B, Triton and Hugging Face caches write under $HOME.
ENV HOME=/home/trainer
WORKDIR /workspace
VOLUME ["/cache", "/workspace/outputs"]
ENTRYPOINT ["trainer"]
CMD ["--help"]
