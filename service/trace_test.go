package service_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestTraceLoopback traces paths of one hop, to a target on loopback: the
// target itself answers the first TTL, with its SYN-ACK or, from a closed
// port, its RST. (The paths of several hops, and what routers answer, are
// cmd/probed's TestTrace, across namespaces.)
func TestTraceLoopback(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	open4 := probetest.Listen(t, "127.0.0.1:0", nil)
	open6 := probetest.Listen(t, "[::1]:0", nil)
	closed := probetest.ClosedPort(t, "tcp4", "127.0.0.1:0")
	always := &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS}

	synAck := func(addr string, probes uint32) *netprobev1.Hop {
		return &netprobev1.Hop{Ttl: 1, Address: addr, Answer: netprobev1.HopAnswer_HOP_ANSWER_SYN_ACK, Sent: probes, Answered: probes}
	}
	for _, tc := range []struct {
		name   string
		host   string
		port   uint32
		trace  *netprobev1.TraceOptions
		failed bool
		// want is the path, without its durations, source and rtts;
		// nil is none.
		want *netprobev1.Path
	}{
		{"IPv4, always", "127.0.0.1", open4.Port(), always, false, &netprobev1.Path{
			Hops: []*netprobev1.Hop{synAck("127.0.0.1", 1)}, Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
		}},
		{"IPv6, always", "::1", open6.Port(), always, false, &netprobev1.Path{
			Hops: []*netprobev1.Hop{synAck("::1", 1)}, Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
		}},
		// Each probe of the hop connects from the same port: the one
		// before must be gone without a TIME_WAIT.
		{"three probes a hop, one port", "127.0.0.1", open4.Port(), &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS, ProbesPerHop: 3}, false, &netprobev1.Path{
			Hops: []*netprobev1.Hop{synAck("127.0.0.1", 3)}, Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
		}},
		{"success, on failure", "127.0.0.1", open4.Port(), &netprobev1.TraceOptions{}, false, nil},
		{"closed port, on failure", "127.0.0.1", closed, &netprobev1.TraceOptions{}, true, &netprobev1.Path{
			Hops: []*netprobev1.Hop{{
				Ttl: 1, Address: "127.0.0.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_RST,
				Reason: netprobev1.Reason_REASON_REFUSED, Errno: "ECONNREFUSED", Sent: 1, Answered: 1,
			}},
			Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
				Target: &netprobev1.Target{Host: tc.host, Port: tc.port},
				Trace:  tc.trace,
			})
			if err != nil {
				t.Fatal(err)
			}
			if (resp.Error != nil) != tc.failed {
				t.Fatalf("error %v, want failed %v", resp.Error, tc.failed)
			}
			path := resp.GetPath()
			if tc.want == nil {
				if path != nil {
					t.Fatalf("path %v, want none", path)
				}
				return
			}
			checkPathTimes(t, path, 10*time.Second)
			dst := netip.AddrPortFrom(netip.MustParseAddr(tc.host), uint16(tc.port))
			if path.Destination != dst.String() {
				t.Errorf("destination %s, want %s", path.Destination, dst)
			}
			if src, err := netip.ParseAddrPort(path.Source); err != nil || src.Addr() != dst.Addr() || src.Port() == 0 {
				t.Errorf("source %q, want %s and a port", path.Source, dst.Addr())
			}
			tc.want.Destination, tc.want.Source = path.Destination, path.Source
			if diff := cmp.Diff(tc.want, path, protocmp.Transform(), ignorePathTimes()); diff != "" {
				t.Errorf("path (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFetchTrace traces Fetches on loopback: a fetch that worked has no
// path unless asked always; one whose connect failed, or whose exchange
// did (an expect that the peer closed on), has its path in the summary,
// traced once the connection was closed; the connect message never has
// one.
func TestFetchTrace(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	open := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) { c.Close() })
	closed := probetest.ClosedPort(t, "tcp4", "127.0.0.1:0")
	synAck := &netprobev1.Hop{Ttl: 1, Address: "127.0.0.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_SYN_ACK, Sent: 1, Answered: 1}
	rst := &netprobev1.Hop{Ttl: 1, Address: "127.0.0.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_RST, Reason: netprobev1.Reason_REASON_REFUSED, Errno: "ECONNREFUSED", Sent: 1, Answered: 1}
	expect := []*netprobev1.Step{{Action: &netprobev1.Step_Expect{Expect: "^SSH-"}}}
	for _, tc := range []struct {
		name  string
		port  uint32
		when  netprobev1.TraceWhen
		steps []*netprobev1.Step
		stage netprobev1.Stage
		// hop is the path's one hop; nil is no path.
		hop *netprobev1.Hop
	}{
		{"worked, on failure", open.Port(), netprobev1.TraceWhen_TRACE_WHEN_ON_FAILURE, nil, netprobev1.Stage_STAGE_UNSPECIFIED, nil},
		{"worked, always", open.Port(), netprobev1.TraceWhen_TRACE_WHEN_ALWAYS, nil, netprobev1.Stage_STAGE_UNSPECIFIED, synAck},
		{"connect failed", closed, netprobev1.TraceWhen_TRACE_WHEN_ON_FAILURE, nil, netprobev1.Stage_STAGE_CONNECT, rst},
		{"exchange failed", open.Port(), netprobev1.TraceWhen_TRACE_WHEN_ON_FAILURE, expect, netprobev1.Stage_STAGE_EXPECT, synAck},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := fetch(t, e.Probe, &netprobev1.FetchRequest{
				Target: &netprobev1.Target{Host: "127.0.0.1", Port: tc.port},
				Steps:  tc.steps,
				Trace:  &netprobev1.TraceOptions{When: tc.when},
			})
			if f.connect.GetPath() != nil {
				t.Errorf("the connect message has a path: %v", f.connect.GetPath())
			}
			if got := f.summary.GetError().GetStage(); got != tc.stage {
				t.Fatalf("failed at %v (%v), want %v", got, f.summary.GetError(), tc.stage)
			}
			path := f.summary.GetPath()
			if tc.hop == nil {
				if path != nil {
					t.Fatalf("path %v, want none", path)
				}
				return
			}
			checkPathTimes(t, path, 10*time.Second)
			want := &netprobev1.Path{
				Destination: fmt.Sprintf("127.0.0.1:%d", tc.port), Source: path.GetSource(),
				Hops: []*netprobev1.Hop{tc.hop}, Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
			}
			if diff := cmp.Diff(want, path, protocmp.Transform(), ignorePathTimes()); diff != "" {
				t.Errorf("path (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTraceNames looks up the names of a trace's hops (here the target's,
// one hop away on loopback) from the server's resolver: a name found, its
// final dot dropped; none asked for; none found; a name that is no domain
// name (an escape sequence for a terminal), which the resolver drops; and
// a lookup that outlives the trace's timeout, which leaves the hop with no
// name and the path within its timeout.
func TestTraceNames(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	named := netip.MustParseAddr("127.0.0.2")
	hostile := netip.MustParseAddr("127.0.0.3")
	held := netip.MustParseAddr("127.0.0.4")
	nameless := netip.MustParseAddr("127.0.0.5")
	e.DNS.SetPTR(named, "target.example.test")
	e.DNS.SetPTR(hostile, "\x1b[2Jevil.example.test")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	e.DNS.HoldPTR(held, release)
	for _, tc := range []struct {
		name    string
		addr    netip.Addr
		names   bool
		timeout time.Duration
		want    string
	}{
		{"found", named, true, 0, "target.example.test"},
		{"not asked for", named, false, 0, ""},
		{"none", nameless, true, 0, ""},
		{"not a domain name", hostile, true, 0, ""},
		{"lookup outlives the trace", held, true, time.Second, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ln := probetest.Listen(t, netip.AddrPortFrom(tc.addr, 0).String(), nil)
			trace := &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS, Names: tc.names}
			if tc.timeout > 0 {
				trace.Timeout = durationpb.New(tc.timeout)
			}
			resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
				Target: &netprobev1.Target{Host: tc.addr.String(), Port: ln.Port()},
				Trace:  trace,
			})
			if err != nil {
				t.Fatal(err)
			}
			path := resp.GetPath()
			if path.GetEnd() != netprobev1.PathEnd_PATH_END_REACHED || len(path.GetHops()) != 1 {
				t.Fatalf("path %v, want the target reached at hop 1", path)
			}
			if got := path.GetHops()[0].GetName(); got != tc.want {
				t.Errorf("hop name %q, want %q", got, tc.want)
			}
			budget := 10 * time.Second
			if tc.timeout > 0 {
				budget = tc.timeout
			}
			checkPathTimes(t, path, budget)
		})
	}
}

// TestTraceBudget checks that a trace into silence ends with its budget,
// and before the caller's deadline with the margin to send what it found.
func TestTraceBudget(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	// Every SYN to the blackhole is dropped: no TTL is ever answered, and
	// the silence would last five hops of a second each.
	hole := blackhole(t, "127.0.0.1")
	for _, tc := range []struct {
		name string
		// budget is the trace's; deadline the caller's, from the call's
		// start.
		budget, deadline time.Duration
	}{
		{"the trace's own budget", 1500 * time.Millisecond, 10 * time.Second},
		{"the caller's deadline", 10 * time.Second, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// A process kept from running for longer than the margin
			// misses the deadline however the trace ends: an attempt that
			// a stall explains is run again, up to three; a miss with no
			// stall to explain it fails at once.
			var (
				resp    *netprobev1.ConnectResponse
				stalled time.Duration
			)
			for attempt := 1; ; attempt++ {
				stalls := probetest.WatchStalls(t)
				ctx, cancel := context.WithTimeout(probetest.Context(t), tc.deadline)
				start := time.Now()
				var err error
				resp, err = e.Probe.Connect(ctx, &netprobev1.ConnectRequest{
					Target:  &netprobev1.Target{Host: "127.0.0.1", Port: uint32(hole)},
					Timeout: durationpb.New(200 * time.Millisecond),
					Trace:   &netprobev1.TraceOptions{Timeout: durationpb.New(tc.budget)},
				})
				took := time.Since(start)
				cancel()
				stalled = stalls.Stop()
				if err == nil {
					break
				}
				if stalled < excusingStall || attempt == 3 {
					t.Fatalf("%v after %v (the process stalled for %v at most): the trace's margin before the deadline did not hold", err, took, stalled)
				}
				t.Logf("attempt %d: %v after %v, with the process stalled for %v: once more", attempt, err, took, stalled)
			}
			if got := resp.GetError().GetReason(); got != netprobev1.Reason_REASON_TIMEOUT {
				t.Errorf("probe error %v, want a timeout", resp.GetError())
			}
			path := resp.GetPath()
			if path.GetEnd() != netprobev1.PathEnd_PATH_END_TIMEOUT {
				t.Fatalf("path %v, want its end PATH_END_TIMEOUT", path)
			}
			// The bound is generous: the trace ends as its context does,
			// and is measured a moment after, and later by as long as the
			// process was kept from running.
			limit := min(tc.budget, tc.deadline) + 250*time.Millisecond + stalled
			if d := path.GetDuration().AsDuration(); d > limit {
				t.Errorf("the trace took %v, over its limit of %v", d, limit)
			}
			if path.GetTimeout().AsDuration() != tc.budget {
				t.Errorf("path timeout %v, want %v", path.GetTimeout().AsDuration(), tc.budget)
			}
			// Every probe the trace counted went unanswered; one cut short
			// by the end is not counted.
			for _, h := range path.GetHops() {
				if h.Answer != netprobev1.HopAnswer_HOP_ANSWER_NONE || h.Sent != 1 || h.Answered != 0 {
					t.Errorf("hop %v, want one probe sent and lost", h)
				}
			}
		})
	}
}

// excusingStall is the stall of the process that explains a call missing
// the trace's margin of 250 ms before its deadline: the response is
// normally sent within a millisecond of the trace's end.
const excusingStall = 100 * time.Millisecond

// timerLate is how late checkPathTimes lets a trace's timer fire.
const timerLate = 50 * time.Millisecond

// checkPathTimes checks a path's budget and the time it took, and that
// every answered probe has a round-trip time.
func checkPathTimes(t *testing.T, path *netprobev1.Path, budget time.Duration) {
	t.Helper()
	if got := path.GetTimeout().AsDuration(); got != budget {
		t.Errorf("path timeout %v, want %v", got, budget)
	}
	// A trace ends on a timer, which fires late on a loaded machine: the
	// duration may pass the budget by that much (0.4 ms seen with the
	// package's tests in parallel), but not by a lookup or probe left
	// running.
	if d := path.GetDuration().AsDuration(); d <= 0 || d > budget+timerLate {
		t.Errorf("path duration %v, want within (0, %v]", d, budget+timerLate)
	}
	for _, h := range path.GetHops() {
		if len(h.Rtts) != int(h.Answered) {
			t.Errorf("hop %d: %d rtts for %d answers", h.Ttl, len(h.Rtts), h.Answered)
		}
		for _, r := range h.Rtts {
			if r.AsDuration() <= 0 {
				t.Errorf("hop %d: rtt %v", h.Ttl, r.AsDuration())
			}
		}
	}
}

// ignorePathTimes leaves out of a comparison of paths what varies from
// run to run: the durations and round-trip times.
func ignorePathTimes() cmp.Option {
	return cmp.Options{
		protocmp.IgnoreFields(&netprobev1.Path{}, "duration", "timeout"),
		protocmp.IgnoreFields(&netprobev1.Hop{}, "rtts"),
	}
}

// TestTraceRefusalMessages checks what a refused trace says: the field,
// the value and the limit. Zeros are no refusal: they ask for the
// defaults.
func TestTraceRefusalMessages(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	closed := probetest.ClosedPort(t, "tcp4", "127.0.0.1:0")
	for _, tc := range []struct {
		trace *netprobev1.TraceOptions
		want  string
	}{
		{&netprobev1.TraceOptions{MaxHops: 65}, "trace.max_hops: 65 is over the maximum of 64"},
		{&netprobev1.TraceOptions{ProbesPerHop: 4000000000}, "trace.probes_per_hop: 4000000000 is over the maximum of 10"},
		{&netprobev1.TraceOptions{Timeout: durationpb.New(-time.Second)}, "trace.timeout: must be positive, got -1s"},
		{&netprobev1.TraceOptions{Timeout: durationpb.New(time.Hour)}, "trace.timeout: 1h0m0s is over the server's maximum of 1m0s"},
		{&netprobev1.TraceOptions{MaxHops: 0, ProbesPerHop: 0}, ""},
	} {
		resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
			Target: &netprobev1.Target{Host: "127.0.0.1", Port: closed},
			Trace:  tc.trace,
		})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v, want the defaults", tc.trace, err)
		case tc.want == "" && resp.GetPath().GetEnd() != netprobev1.PathEnd_PATH_END_REACHED:
			t.Errorf("%v: path %v, want the closed port reached", tc.trace, resp.GetPath())
		case tc.want != "" && status.Convert(err).Message() != "invalid request: "+tc.want:
			t.Errorf("%v: %v, want invalid request: %s", tc.trace, err, tc.want)
		}
		if tc.want == "" {
			continue
		}
		// A Fetch's trace is checked as a Connect's is.
		stream, err := e.Probe.Fetch(probetest.Context(t), &netprobev1.FetchRequest{
			Target: &netprobev1.Target{Host: "127.0.0.1", Port: closed},
			Trace:  tc.trace,
		})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Convert(err).Message() != "invalid request: "+tc.want {
			t.Errorf("Fetch, %v: %v, want invalid request: %s", tc.trace, err, tc.want)
		}
	}
}

