package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// nsFleet is a fleet on a namespace LAN: host 1 is the caller's and
// serves the DNS name fleet.test, whose records are the nodes, as a
// headless Service's list its pods; host 2 is the target, port 80
// listening and port 81 a black hole (its firewall drops the SYNs); the
// nodes n1, n2, ... are the hosts after, n1 the entry the caller asks.
type nsFleet struct {
	caller, target *netlab.Host
	nodes          []*nsNode
	// entry is the caller's connection to n1.
	entry *grpc.ClientConn
	// accepted are the target's connections on port 80.
	accepted chan net.Conn
}

// nsNode is one probed of an nsFleet, on a host of its own.
type nsNode struct {
	*probetest.Probed
	host *netlab.Host
	name string
}

const (
	fleetLivePort = 80
	fleetHolePort = 81
	fleetPort     = 7070
)

// startNSFleet starts n nodes, node i (from 1) with the extra flags
// args(i), and returns once every node has heard from every node.
func startNSFleet(t *testing.T, n int, args func(i int) []string) *nsFleet {
	t.Helper()
	lan := netlab.NewLAN(t)
	f := &nsFleet{caller: lan.AddHost(t), target: lan.AddHost(t)}
	f.accepted = probetest.NewTarget(t, f.target.Listen(t, netip.AddrPortFrom(f.target.V4, fleetLivePort).String()), nil).Accepted
	f.target.NFT(t, fmt.Sprintf(`
table inet blackhole {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport %d drop
	}
}`, fleetHolePort))
	dns := dnstest.Serve(t, f.caller.ListenPacket(t, netip.AddrPortFrom(f.caller.V4, 53).String()))
	var hosts []*netlab.Host
	var addrs []netip.Addr
	for range n {
		h := lan.AddHost(t)
		hosts = append(hosts, h)
		addrs = append(addrs, h.V4)
	}
	dns.SetAddrs("fleet.test", addrs...)
	for i, h := range hosts {
		name := fmt.Sprintf("n%d", i+1)
		a := []string{"--listen=" + netip.AddrPortFrom(h.V4, fleetPort).String(), "--plaintext", "--dns-server=" + dns.Addr,
			"--node-name=" + name, fmt.Sprintf("--peers=dns:///fleet.test:%d", fleetPort)}
		f.nodes = append(f.nodes, &nsNode{Probed: probetest.StartProbed(t, h.Command(probedBin, append(a, args(i+1)...)...)), host: h, name: name})
	}
	for _, nd := range f.nodes {
		probetest.Eventually(t, func() bool { return nd.Logged("peer up") >= n }, func() string {
			return fmt.Sprintf("%s heard from %d of %d nodes", nd.name, nd.Logged("peer up"), n)
		})
	}
	f.entry = dialIn(t, f.caller, f.nodes[0].Addr)
	return f
}

// dialIn is a gRPC connection to addr made from inside host's namespace.
func dialIn(t *testing.T, host *netlab.Host, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var c net.Conn
			err := host.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// to is a target of the fleet's target host on port, probed with timeout.
func (f *nsFleet) to(port uint32, timeout time.Duration) *netprobev1.SweepTarget {
	return &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: f.target.V4.String(), Port: port}, Timeout: durationpb.New(timeout)}
}

// sweep starts a Sweep of targets from every node, through the entry.
func (f *nsFleet) sweep(ctx context.Context, t *testing.T, targets ...*netprobev1.SweepTarget) *fanStream {
	t.Helper()
	stream, err := netprobev1.NewProbeServiceClient(f.entry).Sweep(ctx, &netprobev1.SweepRequest{
		Targets: targets, Vantages: &netprobev1.VantageSelector{All: true}})
	if err != nil {
		t.Fatal(err)
	}
	return &fanStream{stream: stream, sweepOf: sweepOf{results: map[string][]*netprobev1.SweepResponse{}, errors: map[string]*netprobev1.VantageError{}}}
}

// sources are the addresses the target's port 80 was connected from:
// the first n waited for, since the kernel completes a probe's handshake
// before the target's accept loop takes the connection, then any others
// already taken.
func (f *nsFleet) sources(t *testing.T, n int) []string {
	ctx := probetest.Context(t)
	var from []string
	add := func(c net.Conn) {
		from = append(from, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().String())
	}
	for len(from) < n {
		select {
		case c := <-f.accepted:
			add(c)
		case <-ctx.Done():
			t.Errorf("the target accepted %d connections, want %d", len(from), n)
			n = 0
		}
	}
	for {
		select {
		case c := <-f.accepted:
			add(c)
		default:
			slices.Sort(from)
			return from
		}
	}
}

// addrsOf are the IPv4 addresses of nodes, in order.
func addrsOf(nodes ...*nsNode) []string {
	var out []string
	for _, nd := range nodes {
		out = append(out, nd.host.V4.String())
	}
	slices.Sort(out)
	return out
}

// fanStream is a fan-out Sweep the test reads as it goes.
type fanStream struct {
	stream grpc.ServerStreamingClient[netprobev1.SweepResponse]
	sweepOf
	ended bool
}

