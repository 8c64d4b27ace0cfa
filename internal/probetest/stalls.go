package probetest

import (
	"testing"
	"time"
)

// stallTick is how often a Stalls looks at the clock.
const stallTick = 2 * time.Millisecond

// Stalls measures how long this process was kept from running while a
// test that bounds a time ran: a goroutine wakes every 2 ms and notes by
// how much each wake came late. A stall of the process (a loaded CI host
// descheduling it, a pause of the race detector's runtime: 330-375 ms seen
// in CI) delays the code under test as much, and is no fault of it; a test
// adds the longest stall to its bound, or runs an attempt again that a
// stall spoilt, and fails as before when no stall explains the miss.
type Stalls struct {
	// longest is the watch's own until stopped closes.
	longest time.Duration
	stop    chan struct{}
	stopped chan struct{}
}

// WatchStalls starts watching for stalls until Stop or the test's end.
func WatchStalls(t testing.TB) *Stalls {
	s := &Stalls{stop: make(chan struct{}), stopped: make(chan struct{})}
	go s.watch()
	t.Cleanup(func() { s.Stop() })
	return s
}

func (s *Stalls) watch() {
	defer close(s.stopped)
	tick := time.NewTicker(stallTick)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		// The ticker's own time is when it fired, not when this goroutine
		// ran: the clock is read here.
		now := time.Now()
		s.longest = max(s.longest, now.Sub(last)-stallTick)
		last = now
	}
}

// Stop ends the watch and returns the longest stall it saw. It may be
// called more than once.
func (s *Stalls) Stop() time.Duration {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.stopped
	return s.longest
}
