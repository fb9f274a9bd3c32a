# syntax=docker/dockerfile:1
# omnistock container image: a release build in the official Rust image, run from distroless
# (glibc and CA certificates, no shell, no package manager) as the non-root user 65532.
# Build:  docker build -t omnistock .
# Checked without a Docker engine by scripts/dockerfile-check.sh (see README, Deploy).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# What the build reads, and nothing else (.dockerignore keeps target/ and state out).
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY migrations ./migrations
COPY src ./src
# Cache mounts keep the registry and the target dir between builds; the binary is copied out
# of the cache mount, which the next stage cannot see.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin omnistock \
    && install -D -m 0755 target/release/omnistock /out/omnistock

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=builder /out/omnistock /usr/local/bin/omnistock
# Listen on every interface of the container; logs are JSON lines on stderr.
ENV OMNISTOCK_HTTP_ADDR=0.0.0.0:8080 \
    RUST_LOG=info,sqlx=warn,async_nats=warn
USER 65532:65532
EXPOSE 8080
# No shell or curl in distroless: the binary checks itself (GET /healthz, exit 0 or 1).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/omnistock", "healthcheck", "--timeout-seconds", "3"]
ENTRYPOINT ["/usr/local/bin/omnistock"]
CMD ["serve"]
