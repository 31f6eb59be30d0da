# The chat-node image: Debian 12 slim and the release binary, run as an unprivileged user.
#
# The binary is built outside Docker and handed in through the build context (see README.md here):
#   <context>/bin/chat-node   a release build for linux/amd64, linked against glibc 2.36 or older
# so the same file builds on a machine that has only locally made base images and on any Docker host:
#   docker build -f deploy/docker/chat-node.Dockerfile -t switchboard/chat-node:0.1.0 <context>
FROM debian:bookworm-slim
COPY bin/chat-node /usr/local/bin/chat-node
# 65532: the "nonroot" uid of distroless images; numeric so that runAsNonRoot can be verified.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chat-node"]
