package loadtest

import (
	"math"
	"sort"
)

// Quantiles returns the qs quantiles of xs (nearest rank; 0 when empty).
// xs is sorted in place.
func Quantiles(xs []float64, qs ...float64) []float64 {
	out := make([]float64, len(qs))
	sort.Float64s(xs)
	for i, q := range qs {
		if len(xs) == 0 {
			out[i] = 0
			continue
		}
		k := int(math.Ceil(q*float64(len(xs)))) - 1
		out[i] = xs[min(max(k, 0), len(xs)-1)]
	}
	return out
}
