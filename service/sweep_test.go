package service_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// sweep runs a Sweep and collects its results, and the error the stream
// ended with (nil for a clean end).
func sweep(ctx context.Context, t *testing.T, probe netprobev1.ProbeServiceClient, req *netprobev1.SweepRequest) ([]*netprobev1.SweepResponse, error) {
	t.Helper()
	stream, err := probe.Sweep(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*netprobev1.SweepResponse
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}

func sweepTarget(host string, port uint32) *netprobev1.SweepTarget {
	return &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: host, Port: port}}
}

// TestSweepThousand sweeps 1,000 loopback targets, half of them refused, at
// a concurrency of 100.
func TestSweepThousand(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.Unlimited, probetest.WithMaxSweepConcurrency(100))
	up := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) { c.Close() })
	closed := probetest.ClosedPort(t, "tcp", "127.0.0.1:0")
	req := &netprobev1.SweepRequest{Concurrency: 100}
	for i := range 1000 {
		port := up.Port()
		if i%2 == 1 {
			port = closed
		}
		req.Targets = append(req.Targets, sweepTarget("127.0.0.1", port))
	}
	results, err := sweep(probetest.Context(t), t, e.Probe, req)
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	seen := make([]bool, 1000)
	for _, r := range results {
		i := r.GetIndex()
		if seen[i] {
			t.Fatalf("index %d reported twice", i)
		}
		seen[i] = true
		e := r.GetConnect().GetError()
		switch {
		case r.GetAbandoned():
			t.Errorf("target %d abandoned", i)
		case i%2 == 0 && e != nil:
			t.Errorf("target %d: %v, want a connection", i, e)
		case i%2 == 1 && (e.GetStage() != netprobev1.Stage_STAGE_CONNECT || e.GetReason() != netprobev1.Reason_REASON_REFUSED):
			t.Errorf("target %d: %v, want CONNECT / REFUSED", i, e)
		}
	}
	if len(results) != 1000 {
		t.Errorf("%d results, want 1000", len(results))
	}
}

// TestSweepDeadline sweeps targets that never answer, with a deadline that
// ends the call first: every target is reported, abandoned, and the server
// never runs more probes at once than its cap. What is asserted is what
// came back, not when: the results leave 800 ms before the deadline (a
// tenth of it), which the stream's last frame must still beat on a machine
// loaded by the other packages' tests, browsers and Prometheus included
// (400 ms, of a 4 s deadline, once did not).
func TestSweepDeadline(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.WithMaxSweepConcurrency(4))
	hole := blackhole(t, "127.0.0.1")
	req := &netprobev1.SweepRequest{Concurrency: 1000, Timeout: durationpb.New(10 * time.Second)}
	for range 10 {
		req.Targets = append(req.Targets, sweepTarget("127.0.0.1", hole))
	}
	ctx, cancel := context.WithTimeout(probetest.Context(t), 8*time.Second)
	defer cancel()
	results, err := sweep(ctx, t, e.Probe, req)
	if err != nil && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Sweep: %v", err)
	}
	started := 0
	seen := map[uint32]bool{}
	for _, r := range results {
		seen[r.GetIndex()] = true
		if !r.GetAbandoned() {
			t.Errorf("target %d not abandoned: %v", r.GetIndex(), r)
		}
		if r.GetConnect() != nil {
			started++
		}
	}
	if len(results) != 10 || len(seen) != 10 || started != 4 {
		t.Errorf("%d results for %d targets, %d started; want 10 for 10, of which the cap of 4 started (stream ended with %v)", len(results), len(seen), started, err)
	}
}

// TestSweepCancel cancels a sweep midway: the call ends CANCELED and every
// probe is stopped (goleak checks that no goroutine is left).
func TestSweepCancel(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	hole := blackhole(t, "127.0.0.1")
	up := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) { c.Close() })
	req := &netprobev1.SweepRequest{Concurrency: 2, Targets: []*netprobev1.SweepTarget{sweepTarget("127.0.0.1", up.Port())}}
	for range 10 {
		req.Targets = append(req.Targets, sweepTarget("127.0.0.1", hole))
	}
	ctx, cancel := context.WithCancel(probetest.Context(t))
	stream, err := e.Probe.Sweep(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetIndex() != 0 || first.GetConnect().GetError() != nil {
		t.Fatalf("first result: %v, %v", first, err)
	}
	cancel()
	for err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Canceled {
		t.Errorf("after cancelling: %v, want Canceled", err)
	}
}

