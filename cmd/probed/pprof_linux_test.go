package main

import (
	"testing"

	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestPprofNonLoopback serves the profiler on every address with
// --pprof-allow-non-loopback, in a network namespace of its own so that
// nobody else reaches it.
func TestPprofNonLoopback(t *testing.T) {
	t.Parallel()
	ns := netlab.NewNamespace(t)
	probetest.StartProbed(t, ns.Command(probedBin, "--listen=127.0.0.1:7080", "--pprof-addr=:6060", "--pprof-allow-non-loopback"))
}
