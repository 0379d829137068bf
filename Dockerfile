# Builds both binaries; the same image runs the server or an agent.
#   docker build -t metrolog .
#   docker run -p 8080:8080 -v metrolog:/var/lib/metrolog metrolog
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The agent has its own size-optimised profile (Cargo.toml, [profile.agent]).
RUN cargo build --release --locked -p metrolog-server \
 && cargo build --profile agent --locked -p metrolog-agent

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates monitoring-plugins-basic \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/metrolog metrolog \
 && mkdir -p /var/lib/metrolog /var/lib/metrolog-agent \
 && chown metrolog /var/lib/metrolog /var/lib/metrolog-agent
COPY --from=build /src/target/release/metrolog-server /src/target/agent/metrolog-agent /usr/local/bin/
USER metrolog
ENV METROLOG_DATA_DIR=/var/lib/metrolog \
    METROLOG_LISTEN=0.0.0.0:8080 \
    METROLOG_SYSLOG_UDP=0.0.0.0:5514 \
    METROLOG_SYSLOG_TCP=0.0.0.0:5514
EXPOSE 8080 5514/udp 5514/tcp
VOLUME ["/var/lib/metrolog"]
HEALTHCHECK --interval=10s --timeout=3s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
ENTRYPOINT ["metrolog-server"]
