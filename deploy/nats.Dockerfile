# The NATS JetStream server jetserve runs against, from scratch:
#
#   docker build -f deploy/nats.Dockerfile -t jetserve/nats:dev .
#
# bin/nats-server is built static by scripts/build-bins.sh from the
# deploy/natsbuild module (nats-server v2.15.3). JetStream stores under
# /data: mount a volume there. Runs as root, like the upstream image, so a
# fresh named volume (owned by root) is writable.
FROM scratch
LABEL org.opencontainers.image.title="nats-server" \
      org.opencontainers.image.source="https://github.com/jetserve/jetserve"
COPY bin/nats-server /nats-server
COPY deploy/nats.conf /nats.conf
# client, monitoring (/healthz, /varz, /jsz), cluster routes
EXPOSE 4222 8222 6222
ENTRYPOINT ["/nats-server", "-c", "/nats.conf"]