// TestTracePolicy plays a caller who reaches for a denied address through
// a trace: a probe whose time ends before it dials reports its first
// address, which the policy never saw; the trace must not go there.
func TestTracePolicy(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.WithPolicy("deny 127.0.0.1"))
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		want    netprobev1.Stage
	}{
		{"denied at the dial", time.Second, netprobev1.Stage_STAGE_POLICY},
		// 1ns is over before the dial begins.
		{"time over before the dial", time.Nanosecond, netprobev1.Stage_STAGE_CONNECT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
				Target:  &netprobev1.Target{Host: "127.0.0.1", Port: 9},
				Timeout: durationpb.New(tc.timeout),
				Trace:   &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS},
			})
			stage := resp.GetError().GetStage()
			if st, ok := status.FromError(err); ok && st.Code() == codes.PermissionDenied {
				stage = netprobev1.Stage_STAGE_POLICY
			} else if err != nil {
				t.Fatal(err)
			}
			if stage != tc.want {
				t.Errorf("error %v / %v, want stage %v", err, resp.GetError(), tc.want)
			}
			if resp.GetPath() != nil {
				t.Errorf("path %v to a denied address", resp.GetPath())
			}
		})
	}
}

// TestTraceUDPLoopback traces UDP paths of one hop, to targets on
// loopback: a closed port answers the first TTL with an ICMP port
// unreachable, an echo with a datagram, and a port that keeps silent not
// at all. (Routers, and their filters, are cmd/probed's TestTrace.)
func TestTraceUDPLoopback(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	// The echo tells the test each datagram's source: every probe of the
	// trace must come from the one port the path names.
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	sources := make(chan netip.AddrPort, 16)
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			sources <- from.(*net.UDPAddr).AddrPort()
			echo.WriteTo([]byte("pong"), from)
		}
	}()
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	closed4 := closedUDPPort(t, "127.0.0.1:0")
	closed6 := closedUDPPort(t, "[::1]:0")
	always := &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS}
	portUnreachable := func(addr string, icmpType, icmpCode uint32) *netprobev1.Hop {
		return &netprobev1.Hop{
			Ttl: 1, Address: addr, Answer: netprobev1.HopAnswer_HOP_ANSWER_PORT_UNREACHABLE, IcmpType: icmpType, IcmpCode: icmpCode,
			Reason: netprobev1.Reason_REASON_REFUSED, Errno: "ECONNREFUSED", Sent: 1, Answered: 1,
		}
	}
	for _, tc := range []struct {
		name  string
		host  string
		port  uint32
		trace *netprobev1.TraceOptions
		// want is the path, without its durations, source and rtts.
		want *netprobev1.Path
	}{
		{"IPv4, closed port", "127.0.0.1", closed4, always, &netprobev1.Path{
			Hops: []*netprobev1.Hop{portUnreachable("127.0.0.1", 3, 3)}, Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
		}},
		{"IPv6, closed port", "::1", closed6, always, &netprobev1.Path{
			Hops: []*netprobev1.Hop{portUnreachable("::1", 1, 4)}, Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
		}},
		{"echo, three probes a hop", "127.0.0.1", uint32(echo.LocalAddr().(*net.UDPAddr).Port), &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS, ProbesPerHop: 3}, &netprobev1.Path{
			Hops:    []*netprobev1.Hop{{Ttl: 1, Address: "127.0.0.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_DATAGRAM, Sent: 3, Answered: 3}},
			Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
		}},
		// An open port that does not answer an empty datagram: the trace
		// cannot tell it from a drop, and says only what it saw.
		{"silent port", "127.0.0.1", uint32(silent.LocalAddr().(*net.UDPAddr).Port), &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS, Timeout: durationpb.New(2500 * time.Millisecond)}, &netprobev1.Path{
			Hops: []*netprobev1.Hop{
				{Ttl: 1, Answer: netprobev1.HopAnswer_HOP_ANSWER_NONE, Sent: 1},
				{Ttl: 2, Answer: netprobev1.HopAnswer_HOP_ANSWER_NONE, Sent: 1},
			},
			FlowHeld: true, End: netprobev1.PathEnd_PATH_END_TIMEOUT,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
				Target: &netprobev1.Target{Host: tc.host, Port: tc.port, Network: netprobev1.Network_NETWORK_UDP},
				Trace:  tc.trace,
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Error != nil {
				t.Fatalf("error %v: a UDP connect sends nothing, and fails only locally", resp.Error)
			}
			path := resp.GetPath()
			budget := 10 * time.Second
			if tc.trace.Timeout != nil {
				budget = tc.trace.Timeout.AsDuration()
			}
			if tc.want.End == netprobev1.PathEnd_PATH_END_TIMEOUT {
				// A generous bound on the budget's end: it is measured a
				// moment after.
				if d := path.GetDuration().AsDuration(); d > budget+250*time.Millisecond {
					t.Errorf("the trace took %v, over its budget of %v", d, budget)
				}
			} else {
				checkPathTimes(t, path, budget)
			}
			dst := netip.AddrPortFrom(netip.MustParseAddr(tc.host), uint16(tc.port))
			if src, err := netip.ParseAddrPort(path.Source); err != nil || src.Addr() != dst.Addr() || src.Port() == 0 {
				t.Errorf("source %q, want %s and a port", path.Source, dst.Addr())
			}
			tc.want.Destination, tc.want.Source = dst.String(), path.Source
			if diff := cmp.Diff(tc.want, path, protocmp.Transform(), ignorePathTimes()); diff != "" {
				t.Errorf("path (-want +got):\n%s", diff)
			}
			if tc.want.Hops[0].Answer != netprobev1.HopAnswer_HOP_ANSWER_DATAGRAM {
				return
			}
			// Paris traceroute, as the echo saw it.
			for i := range 3 {
				select {
				case from := <-sources:
					if from.String() != path.Source {
						t.Errorf("probe %d came from %s, want the path's %s", i+1, from, path.Source)
					}
				case <-probetest.Context(t).Done():
					t.Fatal("the echo did not see the 3 probes")
				}
			}
		})
	}
}

