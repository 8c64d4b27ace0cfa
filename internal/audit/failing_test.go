package audit

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/service"
)

// probeOf records a probe of host:1 made through via ("" for gRPC) that
// ended as outcome (ok, failed, denied or abandoned), and returns it.
func probeOf(t *testing.T, a *Recorder, via, host, outcome string) *Probe {
	t.Helper()
	ctx := context.Background()
	if via != "" {
		ctx = WithVia(ctx, via)
	}
	r := service.Report{Method: "Connect", Target: &netprobev1.Target{Host: host, Port: 1}}
	switch outcome {
	case "failed":
		r.Error = &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT, Reason: netprobev1.Reason_REASON_REFUSED, Errno: "ECONNREFUSED"}
	case "denied":
		r.Error = &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_POLICY, Reason: netprobev1.Reason_REASON_DENIED, Rule: "built-in: loopback"}
	case "abandoned":
		r.Abandoned = true
	}
	a.Observe(ctx, r)
	p := a.Recent()[0]
	if p.Outcome != outcome {
		t.Fatalf("recorded %s, want %s", p.Outcome, outcome)
	}
	return p
}

// failingNow is the targets failing now as "via target (failures)".
func failingNow(a *Recorder) []string {
	now, _ := a.Failing()
	var out []string
	for _, f := range now {
		out = append(out, fmt.Sprintf("%s %s (%d)", f.Last.Via, f.Last.Target, f.Failures))
	}
	return out
}

// TestFailingRun follows one target through a run of failures: the run
// begins at its first failure and keeps that time across the failures
// and denials that follow, an abandoned probe says nothing, the latest
// failure is the one shown, and a success ends the run: the next failure
// begins another.
func TestFailingRun(t *testing.T) {
	a := New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	if got := failingNow(a); len(got) != 0 {
		t.Fatalf("failing before any probe: %q", got)
	}
	probeOf(t, a, "", "a", "ok")
	first := probeOf(t, a, "", "a", "failed")
	probeOf(t, a, "", "a", "abandoned")
	probeOf(t, a, "", "a", "failed")
	last := probeOf(t, a, "", "a", "denied")
	now, _ := a.Failing()
	if len(now) != 1 {
		t.Fatalf("failing now: %q", failingNow(a))
	}
	if f := now[0]; !f.Since.Equal(first.Time) || f.Failures != 3 || f.Last.ID != last.ID || f.Last.Stage != "POLICY" || f.Last.Reason != "DENIED" {
		t.Errorf("the run is %+v since %v, want 3 failures since %v, the last #%d denied", f.Last, f.Since, first.Time, last.ID)
	}

	probeOf(t, a, "", "a", "ok")
	if got := failingNow(a); len(got) != 0 {
		t.Fatalf("a target that succeeded is still failing: %q", got)
	}
	again := probeOf(t, a, "", "a", "failed")
	if now, _ := a.Failing(); len(now) != 1 || !now[0].Since.Equal(again.Time) || now[0].Failures != 1 {
		t.Errorf("after a success, a failure begins a new run: %q", failingNow(a))
	}
}

// TestFailingOrder lists the newest run of failures first, one row a
// target and way in: a target that goes on failing keeps its place, and a
// success through one way in leaves the other's failure.
func TestFailingOrder(t *testing.T) {
	a := New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	probeOf(t, a, "", "a", "failed")
	probeOf(t, a, "", "b", "failed")
	probeOf(t, a, "/probe tcp_connect", "a", "failed")
	probeOf(t, a, "", "a", "failed")
	probeOf(t, a, "", "c", "denied")
	probeOf(t, a, "", "b", "ok")
	want := []string{"gRPC Connect tcp c:1 (1)", "/probe tcp_connect tcp a:1 (1)", "gRPC Connect tcp a:1 (2)"}
	if got := failingNow(a); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("failing now:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestFailingBounded plays a caller that makes three times FailingKept
// distinct targets fail, each failure with a message of 64 KiB, while a
// real outage goes on failing once in a while: the Recorder keeps
// FailingKept targets, forgets those whose latest failure is the oldest
// (not the outage), counts what it forgot, and keeps messageKept bytes of
// each message. The latest failure's report outlives the ring of recent
// probes while its target is failing.
func TestFailingBounded(t *testing.T) {
	a := New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	long := strings.Repeat("é", 32<<10)
	outage := probeOf(t, a, "/probe tcp_connect", "outage", "failed")
	for i := range 3 * FailingKept {
		a.Observe(context.Background(), service.Report{Method: "Connect", Target: &netprobev1.Target{Host: fmt.Sprintf("h%d", i), Port: 1},
			Error: &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT, Reason: netprobev1.Reason_REASON_TIMEOUT, Message: long}})
		if i%(FailingKept/2) == 0 {
			probeOf(t, a, "/probe tcp_connect", "outage", "failed")
		}
	}
	now, evicted := a.Failing()
	if len(now) != FailingKept || evicted != 2*FailingKept+1 {
		t.Fatalf("%d failing now, %d forgotten; want %d and %d", len(now), evicted, FailingKept, 2*FailingKept+1)
	}
	if got := now[0].Last.Target; got != fmt.Sprintf("tcp h%d:1", 3*FailingKept-1) {
		t.Errorf("the newest failure is %s", got)
	}
	var kept *Failing
	for i, f := range now {
		if m := f.Last.Error.GetMessage(); f.Last.Target != "tcp outage:1" && (len(m) > messageKept+len("…") || !strings.HasPrefix(long, strings.TrimSuffix(m, "…"))) {
			t.Fatalf("a failure keeps a message of %d bytes: %.40q", len(m), m)
		}
		if f.Last.Target == "tcp outage:1" {
			kept = &now[i]
		}
	}
	if kept == nil || !kept.Since.Equal(outage.Time) || kept.Failures != 7 {
		t.Fatalf("the outage, failing all along, is %+v", kept)
	}
	if p := a.Lookup(kept.Last.ID); p == nil || p.Error.GetReason() != netprobev1.Reason_REASON_REFUSED || p.ConnectResponse != nil {
		t.Errorf("the outage's latest failure, gone from the ring, is %+v", p)
	}
	if p := a.Lookup(outage.ID); p != nil {
		t.Errorf("the outage's first failure is still there: %+v", p)
	}
}

// TestFailingConcurrent has probes of a few targets fail and succeed from
// many goroutines while the page reads, with room for fewer targets than
// fail: under the race detector, and the list never holds more than its
// room, nor a target twice.
func TestFailingConcurrent(t *testing.T) {
	a := New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	a.failing = newFailing(8)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				r := refusedReport(fmt.Sprintf("h%d", (g+i)%16))
				if i%3 == 0 {
					r.Error = nil
				}
				a.Observe(context.Background(), r)
			}
		})
	}
	for range 50 {
		now, _ := a.Failing()
		seen := map[string]bool{}
		for _, f := range now {
			if seen[f.Last.Target] {
				t.Fatalf("%s twice", f.Last.Target)
			}
			seen[f.Last.Target] = true
			a.Lookup(f.Last.ID)
		}
		if len(now) > 8 {
			t.Fatalf("%d failing, room for 8", len(now))
		}
	}
	wg.Wait()
}

// refusedReport is a Connect to host:1 that was refused.
func refusedReport(host string) service.Report {
	return service.Report{Method: "Connect", Target: &netprobev1.Target{Host: host, Port: 1},
		Error: &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT, Reason: netprobev1.Reason_REASON_REFUSED}}
}
