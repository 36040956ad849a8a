# syntax=docker/dockerfile:1
#
# Funnel images: funnel-server, funnel-gateway and the funnel CLI, running as a non-root user.
#
#   docker build -t funnel:cuda .                 # default target "cuda": CUDA 13 build on Ubuntu 24.04
#   docker build -t funnel:cpu --target cpu .     # CPU-only image on Debian 12 (FUNNEL_WITH_CUDA=OFF)
#
# The CPU image uses exactly the Debian 12 packages the project is built and tested with
# (scripts/install-deps); its runtime package list is the set of libraries the three binaries
# link (checked by the ctest `deploy.consistency`, tests/deploy/check_deploy.py, against `ldd` of
# the real build). The CUDA image builds on nvidia/cuda (Ubuntu 24.04, no Debian variant exists):
# same upstream gRPC 1.51.1 / protobuf 3.21.12 / abseil 20220623 / fmt 9.1.0, but Ubuntu's
# package names (t64 suffix), spdlog 1.12 (Debian: 1.10), cpp-httplib 0.14 (Debian: 0.11) and
# GCC 13 (Debian: 12), so warnings are not errors there (FUNNEL_WERROR=OFF).
#
# Default command: funnel-server on /models/model.gguf (mount it), gRPC on 50051, admin HTTP
# (/health, /ready, /metrics) on 8081, sessions persisted under /var/lib/funnel/sessions.
# Run the gateway with `--entrypoint funnel-gateway` (see deploy/docker-compose.yml).

ARG CUDA_VERSION=13.0.2
ARG CUDA_ARCHITECTURES="90a-real;90-virtual"
# -march of the CPU kernels (top-level CMakeLists.txt); x86-64-v3 = AVX2 + FMA + F16C.
ARG CPU_ARCH=x86-64-v3

# ---------------------------------------------------------------------------------------------
# CPU-only image (Debian 12)
# ---------------------------------------------------------------------------------------------
FROM debian:12 AS build-cpu
ARG CPU_ARCH
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config ca-certificates \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev libspdlog-dev libcpp-httplib-dev nlohmann-json3-dev libopenblas-dev libpcre2-dev \
      libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DFUNNEL_WITH_CUDA=OFF \
      -DFUNNEL_BUILD_TESTS=OFF -DFUNNEL_CPU_ARCH="${CPU_ARCH}" \
 && cmake --build /build --target funnel-server funnel-gateway funnel -j"$(nproc)"

FROM debian:12-slim AS cpu
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libopenblas0-pthread \
      libspdlog1.10 libfmt9 libcpp-httplib0.11 libpcre2-8-0 libssl3 \
      curl \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/funnel --shell /usr/sbin/nologin funnel \
 && mkdir -p /var/lib/funnel/sessions /models \
 && chown -R funnel:funnel /var/lib/funnel
COPY --from=build-cpu /build/bin/funnel-server /build/bin/funnel-gateway /build/bin/funnel /usr/local/bin/
USER funnel
WORKDIR /var/lib/funnel
EXPOSE 50051 8081 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8081/health || exit 1
ENTRYPOINT ["funnel-server"]
CMD ["--model", "/models/model.gguf", "--host", "0.0.0.0", "--port", "50051", "--admin-port", "8081", "--session-dir", "/var/lib/funnel/sessions"]

# ---------------------------------------------------------------------------------------------
# CUDA image (nvidia/cuda, Ubuntu 24.04): the default target
# ---------------------------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS build-cuda
ARG CUDA_ARCHITECTURES
ARG CPU_ARCH
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config ca-certificates \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev libspdlog-dev libcpp-httplib-dev nlohmann-json3-dev libopenblas-dev libpcre2-dev \
      libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DFUNNEL_WITH_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" -DFUNNEL_BUILD_TESTS=OFF \
      -DFUNNEL_CPU_ARCH="${CPU_ARCH}" -DFUNNEL_WERROR=OFF \
 && cmake --build /build --target funnel-server funnel-gateway funnel -j"$(nproc)"

# The runtime flavour carries cuBLAS (libcublas.so.13, libcublasLt.so.13) for the CUDA backend.
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04 AS cuda
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51t64 libgrpc29t64 libprotobuf32t64 libabsl20220623t64 libopenblas0-pthread \
      libspdlog1.12 libfmt9 libcpp-httplib0.14t64 libpcre2-8-0 libssl3t64 \
      curl \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/funnel --shell /usr/sbin/nologin funnel \
 && mkdir -p /var/lib/funnel/sessions /models \
 && chown -R funnel:funnel /var/lib/funnel
COPY --from=build-cuda /build/bin/funnel-server /build/bin/funnel-gateway /build/bin/funnel /usr/local/bin/
USER funnel
WORKDIR /var/lib/funnel
EXPOSE 50051 8081 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8081/health || exit 1
ENTRYPOINT ["funnel-server"]
CMD ["--model", "/models/model.gguf", "--host", "0.0.0.0", "--port", "50051", "--admin-port", "8081", "--session-dir", "/var/lib/funnel/sessions"]