// closedUDPPort returns a UDP port on addr's loopback with nothing on it.
func closedUDPPort(t *testing.T, addr string) uint32 {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return uint32(pc.LocalAddr().(*net.UDPAddr).Port)
}

// TestTraceUDPRefusals plays a caller who asks a UDP trace for more than
// its limits, or a trace of an ICMP echo: INVALID_ARGUMENT, naming the
// field, and nothing sent.
func TestTraceUDPRefusals(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	udp := func(o *netprobev1.TraceOptions) *netprobev1.ConnectRequest {
		return &netprobev1.ConnectRequest{
			Target: &netprobev1.Target{Host: "127.0.0.1", Port: 9, Network: netprobev1.Network_NETWORK_UDP},
			Trace:  o,
		}
	}
	for _, tc := range []struct {
		name string
		req  *netprobev1.ConnectRequest
		want string
	}{
		{"max_hops", udp(&netprobev1.TraceOptions{MaxHops: 65}), "trace.max_hops: 65 is over the maximum of 64"},
		{"probes_per_hop", udp(&netprobev1.TraceOptions{ProbesPerHop: 11}), "trace.probes_per_hop: 11 is over the maximum of 10"},
		{"timeout", udp(&netprobev1.TraceOptions{Timeout: durationpb.New(time.Hour)}), "trace.timeout: 1h0m0s is over the server's maximum of 1m0s"},
		{"when", udp(&netprobev1.TraceOptions{When: 7}), "trace.when: unknown value 7: TRACE_WHEN_ON_FAILURE or TRACE_WHEN_ALWAYS"},
		{"an ICMP echo", &netprobev1.ConnectRequest{
			Target: &netprobev1.Target{Host: "127.0.0.1", Network: netprobev1.Network_NETWORK_ICMP},
			Trace:  &netprobev1.TraceOptions{},
		}, "trace: a trace follows TCP and UDP targets only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Probe.Connect(probetest.Context(t), tc.req)
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != "invalid request: "+tc.want {
				t.Errorf("%v, want INVALID_ARGUMENT: invalid request: %s", err, tc.want)
			}
		})
	}
}
