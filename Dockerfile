# syntax=docker/dockerfile:1
# portcullis: authentication sidecar (pingora reverse proxy).
#
#   docker build -t portcullis .
#   docker run --rm -p 8080:8080 -p 9464:9464 -v portcullis-data:/data \
#     -e PORTCULLIS_UPSTREAM__ADDRESS=host.docker.internal:3000 portcullis
#
# SIGTERM drains for server.grace_period_seconds (10 s) plus up to
# server.graceful_shutdown_timeout_seconds (5 s): give `docker stop -t 20`
# (or a Kubernetes terminationGracePeriodSeconds above 15).

############################ builder ############################
FROM rust:1.95-bookworm AS builder

# cmake: pingora -> flate2 -> zlib-ng. Nothing else is needed (no OpenSSL).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependency-cache layer: build every dependency against an empty crate, so
# a change under src/ rebuilds only portcullis itself.
COPY Cargo.toml Cargo.lock ./
# pingora-proxy with portcullis' patch ([patch.crates-io], vendor/README.md)
COPY vendor ./vendor
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# The real sources. COPY keeps the build context's mtimes, which can be older
# than the dummy build: touch the crate roots so cargo rebuilds the crate.
COPY src ./src
COPY config ./config
# embedded by src/auth/openapi.rs (include_str!) and served at /auth/openapi.json
COPY openapi.json ./
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -D -s -m 0755 target/release/portcullis /out/portcullis

############################ runtime ############################
FROM debian:bookworm-slim

# ca-certificates: TLS to an upstream or webhook; curl: the HEALTHCHECK.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 portcullis \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin portcullis \
 && mkdir -p /data /etc/portcullis \
 && chown portcullis:portcullis /data

COPY --from=builder /out/portcullis /usr/local/bin/portcullis
COPY config/portcullis.toml /etc/portcullis/portcullis.toml

# The store lives on the volume (SQLite, WAL mode); point
# PORTCULLIS_DATABASE__URL at postgres://... to share one store between replicas.
ENV PORTCULLIS_DATABASE__URL=sqlite:///data/portcullis.db
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001

# 8080: proxy (/auth, /.well-known/jwks.json, everything else upstream)
# 9464: admin (/metrics, /healthz, /readyz)
EXPOSE 8080 9464

# Shell form on purpose: Docker wants exit 1 for "unhealthy", curl exits 7/22.
# hadolint ignore=DL3025
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:9464/healthz || exit 1

ENTRYPOINT ["portcullis", "serve"]
CMD ["--config", "/etc/portcullis/portcullis.toml"]
