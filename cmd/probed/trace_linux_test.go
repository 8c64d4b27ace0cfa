package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// The chain's target ports, one per behaviour.
const (
	tracePortOpen     = 80
	tracePortClosed   = 81 // nothing listens
	tracePortDropped  = 82 // r2 drops the SYNs
	tracePortRejected = 83 // r2 answers them administratively prohibited
	tracePortFlow     = 84 // the target tells the ports it was connected from
)

// unprivileged is the user a probed runs as in the trace tests: the
// distroless "nonroot" user that the deployment runs it as.
const unprivileged = 65532

// TestTrace traces paths across a chain of namespaces, client - r1 - r2 -
// r3 - target, in both families, from a probed that runs in the client's
// namespace as uid 65532 with no capability at all: the unprivileged
// trace the issue promises, not one that works only as root. Each fault
// is made for real: a closed port, a drop and a reject at r2 (an ingress
// filter, so that r2 answers nothing else for those segments either),
// and r1 without a route to the target.
func TestTrace(t *testing.T) {
	c := netlab.NewChain(t, 3)
	for _, ip := range []netip.Addr{c.Target.V4, c.Target.V6} {
		for _, p := range []uint16{tracePortOpen, tracePortDropped, tracePortRejected} {
			probetest.NewTarget(t, c.Target.Listen(t, netip.AddrPortFrom(ip, p).String()), func(conn net.Conn) { conn.Close() })
		}
	}
	// The flow port's target tells the test each connection's source.
	flows := map[netip.Addr]chan netip.AddrPort{}
	for _, ip := range []netip.Addr{c.Target.V4, c.Target.V6} {
		seen := make(chan netip.AddrPort, 64)
		flows[ip] = seen
		probetest.NewTarget(t, c.Target.Listen(t, netip.AddrPortFrom(ip, tracePortFlow).String()), func(conn net.Conn) {
			seen <- conn.RemoteAddr().(*net.TCPAddr).AddrPort()
			conn.Close()
		})
	}
	c.Filter(t, 2, tracePortDropped, netlab.Drop)
	c.Filter(t, 2, tracePortRejected, netlab.Reject)
	p := startUnprivileged(t, c.Client)
	probe := netprobev1.NewProbeServiceClient(dialIn(t, c.Client, p.Addr))

	type family = chainFamily
	v4, v6 := chainFamilies(c)

	// trace runs a Connect to port with trace options, and checks the
	// probe's error reason (0 for none) and the path, but for its times.
	trace := func(t *testing.T, f family, port uint32, timeout time.Duration, opts *netprobev1.TraceOptions, wantReason netprobev1.Reason, want *netprobev1.Path) *netprobev1.Path {
		t.Helper()
		resp, err := probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
			Target:  &netprobev1.Target{Host: f.target.String(), Port: port},
			Timeout: durationpb.New(timeout),
			Trace:   opts,
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetError().GetReason(); got != wantReason {
			t.Errorf("probe error %v, want reason %v", resp.GetError(), wantReason)
		}
		path := checkPath(t, f, port, want, resp.GetPath())
		return path
	}
	// The hops before the target, hop n answered by router n.
	timeExceeded := func(f family, routers int) []*netprobev1.Hop {
		var hops []*netprobev1.Hop
		for i, r := range f.routers[:routers] {
			hops = append(hops, &netprobev1.Hop{
				Ttl: uint32(i + 1), Address: r.String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED,
				IcmpType: f.timeExceeded, Sent: 1, Answered: 1,
			})
		}
		return hops
	}
	always := &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS}

	t.Run("faults", func(t *testing.T) {
		for _, f := range []family{v4, v6} {
			t.Run(f.name, func(t *testing.T) {
				t.Parallel()
				t.Run("complete", func(t *testing.T) {
					trace(t, f, tracePortOpen, 5*time.Second, always, 0, &netprobev1.Path{
						Hops: append(timeExceeded(f, 3), &netprobev1.Hop{
							Ttl: 4, Address: f.target.String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_SYN_ACK, Sent: 1, Answered: 1,
						}),
						Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
					})
				})
				t.Run("closed port", func(t *testing.T) {
					trace(t, f, tracePortClosed, 5*time.Second, &netprobev1.TraceOptions{}, netprobev1.Reason_REASON_REFUSED, &netprobev1.Path{
						Hops: append(timeExceeded(f, 3), &netprobev1.Hop{
							Ttl: 4, Address: f.target.String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_RST,
							Reason: netprobev1.Reason_REASON_REFUSED, Errno: "ECONNREFUSED", Sent: 1, Answered: 1,
						}),
						Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
					})
				})
				t.Run("several probes a hop", func(t *testing.T) {
					path := trace(t, f, tracePortFlow, 5*time.Second, &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS, ProbesPerHop: 3}, 0, &netprobev1.Path{
						Hops: []*netprobev1.Hop{
							{Ttl: 1, Address: f.routers[0].String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED, IcmpType: f.timeExceeded, Sent: 3, Answered: 3},
							{Ttl: 2, Address: f.routers[1].String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED, IcmpType: f.timeExceeded, Sent: 3, Answered: 3},
							{Ttl: 3, Address: f.routers[2].String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED, IcmpType: f.timeExceeded, Sent: 3, Answered: 3},
							{Ttl: 4, Address: f.target.String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_SYN_ACK, Sent: 3, Answered: 3},
						},
						Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
					})
					for _, h := range path.GetHops() {
						if len(h.Rtts) != 3 {
							t.Errorf("hop %d has %d rtts, want 3", h.Ttl, len(h.Rtts))
						}
					}
					// Paris traceroute, as the target saw it: the probe's own
					// connection, then the trace's three that reached it, all
					// from the one port the path names.
					source, _ := netip.ParseAddrPort(path.Source)
					fromSource := 0
					for range 4 {
						select {
						case from := <-flows[f.target]:
							if from == source {
								fromSource++
							}
						case <-probetest.Context(t).Done():
							t.Fatal("the target did not see the 4 connections")
						}
					}
					if fromSource != 3 {
						t.Errorf("%d of the trace's connections came from its port %d, want 3", fromSource, source.Port())
					}
				})
				t.Run("dropped at r2", func(t *testing.T) {
					// r1 answers, then nothing does: five silent TTLs end it,
					// well within the default budget of 10s.
					hops := timeExceeded(f, 1)
					for ttl := uint32(2); ttl <= 6; ttl++ {
						hops = append(hops, &netprobev1.Hop{Ttl: ttl, Answer: netprobev1.HopAnswer_HOP_ANSWER_NONE, Sent: 1})
					}
					trace(t, f, tracePortDropped, time.Second, &netprobev1.TraceOptions{}, netprobev1.Reason_REASON_TIMEOUT, &netprobev1.Path{
						Hops: hops, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_SILENCE,
					})
				})
				t.Run("rejected at r2", func(t *testing.T) {
					// The probe's own connect learns of the reject from the SYN
					// it sends again a second later, when the first's answer
					// came while connect(2) held the socket: it has 3s.
					trace(t, f, tracePortRejected, 3*time.Second, &netprobev1.TraceOptions{}, f.prohibitedReason, &netprobev1.Path{
						Hops: append(timeExceeded(f, 1), &netprobev1.Hop{
							Ttl: 2, Address: f.routers[1].String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_UNREACHABLE,
							IcmpType: f.unreachable, IcmpCode: f.prohibited,
							Reason: f.prohibitedReason, Errno: f.prohibitedErrno, Sent: 1, Answered: 1,
						}),
						FlowHeld: true, End: netprobev1.PathEnd_PATH_END_UNREACHABLE,
					})
				})
				t.Run("budget", func(t *testing.T) {
					// The drop again, on a budget shorter than the silence.
					resp, err := probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
						Target:  &netprobev1.Target{Host: f.target.String(), Port: tracePortDropped},
						Timeout: durationpb.New(500 * time.Millisecond),
						Trace:   &netprobev1.TraceOptions{Timeout: durationpb.New(2500 * time.Millisecond)},
					})
					if err != nil {
						t.Fatal(err)
					}
					path := resp.GetPath()
					// A generous bound on the budget's end: it is measured a
					// moment after.
					if d := path.GetDuration().AsDuration(); path.GetEnd() != netprobev1.PathEnd_PATH_END_TIMEOUT || d > 2750*time.Millisecond {
						t.Errorf("path ended %v after %v, want PATH_END_TIMEOUT within its 2.5s", path.GetEnd(), d)
					}
				})
			})
		}
	})
	// Last, as it breaks the chain for every port.
	t.Run("no route at r1", func(t *testing.T) {
		c.NoRoute(t, 1)
		for _, f := range []family{v4, v6} {
			t.Run(f.name, func(t *testing.T) {
				trace(t, f, tracePortOpen, 3*time.Second, &netprobev1.TraceOptions{}, netprobev1.Reason_REASON_NETWORK_UNREACHABLE, &netprobev1.Path{
					Hops: []*netprobev1.Hop{{
						Ttl: 1, Address: f.routers[0].String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_UNREACHABLE,
						IcmpType: f.unreachable, IcmpCode: f.noRoute,
						Reason: netprobev1.Reason_REASON_NETWORK_UNREACHABLE, Errno: "ENETUNREACH", Sent: 1, Answered: 1,
					}},
					FlowHeld: true, End: netprobev1.PathEnd_PATH_END_UNREACHABLE,
				})
			})
		}
	})
}

// startUnprivileged runs probed in host's namespace as uid and gid 65532,
// with no capability: started from a thread inside the namespace, which
// the child inherits, so that no root helper (ip netns exec) stands
// between. The binary is copied where that user can run it.
func startUnprivileged(t *testing.T, host *netlab.Host, args ...string) *probetest.Probed {
	t.Helper()
	bin := probetest.SharedExecutable(t, probedBin)
	cmd := exec.Command(bin, append([]string{"--listen=127.0.0.1:0"}, args...)...)
	cmd.Dir = filepath.Dir(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: unprivileged, Gid: unprivileged, Groups: []uint32{}},
	}
	var p *probetest.Probed
	if err := host.Do(func() (err error) {
		p, err = probetest.Launch(cmd)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		f := strings.Fields(line)
		switch {
		case len(f) < 2:
		case f[0] == "Uid:" && f[1] != fmt.Sprint(unprivileged):
			t.Fatalf("probed runs as %s", strings.TrimSpace(line))
		case (f[0] == "CapEff:" || f[0] == "CapPrm:" || f[0] == "CapAmb:") && strings.Trim(f[1], "0") != "":
			t.Fatalf("probed has capabilities: %s", strings.TrimSpace(line))
		}
	}
	return p
}