// TestSweepExpand expands one entry into its addresses, and another into
// the entries of its SRV record; a third is refused by the policy, as a
// result.
func TestSweepExpand(t *testing.T) {
	t.Parallel()
	var audit lockedBuffer
	e := probetest.Start(t, probetest.WithPolicy("deny 127.0.0.3"), probetest.WithConfig(func(c *server.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&audit, nil))
	}))
	up := probetest.Listen(t, "127.0.0.1:0", nil)
	port := up.Port()
	e.DNS.SetAddrs("two.test", netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
	e.DNS.SetAddrs("a.svc.test", netip.MustParseAddr("127.0.0.1"))
	e.DNS.SetAddrs("b.svc.test", netip.MustParseAddr("127.0.0.2"))
	e.DNS.SetSRV("_probe._tcp.svc.test", dnstest.SRV{Target: "a.svc.test", Port: uint16(port)}, dnstest.SRV{Target: "b.svc.test", Port: uint16(port)})
	req := &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{
		{Target: &netprobev1.Target{Host: "two.test", Port: port}, Expand: netprobev1.Expand_EXPAND_ADDRESSES},
		{Target: &netprobev1.Target{Host: "_probe._tcp.svc.test"}, Expand: netprobev1.Expand_EXPAND_SRV},
		sweepTarget("127.0.0.3", port),
		{Target: &netprobev1.Target{Host: "nosuch.test", Port: port}, Expand: netprobev1.Expand_EXPAND_ADDRESSES},
	}}
	results, err := sweep(probetest.Context(t), t, e.Probe, req)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range results {
		key := fmt.Sprintf("%d %s:%d", r.GetIndex(), r.GetTarget().GetHost(), r.GetTarget().GetPort())
		outcome := "ok"
		if e := r.GetConnect().GetError(); e != nil {
			outcome = e.GetStage().String() + " " + e.GetReason().String()
		}
		got[key] = outcome
	}
	want := map[string]string{
		fmt.Sprintf("0 127.0.0.1:%d", port):   "ok",
		fmt.Sprintf("0 127.0.0.2:%d", port):   "STAGE_CONNECT REASON_REFUSED",
		fmt.Sprintf("1 a.svc.test:%d", port):  "ok",
		fmt.Sprintf("1 b.svc.test:%d", port):  "STAGE_CONNECT REASON_REFUSED",
		fmt.Sprintf("2 127.0.0.3:%d", port):   "STAGE_POLICY REASON_DENIED",
		fmt.Sprintf("3 nosuch.test:%d", port): "STAGE_RESOLVE REASON_NO_SUCH_HOST",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("results\n%v\nwant\n%v", got, want)
	}
	// Every result is a probe, audited once: the entry whose expansion
	// failed too.
	if n := strings.Count(audit.String(), `"msg":"probe","method":"Sweep"`); n != len(want) {
		t.Errorf("%d audit lines, want %d:\n%s", n, len(want), audit.String())
	}
}

// lockedBuffer is a buffer a log written from many goroutines can share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestSweepValidation(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	for _, tt := range []struct {
		req    *netprobev1.SweepRequest
		fields []string
	}{
		{&netprobev1.SweepRequest{}, []string{"targets"}},
		{&netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{sweepTarget("127.0.0.1", 80), sweepTarget("bad host", 80)}}, []string{"targets[1].target.host"}},
		{&netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{{Target: &netprobev1.Target{Host: "_x._tcp.test", Port: 80}, Expand: netprobev1.Expand_EXPAND_SRV}}}, []string{"targets[0].target.port"}},
		{&netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{{Target: &netprobev1.Target{Host: "a.test", Port: 80}, Timeout: durationpb.New(time.Hour)}}}, []string{"targets[0].timeout"}},
		{&netprobev1.SweepRequest{Targets: make([]*netprobev1.SweepTarget, 10001)}, []string{"targets"}},
	} {
		_, err := sweep(probetest.Context(t), t, e.Probe, tt.req)
		if got := badRequestFields(t, err); fmt.Sprint(got) != fmt.Sprint(tt.fields) {
			t.Errorf("fields %v, want %v (%v)", got, tt.fields, err)
		}
	}
}

// TestSweepLimits checks that a Sweep is held to the limits probe by
// probe: the rate is charged for each probe (the ones its tokens do not
// cover in time are abandoned), and addresses an entry expands to count
// against the targets one Sweep may probe (those past it are reported,
// not probed).
func TestSweepLimits(t *testing.T) {
	t.Parallel()
	up := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) { c.Close() })

	t.Run("rate", func(t *testing.T) {
		e := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Admission.Rate, c.Admission.Burst = 1e-9, 3 }))
		req := &netprobev1.SweepRequest{Concurrency: 1}
		for range 5 {
			req.Targets = append(req.Targets, sweepTarget("127.0.0.1", up.Port()))
		}
		ctx, cancel := context.WithTimeout(probetest.Context(t), 2*time.Second)
		defer cancel()
		results, err := sweep(ctx, t, e.Probe, req)
		if err != nil {
			t.Fatal(err)
		}
		probed, abandoned := 0, 0
		for _, r := range results {
			switch {
			case r.GetAbandoned() && r.GetConnect() == nil:
				abandoned++
			case !r.GetAbandoned() && r.GetConnect().GetError() == nil:
				probed++
			default:
				t.Errorf("result %v", r)
			}
		}
		if probed != 3 || abandoned != 2 {
			t.Errorf("%d probed, %d abandoned; want the burst of 3 probed and 2 abandoned", probed, abandoned)
		}
	})

	t.Run("expansion", func(t *testing.T) {
		e := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.MaxSweepTargets = 4 }))
		var addrs []netip.Addr
		for i := range 5 {
			addrs = append(addrs, netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i)}))
		}
		e.DNS.SetAddrs("five.test", addrs...)
		req := &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{
			sweepTarget("127.0.0.1", up.Port()),
			{Target: &netprobev1.Target{Host: "five.test", Port: up.Port()}, Expand: netprobev1.Expand_EXPAND_ADDRESSES},
		}}
		results, err := sweep(probetest.Context(t), t, e.Probe, req)
		if err != nil {
			t.Fatal(err)
		}
		probed, overCap := 0, 0
		for _, r := range results {
			switch e := r.GetConnect().GetError(); {
			case e.GetStage() == netprobev1.Stage_STAGE_POLICY && e.GetReason() == netprobev1.Reason_REASON_LIMIT && r.GetConnect().GetAttempts() == nil:
				overCap++
			case r.GetConnect().GetPeerAddress() != "" || e.GetStage() == netprobev1.Stage_STAGE_CONNECT:
				probed++
			default:
				t.Errorf("result %v", r)
			}
		}
		if probed != 4 || overCap != 2 || len(results) != 6 {
			t.Errorf("%d results: %d probed, %d over the cap; want 4 probed (the cap) and 2 over it", len(results), probed, overCap)
		}
	})
}
