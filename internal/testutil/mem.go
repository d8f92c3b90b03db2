package testutil

import "runtime"

// HeapInUse is the heap still reachable once the garbage collector has run
// (twice: the first cycle may leave what finalizers or weak handles freed).
func HeapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// HeapPer is the heap that what build returns keeps alive, per each of n
// items: the heap after build less the heap before, divided by n. It is
// what a long-lived structure costs per element (e.g. per live call).
// Whatever build allocates and drops is not counted.
func HeapPer(n int, build func() any) float64 {
	before := HeapInUse()
	kept := build()
	after := HeapInUse()
	runtime.KeepAlive(kept)
	return (float64(after) - float64(before)) / float64(n)
}
