// Package backoff is the one place minuted computes retry delays and
// sleeps that end with their context.
package backoff

import (
	"context"
	"time"
)

// Delay is the capped, jittered exponential delay before retry number
// attempt (0-based): min doubled attempt times, capped at max, then drawn
// in [d/2, d) by r ∈ [0, 1).
func Delay(minD, maxD time.Duration, attempt int, r float64) time.Duration {
	d := minD
	for i := 0; i < attempt && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	return d/2 + time.Duration(r*float64(d/2))
}

// Sleep waits d and reports true, or false as soon as ctx ends.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
