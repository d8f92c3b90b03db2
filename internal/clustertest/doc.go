// Package clustertest runs minuted, unchanged but for its configuration,
// on the distributed engines: a 3-node NATS cluster with JetStream
// replicas 3 and a Redis Cluster of 3 masters and 3 replicas, both built
// by the tests from the real nats-server and redis-server binaries, with
// several ingest and bill instances. The load and failure tests (build tag
// cluster, make test-cluster) run them as real `minuted ingest`, `minuted
// bill` and `minuted api` processes built from ./cmd/minuted; the short
// smoke test runs them in the test process, with the ordinary suite.
package clustertest
