// Package gcfloor keeps the garbage collector's heap goal from falling
// below a floor.
//
// Go's collector sets its next goal at the live heap plus GOGC percent of
// it (and of the stacks and globals). probed's live heap at rest is a few
// MiB, while each probe allocates about 10 KiB and is gone: under load the
// collector ran 22 times a second (ghz at 64 in flight: live 4 MB, goal 8
// MB, about 4 ms of CPU a cycle), each time stopping the world and
// scanning every stack. A floor of 16 MiB makes that 9 times a second, and
// costs at most the floor in memory; once the live heap is large (10,000
// probes held), GOGC's own goal is above the floor, and nothing changes.
//
// After each collection, the finalizer-like cleanup of a sentinel object
// reads what survived (runtime/metrics) and sets GOGC
// (debug.SetGCPercent) to the least percentage whose goal reaches the
// floor, never below the GOGC the process started with. GOGC=off is left
// alone, and a memory limit (GOMEMLIMIT) still holds: the floor is kept
// to half of it.
package gcfloor

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
)

// Floor keeps the heap goal at or above its bytes until Stop.
type Floor struct {
	floor uint64
	// base is the GOGC the process started with.
	base int

	mu      sync.Mutex
	stopped bool
	// percent is the GOGC last set.
	percent int
	samples []metrics.Sample
	// tuned is the collection count when it last tuned, for tests.
	tuned atomic.Uint64
}

// Start keeps the heap goal at or above floor bytes. With GOGC off it
// does nothing.
func Start(floor uint64) *Floor {
	f := &Floor{
		floor: floor,
		samples: []metrics.Sample{
			{Name: "/gc/gomemlimit:bytes"},
			{Name: "/gc/heap/live:bytes"},
			{Name: "/gc/scan/stack:bytes"},
			{Name: "/gc/scan/globals:bytes"},
			{Name: "/gc/cycles/total:gc-cycles"},
		},
	}
	f.base = startingGOGC()
	f.percent = f.base
	if f.base < 0 {
		// GOGC=off: the memory limit alone runs the collector.
		f.stopped = true
		return f
	}
	f.tune()
	f.arm()
	return f
}

// Percent returns the GOGC set now.
func (f *Floor) Percent() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.percent
}

// Stop ends the floor and gives GOGC back its starting value.
func (f *Floor) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.stopped = true
		debug.SetGCPercent(f.base)
		f.percent = f.base
	}
}

// startingGOGC is GOGC as the process started with it, read from the
// environment as the runtime reads it: not debug.SetGCPercent's, which
// another Floor in the same process (tests start several) may have set.
func startingGOGC() int {
	v := os.Getenv("GOGC")
	if v == "off" {
		return -1
	}
	if n, err := strconv.ParseInt(v, 10, 32); err == nil {
		return int(n)
	}
	return 100
}

// heapMinimum is the Go runtime's least heap goal at GOGC=100
// (defaultHeapMinimum in runtime/mgcpacer.go), which GOGC scales.
const heapMinimum = 4 << 20

// sentinel is allocated to be collected: its cleanup runs once a
// collection has found it unreachable. It holds a pointer, so that it is
// not one of the tiny objects the runtime packs together.
type sentinel struct{ _ *byte }

// arm allocates the next sentinel, whose cleanup retunes after the
// collection that frees it and arms the one after.
func (f *Floor) arm() {
	runtime.AddCleanup(&sentinel{}, func(f *Floor) {
		if f.tune() {
			f.arm()
		}
	}, f)
}

// tune sets GOGC for what the last collection left live; it reports false
// once stopped.
func (f *Floor) tune() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	metrics.Read(f.samples)
	f.tuned.Store(f.samples[4].Value.Uint64())
	limit := f.samples[0].Value.Uint64()
	live := f.samples[1].Value.Uint64()
	scan := live + f.samples[2].Value.Uint64() + f.samples[3].Value.Uint64()
	floor := min(f.floor, limit/2)
	percent := f.base
	if floor > live && scan > 0 {
		// The goal is live + scan*percent/100, and at least the runtime's
		// heap minimum, which GOGC scales too: percent/100 of 4 MiB.
		need := min((floor-live)*100/scan, floor*100/heapMinimum)
		percent = max(f.base, int(min(need, math.MaxInt32)))
	}
	if percent != f.percent {
		debug.SetGCPercent(percent)
		f.percent = percent
	}
	return true
}
