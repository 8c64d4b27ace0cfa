package probecli

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestSweepFromFleet runs probe sweep --from against an entry that streams
// what a fleet could send, misconfigured or hostile (probetest.Sweeper, a
// ProbeService on loopback): three nodes that kept one name, "vm"; one of
// them frozen and cut, or failing after all its results; a node sending a
// result for entry 4,000,000,000 of a sweep of 2, which made the CLI
// panic; a node naming itself with escape codes; more nodes matched than
// the limit asked; a result that names no node. Each prints the whole
// matrix and summary it should, and exits as docs/cli.md says: without
// --quorum, 0 only when every node asked answered and reached every
// target; with it, when every target is reached from that many nodes; a
// node that broke the API is 10 either way.
func TestSweepFromFleet(t *testing.T) {
	t.Parallel()
	const (
		a = "127.0.0.1:80"
		b = "127.0.0.1:81"
	)
	result := func(node, addr string, index uint32, ok bool) *netprobev1.SweepResponse {
		port := uint32(80 + index)
		if index > 1 {
			port = 99
		}
		c := &netprobev1.ConnectResponse{ConnectDuration: durationpb.New(time.Millisecond)}
		if !ok {
			c.Error = &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT, Reason: netprobev1.Reason_REASON_REFUSED}
		}
		return &netprobev1.SweepResponse{Index: index, Target: &netprobev1.Target{Host: "127.0.0.1", Port: port}, Connect: c,
			Vantage: &netprobev1.Vantage{Node: node, Address: addr}}
	}
	both := func(node, addr string) []*netprobev1.SweepResponse {
		return []*netprobev1.SweepResponse{result(node, addr, 0, true), result(node, addr, 1, true)}
	}
	failed := func(node, addr, code string) *netprobev1.SweepResponse {
		return &netprobev1.SweepResponse{Vantage: &netprobev1.Vantage{Node: node, Address: addr},
			VantageError: &netprobev1.VantageError{Code: code, Message: "the node had not finished by the call's deadline"}}
	}
	summary := func(asked, failed, skipped uint32) *netprobev1.SweepResponse {
		return &netprobev1.SweepResponse{Fanout: &netprobev1.FanoutSummary{Asked: asked, Answered: asked - failed, Failed: failed, Skipped: skipped}}
	}
	concat := func(parts ...[]*netprobev1.SweepResponse) []*netprobev1.SweepResponse {
		var out []*netprobev1.SweepResponse
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	const (
		n2 = "10.0.0.2:7070"
		n3 = "10.0.0.3:7070"
	)
	threeVMs := concat(both("vm", ""), both("vm", n2), both("vm", n3), []*netprobev1.SweepResponse{summary(3, 0, 0)})
	frozen := concat(both("vm", ""), both("vm", n2), []*netprobev1.SweepResponse{failed("vm", n3, "DEADLINE_EXCEEDED"), summary(3, 1, 0)})
	threeVMsMatrix := `target        vm      vm@10.0.0.2:7070  vm@10.0.0.3:7070
127.0.0.1:80  ok 1ms  ok 1ms            ok 1ms
127.0.0.1:81  ok 1ms  ok 1ms            ok 1ms
`
	frozenMatrix := `target        vm      vm@10.0.0.2:7070  vm@10.0.0.3:7070
127.0.0.1:80  ok 1ms  ok 1ms            DEADLINE_EXCEEDED
127.0.0.1:81  ok 1ms  ok 1ms            DEADLINE_EXCEEDED
`
	frozenLines := `probe: node vm@10.0.0.3:7070: DEADLINE_EXCEEDED: the node had not finished by the call's deadline
probe: 127.0.0.1:80 reachable from 2 of 3 nodes
probe: 127.0.0.1:81 reachable from 2 of 3 nodes
probe: 1 of 3 nodes failed as a whole
`
	for _, tc := range []struct {
		name   string
		sent   []*netprobev1.SweepResponse
		flags  []string
		code   int
		stdout string
		stderr string
	}{
		{"three nodes named vm", threeVMs, nil, 0, threeVMsMatrix, `probe: 127.0.0.1:80 reachable from 3 of 3 nodes
probe: 127.0.0.1:81 reachable from 3 of 3 nodes
`},
		{"three named vm, one frozen", frozen, nil, exitSweepFailed, frozenMatrix, frozenLines +
			"probe: sweep: 127.0.0.1:80, 127.0.0.1:81 not reached from every node\n"},
		{"three named vm, one frozen, --quorum 2", frozen, []string{"--quorum", "2"}, 0, frozenMatrix, frozenLines},
		{"three named vm, one frozen, --quorum 3", frozen, []string{"--quorum", "3"}, exitSweepFailed, frozenMatrix, frozenLines +
			"probe: sweep: 127.0.0.1:80, 127.0.0.1:81 reached from fewer than 3 nodes (--quorum)\n"},
		{"a node that fails after all its results", concat(threeVMs[:6], []*netprobev1.SweepResponse{failed("vm", n3, "UNAVAILABLE"), summary(3, 1, 0)}),
			nil, exitSweepFailed, threeVMsMatrix, `probe: node vm@10.0.0.3:7070: UNAVAILABLE: the node had not finished by the call's deadline
probe: 127.0.0.1:80 reachable from 3 of 3 nodes
probe: 127.0.0.1:81 reachable from 3 of 3 nodes
probe: 1 of 3 nodes failed as a whole
probe: sweep: 1 of 3 nodes failed as a whole: without --quorum, every node asked must answer
`},
		{"--quorum over the nodes asked", threeVMs, []string{"--quorum", "5"}, exitSweepFailed, threeVMsMatrix, `probe: 127.0.0.1:80 reachable from 3 of 3 nodes
probe: 127.0.0.1:81 reachable from 3 of 3 nodes
probe: sweep: quorum 5 not met: no target can be reached from more than the 3 nodes asked (--quorum)
`},
		{"--quorum 1, one target refused", concat(both("n1", ""), []*netprobev1.SweepResponse{result("n2", n2, 0, true), result("n2", n2, 1, false), summary(2, 0, 0)}),
			[]string{"--quorum", "1"}, 0, `target        n1      n2
127.0.0.1:80  ok 1ms  ok 1ms
127.0.0.1:81  ok 1ms  REFUSED
`, `probe: 127.0.0.1:80 reachable from 2 of 2 nodes
probe: 127.0.0.1:81 reachable from 1 of 2 nodes
`},
		{"--quorum 1, a target no node reached", []*netprobev1.SweepResponse{result("n1", "", 0, true), result("n1", "", 1, false), summary(1, 0, 0)},
			[]string{"--quorum", "1"}, exitSweepFailed, `target        n1
127.0.0.1:80  ok 1ms
127.0.0.1:81  REFUSED
`, `probe: 127.0.0.1:80 reachable from 1 of 1 node
probe: 127.0.0.1:81 reachable from 0 of 1 node
probe: sweep: 127.0.0.1:81 reached from fewer than 1 node (--quorum)
`},
		{"a node's index past the targets", concat(both("vm", ""), []*netprobev1.SweepResponse{result("vm", n2, 0, true), result("vm", n2, 4_000_000_000, true), result("vm", n2, 1, true)},
			both("vm", n3), []*netprobev1.SweepResponse{summary(3, 0, 0)}),
			nil, exitSweepFailed, `target        vm      vm@10.0.0.2:7070  vm@10.0.0.3:7070
127.0.0.1:80  ok 1ms  ok 1ms            ok 1ms
127.0.0.1:81  ok 1ms  INTERNAL          ok 1ms
`, `probe: node vm@10.0.0.2:7070: INTERNAL: sweep: protocol error: a result for entry 4000000000, of a sweep of 2; what else the node sends is dropped
probe: 127.0.0.1:80 reachable from 3 of 3 nodes
probe: 127.0.0.1:81 reachable from 2 of 3 nodes
probe: 1 of 3 nodes failed as a whole
probe: sweep: vm@10.0.0.2:7070 sent results that break the API (protocol error), whatever --quorum
`},
		{"a node's index past the targets, --quorum 1", []*netprobev1.SweepResponse{result("n1", "", 0, true), result("n1", "", 1, true), result("n2", n2, 2, true), summary(2, 0, 0)},
			[]string{"--quorum", "1"}, exitSweepFailed, `target        n1      n2
127.0.0.1:80  ok 1ms  INTERNAL
127.0.0.1:81  ok 1ms  INTERNAL
`, `probe: node n2: INTERNAL: sweep: protocol error: a result for entry 2, of a sweep of 2; what else the node sends is dropped
probe: 127.0.0.1:80 reachable from 1 of 2 nodes
probe: 127.0.0.1:81 reachable from 1 of 2 nodes
probe: 1 of 2 nodes failed as a whole
probe: sweep: n2 sent results that break the API (protocol error), whatever --quorum
`},
		{"a node that names itself with escape codes", concat(both("\x1b]0;owned\x07\x1b[2J", n2), []*netprobev1.SweepResponse{
			failed("n3\u202e", n3, "UNAVAILABLE\x1b[31m"), summary(2, 1, 0)}),
			[]string{"--quorum", "1"}, 0, "target        n3\uFFFD               \uFFFD]0;owned\uFFFD\uFFFD[2J\n" +
				"127.0.0.1:80  UNAVAILABLE\uFFFD[31m  ok 1ms\n" +
				"127.0.0.1:81  UNAVAILABLE\uFFFD[31m  ok 1ms\n",
			"probe: node n3\uFFFD: UNAVAILABLE\uFFFD[31m: the node had not finished by the call's deadline\n" + `probe: 127.0.0.1:80 reachable from 1 of 2 nodes
probe: 127.0.0.1:81 reachable from 1 of 2 nodes
probe: 1 of 2 nodes failed as a whole
`},
		{"more nodes matched than asked", concat(both("n1", ""), both("n2", n2), []*netprobev1.SweepResponse{summary(2, 0, 11)}),
			nil, 0, `target        n1      n2
127.0.0.1:80  ok 1ms  ok 1ms
127.0.0.1:81  ok 1ms  ok 1ms
`, `probe: asked the first 2 of the 13 nodes that matched (--limit)
probe: 127.0.0.1:80 reachable from 2 of 2 nodes
probe: 127.0.0.1:81 reachable from 2 of 2 nodes
`},
		{"no node at all", []*netprobev1.SweepResponse{summary(0, 0, 0)}, nil, exitSweepFailed, "target\n127.0.0.1:80\n127.0.0.1:81\n",
			"probe: 127.0.0.1:80 reachable from 0 of 0 nodes\nprobe: 127.0.0.1:81 reachable from 0 of 0 nodes\nprobe: sweep: the server sent no node's results\n"},
		{"a result that names no node", []*netprobev1.SweepResponse{result("n1", "", 0, true), {Index: 1, Connect: &netprobev1.ConnectResponse{}}},
			nil, exitOther, "", "probe: sweep: protocol error: a result from a fleet that names no node\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := probetest.ServeSweeps(t, tc.sent...)
			r := probe(probetest.Context(t), nil, append([]string{"sweep", "-s", srv.Addr, "--from", "all", a, b}, tc.flags...)...)
			if r.code != tc.code || r.stdout != tc.stdout || r.stderr != tc.stderr {
				t.Errorf("exit %d, want %d\nstdout\n%s\nwant\n%s\nstderr\n%s\nwant\n%s", r.code, tc.code, r.stdout, tc.stdout, r.stderr, tc.stderr)
			}
		})
	}
}

