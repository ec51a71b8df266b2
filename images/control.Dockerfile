# The control service: one statically linked binary, nothing else (no shell, no libc files).
FROM scratch
COPY ghost-control /ghost-control
EXPOSE 7000/tcp 9100/tcp
HEALTHCHECK --interval=5s --timeout=2s --start-period=2s --retries=3 CMD ["/ghost-control", "health", "127.0.0.1:9100"]
ENTRYPOINT ["/ghost-control"]
