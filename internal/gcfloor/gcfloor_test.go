package gcfloor

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"

	"github.com/netprobe/netprobe/internal/probetest"
)

// The tests run one at a time: GOGC and the memory limit are the
// process's.

func cycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func heapGoal() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var sink []byte

// collections allocates n bytes of garbage in 8 KiB pieces, as probes do
// in 10 KiB, and returns how many collections ran meanwhile.
func collections(n int) uint64 {
	before := cycles()
	for range n / (8 << 10) {
		sink = make([]byte, 8<<10)
	}
	sink = nil
	return cycles() - before
}

// tuned starts a floor and waits until it has tuned after a collection.
func tuned(t *testing.T, floor uint64) *Floor {
	t.Helper()
	f := Start(floor)
	t.Cleanup(f.Stop)
	want := cycles() + 1
	runtime.GC()
	probetest.Eventually(t, func() bool { return f.tuned.Load() >= want }, func() string {
		return fmt.Sprintf("no tuning after collection %d", want)
	})
	return f
}

// TestFloor checks that with a floor far above the live heap, garbage
// that made the collector run many times runs it once at most, and that
// Stop gives GOGC back.
func TestFloor(t *testing.T) {
	runtime.GC()
	without := collections(64 << 20)
	f := tuned(t, 256<<20)
	with := collections(64 << 20)
	if without < 4 || with > 1 {
		t.Errorf("64 MiB of garbage ran %d collections with a floor of 256 MiB and %d without; want at most 1 and at least 4", with, without)
	}
	// The goal is the floor, not more: GOGC scales the runtime's heap
	// minimum too.
	if goal := heapGoal(); goal < 240<<20 || goal > 260<<20 {
		t.Errorf("heap goal %d MiB with a floor of 256 MiB (GOGC %d)", goal>>20, f.Percent())
	}
	f.Stop()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC %d after Stop, want 100 back", got)
	}
}

// TestFloorBelowLive checks that a live heap above the floor leaves GOGC
// as it was.
func TestFloorBelowLive(t *testing.T) {
	live := make([][]byte, 0, 64)
	for range 64 {
		live = append(live, make([]byte, 1<<20))
	}
	f := tuned(t, 32<<20)
	if got := f.Percent(); got != 100 {
		t.Errorf("GOGC %d with 64 MiB live and a floor of 32 MiB, want 100", got)
	}
	runtime.KeepAlive(live)
}

// TestFloorUnderMemoryLimit checks that the floor keeps to half of a
// memory limit, not to the limit itself, near which the collector would
// run every time the heap grew a little.
func TestFloorUnderMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(64 << 20)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	runtime.GC()
	tuned(t, 256<<20)
	if goal := heapGoal(); goal > 32<<20+1<<20 {
		t.Errorf("heap goal %d MiB under a 64 MiB limit with a floor of 256 MiB, want about 32 MiB", goal>>20)
	}
}

// TestFloorGOGCOff checks that GOGC=off is left alone.
func TestFloorGOGCOff(t *testing.T) {
	// As the process would have started: the runtime read GOGC=off.
	t.Setenv("GOGC", "off")
	debug.SetGCPercent(-1)
	t.Cleanup(func() { debug.SetGCPercent(100) })
	f := Start(256 << 20)
	defer f.Stop()
	if got := f.Percent(); got != -1 {
		t.Errorf("GOGC %d after Start with GOGC off, want it off (-1)", got)
	}
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Errorf("GOGC %d, want it left off", got)
	}
}
