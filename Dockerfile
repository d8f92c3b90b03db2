# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/minuted ./cmd/minuted

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/minuted /usr/local/bin/minuted
COPY configs/minuted.yaml /etc/minuted/minuted.yaml
ENV MINUTED_CONFIG=/etc/minuted/minuted.yaml
USER nonroot:nonroot
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/minuted"]
CMD ["run"]
