# Two stages: build the release binary with the official Swift toolchain image, then run it
# on a slim Debian with only the libraries the binary still links dynamically.
# Both stages are Debian bookworm, so the glibc the binary was linked against is the one it
# runs on.

# ---- build ----------------------------------------------------------------------------------
FROM swift:6.3.1-bookworm AS build
WORKDIR /src
# The build stage needs the SQLite headers: GRDB links the system libsqlite3.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsqlite3-dev \
 && rm -rf /var/lib/apt/lists/*
# Manifest first so that dependency resolution is cached while only sources change.
# Package.resolved is committed: the image resolves exactly the versions the repository pins.
COPY Package.swift Package.resolved ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift package resolve --force-resolved-versions
# --static-swift-stdlib links the Swift runtime and Foundation into the binary, which keeps the
# runtime image down to glibc, libstdc++ and libsqlite3.
# STORES: "sqlite" (docker-compose.yml) builds without the package trait PostgreSQL, so neither
# postgres-nio nor swift-nio-ssl's BoringSSL is compiled; docker-compose.postgres.yml asks for
# "sqlite,postgres".
ARG STORES=sqlite
RUN case "$STORES" in \
      sqlite) traits=--disable-default-traits ;; \
      sqlite,postgres) traits= ;; \
      *) echo "STORES must be sqlite or sqlite,postgres, not '$STORES'" >&2; exit 1 ;; \
    esac \
 && swift build -c release --product crebitos --static-swift-stdlib $traits \
 && mkdir -p /out \
 && cp "$(swift build -c release --show-bin-path)/crebitos" /out/crebitos \
 && strip /out/crebitos

# ---- run ------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# libsqlite3-0: the database engine (linked dynamically by GRDB).
# curl: the compose health check reaches the instance's /health over its Unix socket.
# python3: scripts/audit inspects the live database (docker compose exec api01 scripts/audit);
# sqlite3: the CLI, for backups (VACUUM INTO) and a look by hand.
# postgresql-client, only in the image with the PostgreSQL store: psql, with which scripts/audit
# reads that store (docker-compose.postgres.yml); the store itself needs no library at run time.
ARG STORES=sqlite
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsqlite3-0 sqlite3 curl python3 \
      $([ "$STORES" = sqlite,postgres ] && echo postgresql-client) \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /out/crebitos /app/crebitos
COPY scripts/audit /app/scripts/audit
COPY scripts/crebitos_tools/__init__.py scripts/crebitos_tools/clients.py scripts/crebitos_tools/ledger.py /app/scripts/crebitos_tools/
# Fail the image build, not the first start, if a runtime library is missing.
RUN mkdir -p /app/data /run/crebitos \
 && if ldd /app/crebitos | grep 'not found'; then exit 1; fi
# The same variables the native stack (scripts/stack-up) sets; docker-compose.yml sets the
# per-instance ones (CREBITOS_INSTANCE, CREBITOS_LISTEN).
ENV CREBITOS_DATABASE=/app/data/rinha.db \
    CREBITOS_SYNCHRONOUS=full \
    CREBITOS_LOG_LEVEL=info
VOLUME /app/data /run/crebitos
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/crebitos"]
