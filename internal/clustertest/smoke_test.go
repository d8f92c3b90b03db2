package clustertest

import (
	"context"
	"testing"
	"time"
)

// TestClusterSmoke: three ingest instances (three Asterisk doubles), two
// bill instances and an API on a 3-node NATS cluster (streams R3) and a
// Redis Cluster bill a small synthetic workload exactly: one CDR per
// answered call, balance = top-ups − Σ billed.
func TestClusterSmoke(t *testing.T) {
	tp := startTopo(t, topoOptions{ingest: 3, bill: 2})
	projects := tp.projects(t)
	tr := newTruth()
	tp.generate(t, tr, projects, 40, 7)
	tp.verify(t, tr, 60*time.Second)
	// The projects really are spread over several masters: List and the
	// per-project scripts work across the cluster, not on one node.
	masters := map[int]bool{}
	for _, p := range projects {
		m, _ := tp.rds.MasterOf(t, "minuted:{"+p+"}:project")
		masters[m] = true
	}
	if len(masters) < 2 {
		t.Errorf("all %d projects hash to one master: the test proves nothing about the cluster", len(projects))
	}
	list, err := tp.led.List(context.Background())
	if err != nil || len(list) != len(projects) {
		t.Errorf("List over the cluster = %d projects, %v; want %d", len(list), err, len(projects))
	}
	t.Logf("%d calls (%d answered) over 3 nodes", tr.calls, tr.total())
}