// until reads the stream until cond holds of what has come; the stream
// ending first fails the test.
func (s *fanStream) until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if s.ended {
			t.Fatalf("the stream ended (%v) before %s; results by node %v, errors %v", s.err, what, s.outcomes(), s.errors)
		}
		s.next(t)
	}
}

// rest reads the stream to its end.
func (s *fanStream) rest(t *testing.T) {
	t.Helper()
	for !s.ended {
		s.next(t)
	}
}

func (s *fanStream) next(t *testing.T) {
	t.Helper()
	r, err := s.stream.Recv()
	if err != nil {
		s.ended = true
		if !errors.Is(err, io.EOF) {
			s.err = err
		}
		return
	}
	s.add(t, r)
}

// outcomes are each node's results, as "INDEX OUTCOME" by index: ok,
// STAGE/REASON, and "abandoned" after either when it was.
func (s *sweepOf) outcomes() map[string][]string {
	out := map[string][]string{}
	for node, rs := range s.results {
		rs = slices.Clone(rs)
		slices.SortFunc(rs, func(a, b *netprobev1.SweepResponse) int { return int(a.GetIndex()) - int(b.GetIndex()) })
		for _, r := range rs {
			o := "ok"
			if e := r.GetConnect().GetError(); e != nil {
				o = strings.TrimPrefix(e.GetStage().String(), "STAGE_") + "/" + strings.TrimPrefix(e.GetReason().String(), "REASON_")
			}
			if r.GetAbandoned() {
				o += " abandoned"
			}
			out[node] = append(out[node], fmt.Sprintf("%d %s", r.GetIndex(), o))
		}
	}
	return out
}

// codes are each node's vantage error code.
func (s *sweepOf) codes() map[string]string {
	out := map[string]string{}
	for node, e := range s.errors {
		out[node] = e.GetCode()
	}
	return out
}

// check compares what a fan-out streamed with what it should have: each
// node's outcomes, each failed node's code, and the counts.
func (s *sweepOf) check(t *testing.T, outcomes map[string][]string, codes map[string]string, asked, answered, failed uint32) {
	t.Helper()
	if got := s.outcomes(); fmt.Sprint(got) != fmt.Sprint(outcomes) {
		t.Errorf("results by node %v, want %v", got, outcomes)
	}
	if got := s.codes(); fmt.Sprint(got) != fmt.Sprint(codes) {
		t.Errorf("node errors %v, want codes %v", s.errors, codes)
	}
	if f := s.fanout; f.GetAsked() != asked || f.GetAnswered() != answered || f.GetFailed() != failed {
		t.Errorf("fanout %v, want %d asked, %d answered, %d failed", f, asked, answered, failed)
	}
}

