# paystream image for docker-compose.yml. Built with the `demo` profile: optimised, no LTO,
# so the image builds in minutes rather than the half hour a fat-LTO release takes.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --profile demo --bin paystream && cp target/demo/paystream /usr/local/bin/paystream

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/paystream /usr/local/bin/paystream
COPY pipelines.toml /etc/paystream/pipelines.toml
ENTRYPOINT ["paystream"]
CMD ["run", "-c", "/etc/paystream/pipelines.toml"]
