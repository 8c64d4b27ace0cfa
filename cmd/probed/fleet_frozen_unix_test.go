//go:build unix

package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestFanoutFrozenNode freezes a node (SIGSTOP: its kernel still takes the
// sweep's bytes, it never answers) and fans a sweep out with no deadline:
// the entry's keepalive gives the node up, UNAVAILABLE, and the call
// ends, rather than wait as long as the caller does.
func TestFanoutFrozenNode(t *testing.T) {
	t.Parallel()
	nodes := startFleet(t, 2, 95, func(int) []string { return nil })
	frozen := nodes[1].Cmd.Process
	if err := frozen.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { frozen.Signal(syscall.SIGCONT) })
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	// No deadline reaches the entry; the test's own limit is well past
	// the keepalive's 15 s and 5 s.
	ctx, cancel := context.WithCancel(context.Background())
	defer time.AfterFunc(time.Minute, cancel).Stop()
	start := time.Now()
	got := sweepAll(ctx, t, dial(t, nodes[0].Addr), &netprobev1.SweepRequest{
		Targets:  []*netprobev1.SweepTarget{{Target: &netprobev1.Target{Host: "127.0.0.1", Port: live.Port()}}},
		Vantages: &netprobev1.VantageSelector{All: true}})
	if got.err != nil || len(got.results["n1"]) != 1 || got.errors["n2"].GetCode() != "UNAVAILABLE" || got.fanout.GetFailed() != 1 {
		t.Errorf("after %v: ended %v, n1's results %v, n2's error %v, fanout %v; want n1's result and n2 UNAVAILABLE",
			time.Since(start).Round(time.Second), got.err, got.results["n1"], got.errors["n2"], got.fanout)
	}
}
