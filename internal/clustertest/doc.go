// Package clustertest runs minuted, unchanged but for its configuration,
// on the distributed engines: a 3-node NATS cluster with JetStream
// replicas 3 and a Redis Cluster of 3 masters and 3 replicas, both built
// by the tests from the real nats-server and redis-server binaries, with
// several ingest and bill instances. The short smoke test runs with the
// ordinary suite; the load and failure tests need the build tag cluster
// (make test-cluster).
package clustertest
