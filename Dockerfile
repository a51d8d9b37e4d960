# Multi-stage build: a static binary on a small, non-root runtime image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/embargo ./cmd/embargo

FROM debian:bookworm-slim
RUN useradd --system --home-dir /var/lib/embargo --shell /usr/sbin/nologin embargo \
 && mkdir -p /var/lib/embargo /etc/embargo/keys \
 && chown embargo:embargo /var/lib/embargo && chmod 0700 /var/lib/embargo
COPY --from=build /out/embargo /usr/local/bin/embargo
USER embargo
VOLUME ["/var/lib/embargo"]
EXPOSE 25
ENTRYPOINT ["/usr/local/bin/embargo"]
CMD ["serve", "--config", "/etc/embargo/embargo.toml"]
