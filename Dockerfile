# syntax=docker/dockerfile:1
# order-acceptance and marketplace-sim in one small image.
#
#   docker build -t order-acceptance .
#   docker run --rm -e DATABASE_URL=... -e MARKETPLACE_URL=... -e MARKETPLACE_API_KEY=... order-acceptance
#
# Every RUN line is a plain shell command that works the same outside Docker.

# Build ------------------------------------------------------------------------------------------
FROM rust:1-slim-bookworm AS builder
WORKDIR /src
# aws-lc-rs (TLS for sqlx and reqwest) compiles C code: the slim image has gcc; cmake, make and
# perl cover the build paths that ask for them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake make perl \
    && rm -rf /var/lib/apt/lists/*
COPY . .
# The cache mounts keep the registry and compiled dependencies between builds; the binaries are
# copied out of the cached target directory because a mount does not outlive its RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && cp target/release/order-acceptance target/release/marketplace-sim /out/

# Run --------------------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=builder /out/order-acceptance /out/marketplace-sim /usr/local/bin/
# The worker reads config/default.toml relative to its working directory.
WORKDIR /app
COPY config/default.toml /app/config/default.toml
USER app:app
# Health and metrics on all interfaces, JSON logs for the log shipper.
ENV ORDER_ACCEPTANCE__SERVER__LISTEN=0.0.0.0:9090 \
    ORDER_ACCEPTANCE__LOG__FORMAT=json
EXPOSE 9090
# `order-acceptance health` asks the worker's own /healthz: no curl in the image. The URL is
# spelled out so it visibly matches ORDER_ACCEPTANCE__SERVER__LISTEN above.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["order-acceptance", "health", "--url", "http://127.0.0.1:9090/healthz", "--timeout", "5s"]
# On SIGTERM a run gets shutdown.grace (60s by default) to record what it holds: give the
# container longer than that to stop (`docker stop -t 75`, compose `stop_grace_period`,
# Kubernetes `terminationGracePeriodSeconds`), or it is killed mid-run.
ENTRYPOINT ["order-acceptance"]
