# The gateway service: one statically linked binary, nothing else (no shell, no libc files).
FROM scratch
COPY ghost-gateway /ghost-gateway
EXPOSE 8080/tcp
HEALTHCHECK --interval=5s --timeout=2s --start-period=2s --retries=3 CMD ["/ghost-gateway", "health", "127.0.0.1:8080"]
ENTRYPOINT ["/ghost-gateway"]
