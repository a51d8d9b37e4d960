# Multi-stage build: a static binary on a small, non-root runtime image.
#
#   docker build -t embargo .
#   docker run -v embargo-data:/var/lib/embargo -v $PWD/etc:/etc/embargo:ro -p 25:25 embargo
#
# /etc/embargo holds embargo.toml (data_dir = "/var/lib/embargo", smtp.listen
# "0.0.0.0:25") and keys/; create both with `embargo init` (see README.md).
FROM golang:1.26-bookworm AS build
# The image sets GOTOOLCHAIN=local; go.mod's toolchain line wants go1.27.3,
# whose standard library fixes vulnerabilities that go1.26.8's has and
# embargo calls (docs/design.md §1, "Known vulnerabilities").
ENV GOTOOLCHAIN=go1.27.3
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/embargo ./cmd/embargo

FROM debian:bookworm-slim
RUN useradd --system --home-dir /var/lib/embargo --shell /usr/sbin/nologin embargo \
 && mkdir -p /var/lib/embargo /etc/embargo/keys \
 && chown embargo:embargo /var/lib/embargo && chmod 0700 /var/lib/embargo
# The relay's certificate is verified against these roots (smtps://,
# smtp+starttls://); the slim image has none of its own.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/embargo /usr/local/bin/embargo
USER embargo
VOLUME ["/var/lib/embargo"]
# SMTP; 8024 is LMTP for a Postfix container, 8025 HTTP, when configured.
EXPOSE 25 8024 8025
# embargo healthcheck reads the 220 greeting of smtp.listen: no curl needed.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/embargo", "healthcheck", "--config", "/etc/embargo/embargo.toml", "--timeout", "5s"]
ENTRYPOINT ["/usr/local/bin/embargo"]
CMD ["serve", "--config", "/etc/embargo/embargo.toml"]
