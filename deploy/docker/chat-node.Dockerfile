# syntax=docker/dockerfile:1
# Build: docker build -f deploy/docker/chat-node.Dockerfile -t switchboard/chat-node:0.1.0 .   (from the repository root)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chat-node --bin chat-node && cp target/release/chat-node /chat-node

# distroless: no shell, runs as the unprivileged "nonroot" user (65532), fits readOnlyRootFilesystem.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /chat-node /usr/local/bin/chat-node
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chat-node"]
