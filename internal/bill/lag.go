package bill

import (
	"sort"
	"sync/atomic"
	"time"
)

// lagBounds are the upper bounds, in seconds, of the settle-lag
// histogram: from a millisecond (the normal case) to a minute (bill or
// Redis was down, or a backlog is being worked off).
var lagBounds = [...]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Lag is a histogram of how long after a call ended (Asterisk's hangup
// time) its settlement was committed in Redis: the delay before the
// balance shows the call's last seconds. It includes the difference
// between the Asterisk host's clock and bill's (keep them on NTP).
type Lag struct {
	Count      uint64
	SumSeconds float64
	// Buckets maps each upper bound, in seconds, to the observations at
	// or below it (cumulative, Prometheus's shape; +Inf is Count).
	Buckets map[float64]uint64
}

// lagHistogram counts settle lags without locks.
type lagHistogram struct {
	counts [len(lagBounds) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	n      atomic.Uint64
	sumNS  atomic.Int64
}

// observe records one lag; a negative one (the clocks disagree) counts as 0.
func (h *lagHistogram) observe(d time.Duration) {
	d = max(d, 0)
	h.counts[sort.SearchFloat64s(lagBounds[:], d.Seconds())].Add(1) // the first bound ≥ d, or +Inf
	h.n.Add(1)
	h.sumNS.Add(int64(d))
}

// snapshot returns the histogram. Read while observations go on, a bucket may be a count or two
// ahead of Count: harmless for a scrape.
func (h *lagHistogram) snapshot() Lag {
	l := Lag{Count: h.n.Load(), SumSeconds: time.Duration(h.sumNS.Load()).Seconds(), Buckets: make(map[float64]uint64, len(lagBounds))}
	var cum uint64
	for i, bound := range lagBounds {
		cum += h.counts[i].Load()
		l.Buckets[bound] = cum
	}
	return l
}
