# The relay service: one statically linked binary, nothing else (no shell, no libc files).
FROM scratch
COPY ghost-relay /ghost-relay
EXPOSE 4500/udp 9200/tcp
HEALTHCHECK --interval=5s --timeout=2s --start-period=2s --retries=3 CMD ["/ghost-relay", "health", "127.0.0.1:9200"]
ENTRYPOINT ["/ghost-relay"]
