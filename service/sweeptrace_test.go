package service_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestSweepTraceRefused plays a caller whose sweep asks, in its sixth
// entry, for a trace beyond the API's limits, or a trace of what cannot be
// traced: the call is INVALID_ARGUMENT naming targets[5].trace's field,
// and no entry is probed (the listener behind the five good ones accepts
// nothing).
func TestSweepTraceRefused(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	good := probetest.Listen(t, "127.0.0.1:0", nil)
	for _, tc := range []struct {
		name  string
		entry *netprobev1.SweepTarget
		field string
	}{
		{"65 hops", &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "127.0.0.1", Port: 80}, Trace: &netprobev1.TraceOptions{MaxHops: 65}}, "targets[5].trace.max_hops"},
		{"2^32-1 hops", &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "127.0.0.1", Port: 80}, Trace: &netprobev1.TraceOptions{MaxHops: 1<<32 - 1}}, "targets[5].trace.max_hops"},
		{"11 probes a hop", &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "127.0.0.1", Port: 80}, Trace: &netprobev1.TraceOptions{ProbesPerHop: 11}}, "targets[5].trace.probes_per_hop"},
		{"a budget over the maximum", &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "127.0.0.1", Port: 80}, Trace: &netprobev1.TraceOptions{Timeout: durationpb.New(1 << 62)}}, "targets[5].trace.timeout"},
		{"a negative budget", &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "127.0.0.1", Port: 80}, Trace: &netprobev1.TraceOptions{Timeout: durationpb.New(-1)}}, "targets[5].trace.timeout"},
		{"an unknown when", &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "127.0.0.1", Port: 80}, Trace: &netprobev1.TraceOptions{When: 99}}, "targets[5].trace.when"},
		{"an ICMP echo", &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "127.0.0.1", Network: netprobev1.Network_NETWORK_ICMP}, Trace: &netprobev1.TraceOptions{}}, "targets[5].trace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &netprobev1.SweepRequest{}
			for range 5 {
				req.Targets = append(req.Targets, &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "127.0.0.1", Port: uint32(good.Port())}, Trace: &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS}})
			}
			req.Targets = append(req.Targets, tc.entry)
			results, err := sweep(probetest.Context(t), t, e.Probe, req)
			if got := badRequestFields(t, err); status.Code(err) != codes.InvalidArgument || fmt.Sprint(got) != fmt.Sprint([]string{tc.field}) || len(results) != 0 {
				t.Errorf("%d results, error %v (fields %v), want INVALID_ARGUMENT naming %s alone", len(results), err, got, tc.field)
			}
		})
	}
	if !good.AcceptedNothing() {
		t.Error("a sweep that was refused probed its good entries")
	}
}

// TestSweepTraceCap sweeps 20 closed ports on loopback, each asking for
// a trace on failure: the first 16 traced (each one hop, the target's
// RST), the 4 past the sweep's cap not traced, with a path saying so.
// A sweep of the server's 10,000 targets would otherwise send up to
// 64 x 10 SYNs for each.
func TestSweepTraceCap(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	closed := probetest.ClosedPort(t, "tcp4", "127.0.0.1:0")
	req := &netprobev1.SweepRequest{Concurrency: 4}
	for range 20 {
		req.Targets = append(req.Targets, &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "127.0.0.1", Port: uint32(closed)}, Trace: &netprobev1.TraceOptions{}})
	}
	results, err := sweep(probetest.Context(t), t, e.Probe, req)
	if err != nil || len(results) != 20 {
		t.Fatalf("%d results, %v; want 20", len(results), err)
	}
	traced, capped := 0, 0
	dst := fmt.Sprintf("127.0.0.1:%d", closed)
	for _, r := range results {
		path := r.GetConnect().GetPath()
		switch {
		case r.GetConnect().GetError().GetReason() != netprobev1.Reason_REASON_REFUSED:
			t.Errorf("entry %d: %v, want refused", r.GetIndex(), r.GetConnect().GetError())
		case path.GetEnd() == netprobev1.PathEnd_PATH_END_REACHED && len(path.GetHops()) == 1 && path.GetHops()[0].GetAnswer() == netprobev1.HopAnswer_HOP_ANSWER_RST && path.GetDestination() == dst:
			traced++
		case path.GetEnd() == netprobev1.PathEnd_PATH_END_ERROR && path.GetError().GetReason() == netprobev1.Reason_REASON_LIMIT && len(path.GetHops()) == 0 &&
			strings.Contains(path.GetError().GetMessage(), "at most 16 traces") && path.GetDestination() == dst:
			capped++
		default:
			t.Errorf("entry %d: path %v", r.GetIndex(), path)
		}
	}
	if traced != 16 || capped != 4 {
		t.Errorf("%d traced and %d capped, want 16 and 4", traced, capped)
	}
}
