# The ingest service: one statically linked binary, nothing else (no shell, no libc files).
FROM scratch
COPY ghost-ingest /ghost-ingest
EXPOSE 4433/udp 1935/tcp 9101/tcp
HEALTHCHECK --interval=5s --timeout=2s --start-period=2s --retries=3 CMD ["/ghost-ingest", "health", "127.0.0.1:9101"]
ENTRYPOINT ["/ghost-ingest"]
