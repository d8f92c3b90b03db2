# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/minuted ./cmd/minuted
# The state directory (ingest's spool): owned by nonroot, so that a named
# volume mounted there starts writable.
RUN mkdir -p /out/state/spool

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/minuted /usr/local/bin/minuted
COPY configs/minuted.yaml /etc/minuted/minuted.yaml
COPY --from=build --chown=65532:65532 /out/state /var/lib/minuted
ENV MINUTED_CONFIG=/etc/minuted/minuted.yaml
USER nonroot:nonroot
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/minuted"]
CMD ["run"]