// TestSweepFromFlags checks --quorum and --limit: each counts nodes, 1 or
// more (--quorum 0 used to mean every node, silently), only with --from;
// --limit reaches the server as the selector's limit.
func TestSweepFromFlags(t *testing.T) {
	t.Parallel()
	srv := probetest.ServeSweeps(t,
		&netprobev1.SweepResponse{Connect: &netprobev1.ConnectResponse{}, Vantage: &netprobev1.Vantage{Node: "n1"}},
		&netprobev1.SweepResponse{Fanout: &netprobev1.FanoutSummary{Asked: 1, Answered: 1}})
	for _, tc := range []struct {
		name   string
		flags  []string
		stderr string
	}{
		{"--quorum 0", []string{"--from", "all", "--quorum", "0"}, "probe: --quorum 0: want 1 or more nodes (without --quorum, every node asked must reach every target)\n"},
		{"--quorum -1", []string{"--from", "all", "--quorum", "-1"}, "probe: --quorum -1: want 1 or more nodes (without --quorum, every node asked must reach every target)\n"},
		{"--quorum without --from", []string{"--quorum", "2"}, "probe: --quorum counts the nodes of --from: give --from\n"},
		{"--limit 0", []string{"--from", "all", "--limit", "0"}, "probe: --limit 0: want 1 or more nodes (without --limit, the server's default: 50)\n"},
		{"--limit past a uint32", []string{"--from", "all", "--limit", "4294967297"}, "probe: --limit 4294967297: want 1 or more nodes (without --limit, the server's default: 50)\n"},
		{"--limit without --from", []string{"--limit", "5"}, "probe: --limit counts the nodes of --from: give --from\n"},
	} {
		r := probe(probetest.Context(t), nil, append([]string{"sweep", "-s", srv.Addr, "127.0.0.1:80"}, tc.flags...)...)
		if want := tc.stderr + "Run \"probe sweep --help\" for usage.\n"; r.code != exitUsage || r.stderr != want {
			t.Errorf("%s: exit %d, stderr %q; want %d, %q", tc.name, r.code, r.stderr, exitUsage, want)
		}
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("%d sweeps sent by command lines refused", n)
	}
	for _, tc := range []struct {
		flags []string
		limit uint32
	}{
		{nil, 0},
		{[]string{"--limit", "7"}, 7},
	} {
		r := probe(probetest.Context(t), nil, append([]string{"sweep", "-s", srv.Addr, "--from", "zone=z1", "127.0.0.1:80"}, tc.flags...)...)
		reqs := srv.Requests()
		if r.code != 0 || len(reqs) == 0 || reqs[len(reqs)-1].GetVantages().GetLimit() != tc.limit || reqs[len(reqs)-1].GetVantages().GetLabels()["zone"] != "z1" {
			t.Errorf("%s: exit %d, %s; selector %v, want limit %d", strings.Join(tc.flags, " "), r.code, r.stderr, reqs, tc.limit)
		}
	}
}