// TestFleetNS runs fleets of three probed, each in a network namespace of
// its own on one LAN, found through a DNS server on the LAN, and fans a
// Sweep out from the first to all three while the network or the nodes
// fail: a node's firewall, a node killed, a node partitioned from the
// entry, the entry drained. Each node's results say what its own network
// did; a node that fails as a whole is one vantage error, the others'
// results all arrive, and the call ends OK with the counts.
func TestFleetNS(t *testing.T) {
	t.Parallel()
	none := func(int) []string { return nil }

	t.Run("every node reaches the target", func(t *testing.T) {
		t.Parallel()
		f := startNSFleet(t, 3, none)
		s := f.sweep(probetest.Context(t), t, f.to(fleetLivePort, time.Second))
		s.rest(t)
		if s.err != nil {
			t.Fatalf("the call ended %v", s.err)
		}
		s.check(t, map[string][]string{"n1": {"0 ok"}, "n2": {"0 ok"}, "n3": {"0 ok"}}, map[string]string{}, 3, 3, 0)
		// Each probe left from its own node's address.
		if from, want := f.sources(t, 3), addrsOf(f.nodes...); !slices.Equal(from, want) {
			t.Errorf("the target was connected from %v, want %v", from, want)
		}
		for _, rs := range s.results {
			v := rs[0].GetVantage()
			if want := map[string]string{"n1": "", "n2": f.nodes[1].Addr, "n3": f.nodes[2].Addr}[v.GetNode()]; v.GetAddress() != want {
				t.Errorf("%s's vantage address %q, want %q", v.GetNode(), v.GetAddress(), want)
			}
		}
	})

	t.Run("one node's firewall drops the target", func(t *testing.T) {
		t.Parallel()
		f := startNSFleet(t, 3, none)
		f.nodes[1].host.NFT(t, fmt.Sprintf(`
table inet egress {
	chain output {
		type filter hook output priority 0; policy accept;
		ip daddr %s tcp dport %d drop
	}
}`, f.target.V4, fleetLivePort))
		s := f.sweep(probetest.Context(t), t, f.to(fleetLivePort, time.Second))
		s.rest(t)
		if s.err != nil {
			t.Fatalf("the call ended %v", s.err)
		}
		// The fault matrix: the probe server's own firewall dropping the
		// SYN is a TIMEOUT. n2 answered: its failure is its result's.
		s.check(t, map[string][]string{"n1": {"0 ok"}, "n2": {"0 CONNECT/TIMEOUT"}, "n3": {"0 ok"}}, map[string]string{}, 3, 3, 0)
		if from, want := f.sources(t, 2), addrsOf(f.nodes[0], f.nodes[2]); !slices.Equal(from, want) {
			t.Errorf("the target was connected from %v, want %v", from, want)
		}
	})

	t.Run("a node killed mid-call", func(t *testing.T) {
		t.Parallel()
		f := startNSFleet(t, 3, none)
		s := f.sweep(probetest.Context(t), t, f.to(fleetLivePort, time.Second), f.to(fleetHolePort, 3*time.Second))
		// Every node has its probe of the black hole running.
		s.until(t, "every node's first result", func() bool { return len(s.results) == 3 })
		f.nodes[2].Stop()
		s.rest(t)
		if s.err != nil {
			t.Fatalf("the call ended %v", s.err)
		}
		s.check(t, map[string][]string{
			"n1": {"0 ok", "1 CONNECT/TIMEOUT"},
			"n2": {"0 ok", "1 CONNECT/TIMEOUT"},
			"n3": {"0 ok"},
		}, map[string]string{"n3": "UNAVAILABLE"}, 3, 2, 1)
	})

	t.Run("a node partitioned from the entry", func(t *testing.T) {
		t.Parallel()
		f := startNSFleet(t, 3, none)
		const callTimeout = 6 * time.Second
		ctx, cancel := context.WithTimeout(probetest.Context(t), callTimeout)
		defer cancel()
		start := time.Now()
		deadline, _ := ctx.Deadline()
		s := f.sweep(ctx, t, f.to(fleetLivePort, time.Second), f.to(fleetHolePort, time.Second))
		s.until(t, "n3's first result", func() bool { return len(s.results["n3"]) == 1 })
		// From now on nothing passes between the entry and n3, either
		// way: n3's second result never arrives, nor does its end.
		f.nodes[0].host.NFT(t, fmt.Sprintf(`
table inet partition {
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr %[1]s drop
	}
	chain output {
		type filter hook output priority 0; policy accept;
		ip daddr %[1]s drop
	}
}`, f.nodes[2].host.V4))
		s.rest(t)
		ended := time.Now()
		if s.err != nil {
			t.Fatalf("the call ended %v", s.err)
		}
		s.check(t, map[string][]string{
			"n1": {"0 ok", "1 CONNECT/TIMEOUT"},
			"n2": {"0 ok", "1 CONNECT/TIMEOUT"},
			"n3": {"0 ok"},
		}, map[string]string{"n3": "DEADLINE_EXCEEDED"}, 3, 2, 1)
		// n3 was waited for until its deadline, the call's less a margin
		// of at most a quarter, and the call still ended before its own.
		if !ended.Before(deadline) || ended.Sub(start) < callTimeout*3/4 {
			t.Errorf("the call ended %v after it started, its deadline %v after", ended.Sub(start), deadline.Sub(start))
		}
	})

	t.Run("the entry drained", func(t *testing.T) {
		t.Parallel()
		f := startNSFleet(t, 3, func(i int) []string {
			if i == 1 {
				return []string{"--shutdown-grace=4s"}
			}
			return nil
		})
		// Per node: a result at once, one a second into the drain, and
		// one that would take longer than the drain's grace.
		s := f.sweep(probetest.Context(t), t, f.to(fleetLivePort, time.Second), f.to(fleetHolePort, time.Second), f.to(fleetHolePort, 30*time.Second))
		s.until(t, "every node's first result", func() bool { return len(s.results) == 3 })
		entry := f.nodes[0]
		if err := entry.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		s.rest(t)
		if s.err != nil {
			t.Fatalf("the call ended %v; results by node %v, errors %v", s.err, s.outcomes(), s.errors)
		}
		// What every node sent during the grace reached the caller; a
		// quarter before it ends, the entry's own probe is cut, as a
		// drain cuts a Sweep, and the nodes still running with it, each
		// one UNAVAILABLE after its results so far. (A Sweep marks a
		// probe that fails while its server drains as abandoned: the
		// entry's own timeout is.)
		s.check(t, map[string][]string{
			"n1": {"0 ok", "1 CONNECT/TIMEOUT abandoned", "2 CONNECT/SERVER_SHUTDOWN abandoned"},
			"n2": {"0 ok", "1 CONNECT/TIMEOUT"},
			"n3": {"0 ok", "1 CONNECT/TIMEOUT"},
		}, map[string]string{"n2": "UNAVAILABLE", "n3": "UNAVAILABLE"}, 3, 1, 2)
		select {
		case err := <-entry.Exited:
			if err != nil {
				t.Errorf("the entry exited with %v, want 0", err)
			}
		case <-time.After(probetest.Timeout):
			t.Error("the entry did not exit after its drain")
		}
	})
}
