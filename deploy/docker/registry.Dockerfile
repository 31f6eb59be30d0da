# syntax=docker/dockerfile:1
# Build: docker build -f deploy/docker/registry.Dockerfile -t switchboard/registry:0.1.0 .   (from the repository root)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p registry --bin registry && cp target/release/registry /registry

# distroless: no shell, runs as the unprivileged "nonroot" user (65532), fits readOnlyRootFilesystem.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /registry /usr/local/bin/registry
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/registry"]