// TestHostileServerText has a probe server answer with terminal escape
// codes, in a status message and in a ProbeError's message (ping prints
// a denied socket's whole message): the CLI prints neither raw.
func TestHostileServerText(t *testing.T) {
	t.Parallel()
	const evil = "boom \x1b]0;owned\x07\x1b[2J\x1b[31mred"
	for _, tc := range []struct {
		name      string
		connected func() (*netprobev1.ConnectResponse, error)
		args      []string
		code      int
	}{
		{"a status message, connect", func() (*netprobev1.ConnectResponse, error) { return nil, status.Error(codes.Internal, evil) },
			[]string{"connect", "127.0.0.1:80"}, exitRejected},
		{"a status message, ping", func() (*netprobev1.ConnectResponse, error) { return nil, status.Error(codes.Internal, evil) },
			[]string{"ping", "-c", "1", "127.0.0.1"}, exitRejected},
		{"an invalid request, connect", func() (*netprobev1.ConnectResponse, error) { return nil, status.Error(codes.InvalidArgument, evil) },
			[]string{"connect", "127.0.0.1:80"}, exitUsage},
		{"a denied socket's message, ping", func() (*netprobev1.ConnectResponse, error) {
			return &netprobev1.ConnectResponse{Error: &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_SOCKET, Reason: netprobev1.Reason_REASON_PROHIBITED, Errno: "EACCES", Message: evil}}, nil
		}, []string{"ping", "-c", "1", "127.0.0.1"}, exitConnect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := probetest.ServeSweeps(t)
			srv.AnswerConnects(tc.connected)
			r := probe(probetest.Context(t), nil, append([]string{"-s", srv.Addr}, tc.args...)...)
			if out := r.stdout + r.stderr; r.code != tc.code || strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, "boom \ufffd") {
				t.Errorf("exit %d (want %d), printed %q: want the message, its escapes made printable", r.code, tc.code, out)
			}
		})
	}
}
