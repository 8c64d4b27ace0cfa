package client_test

import (
	"errors"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestConnectTrace traces on loopback, where the path is one hop: the
// target itself, answering the trace's SYN with a SYN-ACK, or a RST from
// a closed port. A probe that failed carries its path in the ProbeError's
// Connect.
func TestConnectTrace(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("only Linux traces without privilege")
	}
	c, _ := start(t)
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	closed := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(probetest.ClosedPort(t, "tcp", "127.0.0.1:0")))
	loopback := netip.MustParseAddr("127.0.0.1")

	t.Run("always", func(t *testing.T) {
		res, err := c.Connect(probetest.Context(t), "tcp", tg.Addr(), client.ConnectOptions{
			Timeout: 2 * time.Second,
			Trace:   &client.TraceOptions{Always: true, ProbesPerHop: 2, Timeout: 3 * time.Second},
		})
		if err != nil {
			t.Fatal(err)
		}
		p := res.Path
		if p == nil {
			t.Fatal("no path")
		}
		if p.Destination.String() != tg.Addr() || p.Source.Addr() != loopback || !p.Reached || !p.FlowHeld || p.End != client.PathEndReached || p.Timeout != 3*time.Second || p.Err != nil {
			t.Errorf("path %+v, want %s reached from the one flow in a budget of 3s", p, tg.Addr())
		}
		want := client.Hop{TTL: 1, Addr: loopback, Answer: client.HopAnswerSYNACK, Sent: 2, Answered: 2}
		if len(p.Hops) != 1 || len(p.Hops[0].RTTs) != 2 || slices.Contains(p.Hops[0].RTTs, 0) {
			t.Fatalf("hops %+v, want one with 2 RTTs", p.Hops)
		}
		got := p.Hops[0]
		got.RTTs = nil
		if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" || got.Lost() != 0 {
			t.Errorf("hop (-want +got):\n%s", diff)
		}
		if last, ok := p.LastAnswered(); !ok || last.TTL != 1 {
			t.Errorf("LastAnswered = %+v, %v; want hop 1", last, ok)
		}
	})

	t.Run("on failure", func(t *testing.T) {
		// A probe that connected is not traced.
		res, err := c.Connect(probetest.Context(t), "tcp", tg.Addr(), client.ConnectOptions{Trace: &client.TraceOptions{}})
		if err != nil || res.Path != nil {
			t.Errorf("a probe that connected: %v, path %+v; want no path", err, res.Path)
		}
		_, err = c.Connect(probetest.Context(t), "tcp", closed.String(), client.ConnectOptions{Trace: &client.TraceOptions{}})
		var pe *client.ProbeError
		if !errors.As(err, &pe) || pe.Reason != client.ReasonRefused {
			t.Fatalf("Connect to a closed port = %v, want refused", err)
		}
		p := pe.Connect.Path
		if p == nil || !p.Reached || p.End != client.PathEndReached || len(p.Hops) != 1 {
			t.Fatalf("path %+v, want the target at hop 1", p)
		}
		if h := p.Hops[0]; h.Answer != client.HopAnswerRST || h.Reason != client.ReasonRefused || h.Errno != "ECONNREFUSED" || h.Addr != loopback {
			t.Errorf("hop %+v, want a RST from 127.0.0.1, refused", h)
		}
	})
}

// TestConnectTraceLimits asks for traces beyond their limits, negative
// numbers among them, which the client must not send as "the default":
// each is INVALID_ARGUMENT naming its field, and nothing is dialled.
func TestConnectTraceLimits(t *testing.T) {
	t.Parallel()
	c, _ := start(t)
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	for _, tc := range []struct {
		name  string
		opts  client.TraceOptions
		field string
	}{
		{"65 hops", client.TraceOptions{MaxHops: 65}, "trace.max_hops"},
		{"negative hops", client.TraceOptions{MaxHops: -1}, "trace.max_hops"},
		// 2^32 would be 0, the default, cast to the field's uint32.
		{"2^32 hops", client.TraceOptions{MaxHops: 1 << 32}, "trace.max_hops"},
		{"-2^32 probes", client.TraceOptions{ProbesPerHop: -1 << 32}, "trace.probes_per_hop"},
		{"11 probes a hop", client.TraceOptions{ProbesPerHop: 11}, "trace.probes_per_hop"},
		{"negative probes", client.TraceOptions{ProbesPerHop: -3}, "trace.probes_per_hop"},
		{"negative timeout", client.TraceOptions{Timeout: -time.Second}, "trace.timeout"},
		{"a year", client.TraceOptions{Timeout: 365 * 24 * time.Hour}, "trace.timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Connect(probetest.Context(t), "tcp", tg.Addr(), client.ConnectOptions{Trace: &tc.opts})
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("Connect = %v, want InvalidArgument", err)
			}
			var fields []string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						fields = append(fields, v.GetField())
					}
				}
			}
			if !slices.Equal(fields, []string{tc.field}) {
				t.Errorf("bad fields %v, want [%s]", fields, tc.field)
			}
		})
	}
	select {
	case <-tg.Accepted:
		t.Error("a refused request was dialled")
	default:
	}
}
