# Builds the gateway and the sample services into one small image.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
# The gateway without the demo's sample code; the sample servers and client
# (the demo topology's backends) as their own binaries.
RUN cargo build --release -p gateway --no-default-features \
 && cargo build --release -p sample-services --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gateway /src/target/release/sample-server /src/target/release/codename-client /usr/local/bin/
COPY examples /etc/gateway/examples
EXPOSE 3001
ENTRYPOINT ["gateway"]
CMD ["run", "--config", "/etc/gateway/examples/compose.toml"]
