package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/fleet"
	"github.com/netprobe/netprobe/internal/probetest"
)

// node is one probed of a test's fleet.
type node struct {
	*probetest.Probed
	name string
	addr netip.Addr
}

// startFleet starts n probed, node i (from 1) named ni on 127.0.0.(base+i),
// all on one port, finding each other through the name fleet.test of a
// DNS server on loopback, as a headless Service's records list its pods;
// args gives each node's extra flags. It returns once every node has
// heard from every node.
func startFleet(t *testing.T, n, base int, args func(i int) []string) []*node {
	t.Helper()
	return startFleetOn(t, dnstest.Start(t), n, base, args)
}

// startFleetOn is startFleet with the nodes' DNS server dns, which may
// serve the names of their targets too.
func startFleetOn(t *testing.T, dns *dnstest.Server, n, base int, args func(i int) []string) []*node {
	t.Helper()
	var nodes []*node
	for _, nd := range probetest.StartFleet(t, probedBin, dns, n, base, args) {
		nodes = append(nodes, &node{Probed: nd.Probed, name: nd.Name, addr: nd.Addr})
	}
	return nodes
}

// sweepOf is what a Sweep streamed, by node: each node's results (or its
// vantage error), and the fanout counts; err is how the call ended.
type sweepOf struct {
	results map[string][]*netprobev1.SweepResponse
	errors  map[string]*netprobev1.VantageError
	fanout  *netprobev1.FanoutSummary
	err     error
}

func sweepAll(ctx context.Context, t *testing.T, conn *grpc.ClientConn, req *netprobev1.SweepRequest) sweepOf {
	t.Helper()
	out := sweepOf{results: map[string][]*netprobev1.SweepResponse{}, errors: map[string]*netprobev1.VantageError{}}
	stream, err := netprobev1.NewProbeServiceClient(conn).Sweep(ctx, req)
	if err != nil {
		out.err = err
		return out
	}
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			out.err = err
			return out
		}
		out.add(t, r)
	}
}

// add files r under its node, or as the counts.
func (s *sweepOf) add(t *testing.T, r *netprobev1.SweepResponse) {
	t.Helper()
	switch {
	case r.GetFanout() != nil:
		if s.fanout != nil {
			t.Errorf("a second fanout summary: %v", r)
		}
		s.fanout = r.GetFanout()
	case s.fanout != nil:
		t.Errorf("a response after the fanout summary: %v", r)
	case r.GetVantageError() != nil:
		if e := s.errors[r.GetVantage().GetNode()]; e != nil {
			t.Errorf("a second vantage error of %s: %v, after %v", r.GetVantage().GetNode(), r, e)
		}
		s.errors[r.GetVantage().GetNode()] = r.GetVantageError()
	default:
		s.results[r.GetVantage().GetNode()] = append(s.results[r.GetVantage().GetNode()], r)
	}
}

func nodesOf[V any](m map[string]V) []string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// TestFanout asks one node of a fleet of three, found through DNS, to
// sweep from all of them, from some by label or name, and with selectors
// that cannot be: each node's results come back marked with it, then the
// counts; a node that is down is one UNAVAILABLE; a bad selector fails
// the call before any node is asked.
func TestFanout(t *testing.T) {
	t.Parallel()
	nodes := startFleet(t, 3, 10, func(i int) []string {
		return []string{fmt.Sprintf("--label=zone=z%d", i%2), "--max-fanout=10", "--max-fanout-probes=9"}
	})
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	closed := probetest.ClosedPort(t, "tcp", "127.0.0.1:0")
	targets := []*netprobev1.SweepTarget{
		{Target: &netprobev1.Target{Host: "127.0.0.1", Port: live.Port()}},
		{Target: &netprobev1.Target{Host: "127.0.0.1", Port: closed}},
	}
	conn := dial(t, nodes[0].Addr)
	ctx := probetest.Context(t)

	t.Run("all", func(t *testing.T) {
		got := sweepAll(ctx, t, conn, &netprobev1.SweepRequest{Targets: targets, Vantages: &netprobev1.VantageSelector{All: true}})
		if got.err != nil || len(got.errors) != 0 {
			t.Fatalf("ended %v, node errors %v", got.err, got.errors)
		}
		if names := nodesOf(got.results); !slices.Equal(names, []string{"n1", "n2", "n3"}) {
			t.Errorf("results from %v, want n1 n2 n3", names)
		}
		for name, rs := range got.results {
			var reasons []string
			for _, r := range rs {
				reasons = append(reasons, r.GetConnect().GetError().GetReason().String())
				if want := map[string]string{"n1": "z1", "n2": "z0", "n3": "z1"}[name]; r.GetVantage().GetLabels()["zone"] != want {
					t.Errorf("%s's result labelled %v, want zone=%s", name, r.GetVantage().GetLabels(), want)
				}
			}
			slices.Sort(reasons)
			if !slices.Equal(reasons, []string{"REASON_REFUSED", "REASON_UNSPECIFIED"}) {
				t.Errorf("%s: results %v, want one connected and one refused", name, reasons)
			}
		}
		if f := got.fanout; f.GetAsked() != 3 || f.GetAnswered() != 3 || f.GetFailed() != 0 {
			t.Errorf("fanout %v, want 3 asked, 3 answered", f)
		}
	})

	for _, tc := range []struct {
		name string
		sel  *netprobev1.VantageSelector
		want []string
	}{
		{"by label", &netprobev1.VantageSelector{Labels: map[string]string{"zone": "z1"}}, []string{"n1", "n3"}},
		{"by name", &netprobev1.VantageSelector{Nodes: []string{"n2", "n3"}}, []string{"n2", "n3"}},
		{"by name and label", &netprobev1.VantageSelector{Nodes: []string{"n2", "n3"}, Labels: map[string]string{"zone": "z1"}}, []string{"n3"}},
		{"all, the first by name", &netprobev1.VantageSelector{All: true, Limit: 2}, []string{"n1", "n2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sweepAll(ctx, t, conn, &netprobev1.SweepRequest{Targets: targets, Vantages: tc.sel})
			if names := nodesOf(got.results); got.err != nil || !slices.Equal(names, tc.want) || got.fanout.GetAsked() != uint32(len(tc.want)) {
				t.Errorf("results from %v, fanout %v, ended %v; want %v", names, got.fanout, got.err, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name string
		req  *netprobev1.SweepRequest
		code codes.Code
		msg  string
	}{
		{"an empty selector", &netprobev1.SweepRequest{Targets: targets, Vantages: &netprobev1.VantageSelector{}},
			codes.InvalidArgument, "vantages: select all, nodes or labels"},
		{"a limit over --max-fanout", &netprobev1.SweepRequest{Targets: targets, Vantages: &netprobev1.VantageSelector{All: true, Limit: 11}},
			codes.InvalidArgument, "vantages.limit: 11 is over the server's maximum of 10 (--max-fanout)"},
		{"no node matches", &netprobev1.SweepRequest{Targets: targets, Vantages: &netprobev1.VantageSelector{Labels: map[string]string{"zone": "mars"}}},
			codes.FailedPrecondition, "vantages: no node matches zone=mars; the nodes known are n1 (zone=z1), n2 (zone=z0), n3 (zone=z1)"},
		{"nodes times targets over --max-fanout-probes", &netprobev1.SweepRequest{Targets: append(slices.Clone(targets), targets...), Vantages: &netprobev1.VantageSelector{All: true}},
			codes.ResourceExhausted, "vantages: 3 nodes times 4 targets is 12 probes, over the server's maximum of 9 (--max-fanout-probes)"},
		{"a bad target", &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{{Target: &netprobev1.Target{Host: "bad host", Port: 1}}}, Vantages: &netprobev1.VantageSelector{All: true}},
			codes.InvalidArgument, "targets[0].target.host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sweepAll(ctx, t, conn, tc.req)
			if st := status.Convert(got.err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) || len(got.results) != 0 || got.fanout != nil {
				t.Errorf("%v (%d nodes' results, fanout %v); want %v %q and nothing streamed", got.err, len(got.results), got.fanout, tc.code, tc.msg)
			}
		})
	}

	t.Run("without peers", func(t *testing.T) {
		lone := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0"))
		got := sweepAll(ctx, t, dial(t, lone.Addr), &netprobev1.SweepRequest{Targets: targets, Vantages: &netprobev1.VantageSelector{All: true}})
		if st := status.Convert(got.err); st.Code() != codes.FailedPrecondition || st.Message() != "vantages: this server has no peers (probed --peers), so it cannot fan a sweep out" {
			t.Errorf("%v", got.err)
		}
	})

	t.Run("the page", func(t *testing.T) {
		_, page := httpGet(t, "http://"+nodes[0].MetricsAddr+"/")
		for _, want := range []string{
			`This node: <b>n1</b> <code>zone=z1</code>`,
			`<td data-label="node">n1 <span class="sub">(this node)</span></td>`,
			`<td data-label="node">n2</td>`, `<td data-label="address"><code>` + nodes[2].Addr + `</code></td>`,
		} {
			if !strings.Contains(page, want) {
				t.Errorf("the page lacks %s", want)
			}
		}
		if strings.Count(page, `<span class="good">up</span>`) != 3 {
			t.Errorf("the page does not show the 3 nodes up:\n%s", page)
		}
	})

	t.Run("through grpcurl", func(t *testing.T) {
		req := fmt.Sprintf(`{"targets":[{"target":{"host":"127.0.0.1","port":%d}}],"vantages":{"labels":{"zone":"z1"}}}`, live.Port())
		out, errOut, code := grpcurl(t, "-d", req, nodes[1].Addr, "netprobe.v1.ProbeService/Sweep")
		var rs []*netprobev1.SweepResponse
		decodeAll(t, out, func() proto.Message {
			rs = append(rs, &netprobev1.SweepResponse{})
			return rs[len(rs)-1]
		})
		var from []string
		for _, r := range rs[:max(len(rs)-1, 0)] {
			from = append(from, r.GetVantage().GetNode())
		}
		slices.Sort(from)
		if code != 0 || !slices.Equal(from, []string{"n1", "n3"}) || rs[len(rs)-1].GetFanout().GetAnswered() != 2 {
			t.Errorf("grpcurl: exit %d, results from %v, last %v (stderr %q)", code, from, rs[len(rs)-1], errOut)
		}
	})

	// Last: it stops a node.
	t.Run("a node down", func(t *testing.T) {
		nodes[2].Stop()
		got := sweepAll(ctx, t, conn, &netprobev1.SweepRequest{Targets: targets, Vantages: &netprobev1.VantageSelector{All: true}})
		if names := nodesOf(got.results); got.err != nil || !slices.Equal(names, []string{"n1", "n2"}) {
			t.Errorf("results from %v, ended %v; want n1 and n2", names, got.err)
		}
		if e := got.errors["n3"]; len(got.errors) != 1 || e.GetCode() != "UNAVAILABLE" {
			t.Errorf("node errors %v, want n3 UNAVAILABLE", got.errors)
		}
		if f := got.fanout; f.GetAsked() != 3 || f.GetAnswered() != 2 || f.GetFailed() != 1 {
			t.Errorf("fanout %v, want 3 asked, 2 answered, 1 failed", f)
		}
		m := scrape(t, "http://"+nodes[0].MetricsAddr+"/metrics")
		if n, _ := metricValue(m["netprobe_fanout_node_failures_total"], map[string]string{"node": "n3", "code": "UNAVAILABLE"}); n != 1 {
			t.Errorf("netprobe_fanout_node_failures_total{node=n3,code=UNAVAILABLE} = %v, want 1", n)
		}
		if n, _ := metricValue(m["netprobe_fanout_sweeps_total"], nil); n != 6 {
			t.Errorf("netprobe_fanout_sweeps_total = %v, want the 6 fan-outs this test made of n1 (refused calls are none)", n)
		}
		// Asked again at once after the failure, n3 is down.
		probetest.Eventually(t, func() bool {
			down, _ := metricValue(scrape(t, "http://"+nodes[0].MetricsAddr+"/metrics")["netprobe_fleet_peers"], map[string]string{"state": "down"})
			return down == 1
		}, func() string { return "netprobe_fleet_peers{state=down} did not come to 1" })
	})
}

// TestFanoutTrust runs a fleet whose nodes require tokens and talk to each
// other over TLS, each presenting the token of the caller "node", which
// every node lists as a peer: alice's fan-out runs on each node as alice's,
// under alice's policy there (n3 denies her the target: its results say
// so, the others' do not) and alice's limits (her burst spent on each);
// a caller that is not a peer cannot name another caller; and a sweep a
// peer forwards does not fan out again.
func TestFanoutTrust(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, dir)
	const nodeToken = "node-0123456789abcdef"
	tokens := writeFile(t, "tokens", "alice "+aliceToken+"\nbob "+bobToken+"\nnode "+nodeToken+"\n")
	peerToken := writeFile(t, "peer-token", nodeToken+"\n")
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	nodes := startFleet(t, 3, 20, func(i int) []string {
		certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), ca.Issue(t, fmt.Sprintf("n%d", i), true, func(c *x509.Certificate) {
			c.IPAddresses = append(c.IPAddresses, net.IPv4(127, 0, 0, byte(20+i)))
		}))
		rules := "caller alice allow 127.0.0.1\ncaller bob allow 127.0.0.1\n"
		if i == 3 {
			// alice's rule here does not cover the target.
			rules = "caller alice allow 127.0.0.99\ncaller bob allow 127.0.0.1\n"
		}
		return []string{"--tls-cert=" + certFile, "--tls-key=" + keyFile, "--tokens-file=" + tokens, "--peer=node",
			"--peer-token-file=" + peerToken, "--peer-ca-file=" + caFile, "--policy-file=" + writeFile(t, "policy", rules),
			"--rate=0.001", "--burst=3"}
	})
	dialTLS := func(nd *node) *grpc.ClientConn {
		conn, err := grpc.NewClient(nd.Addr, grpc.WithTransportCredentials(grpccreds.NewTLS(&tls.Config{RootCAs: ca.Pool})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	as := func(token string, kv ...string) context.Context {
		return metadata.AppendToOutgoingContext(probetest.Context(t), append([]string{"authorization", "Bearer " + token}, kv...)...)
	}
	target := &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "127.0.0.1", Port: live.Port()}}
	req := &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{target, target}, Vantages: &netprobev1.VantageSelector{All: true}}

	got := sweepAll(as(aliceToken), t, dialTLS(nodes[0]), req)
	if got.err != nil || len(got.errors) != 0 || got.fanout.GetAnswered() != 3 {
		t.Fatalf("alice's fan-out: ended %v, node errors %v, fanout %v", got.err, got.errors, got.fanout)
	}
	for name, rs := range got.results {
		for _, r := range rs {
			stage := r.GetConnect().GetError().GetStage()
			if want := map[string]netprobev1.Stage{"n1": 0, "n2": 0, "n3": netprobev1.Stage_STAGE_POLICY}[name]; stage != want || len(rs) != 2 {
				t.Errorf("%s: %d results, one at stage %v; want 2 at %v", name, len(rs), stage, want)
			}
		}
	}
	// alice's burst of 3 is spent on n2 by the two probes forwarded there
	// and this one; bob's is not.
	n2 := netprobev1.NewProbeServiceClient(dialTLS(nodes[1]))
	connect := &netprobev1.ConnectRequest{Target: target.Target}
	if _, err := n2.Connect(as(aliceToken), connect); err != nil {
		t.Errorf("alice's third probe on n2: %v", err)
	}
	if _, err := n2.Connect(as(aliceToken), connect); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("alice's fourth probe on n2: %v, want RESOURCE_EXHAUSTED: the fan-out did not charge her there", err)
	}
	if _, err := n2.Connect(as(bobToken), connect); err != nil {
		t.Errorf("bob's probe on n2: %v", err)
	}

	// bob is no peer: he cannot name alice.
	if _, err := n2.Connect(as(bobToken, fleet.CallerHeader, "alice"), connect); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "only a peer of this node (probed --peer) may name the caller it forwards a call for; caller bob is not one") {
		t.Errorf("bob naming alice: %v, want PERMISSION_DENIED", err)
	}
	// A peer's forwarded sweep, selector and all, runs on its node alone.
	fwd := sweepAll(as(nodeToken, fleet.CallerHeader, "bob"), t, dialTLS(nodes[1]), req)
	if rs := fwd.results[""]; fwd.err != nil || len(fwd.results) != 1 || len(rs) != 2 || fwd.fanout != nil {
		t.Errorf("a forwarded sweep with vantages: results by node %v, fanout %v, ended %v; want n2's 2 results alone, unmarked", nodesOf(fwd.results), fwd.fanout, fwd.err)
	}
}

// TestFanoutCLI runs probe sweep --from through the binary (probed called
// as probe) against a fleet of three: a column per node, a line per target
// saying from how many nodes it was reached, and --quorum deciding the
// exit code, a node down included.
func TestFanoutCLI(t *testing.T) {
	t.Parallel()
	nodes := startFleet(t, 3, 30, func(i int) []string { return []string{fmt.Sprintf("--label=zone=z%d", i%2)} })
	live := "127.0.0.1:" + fmt.Sprint(probetest.Listen(t, "127.0.0.1:0", nil).Port())
	run := func(args ...string) (int, string, string) { return sweepCLI(t, nodes[0].Addr, args...) }
	matrix := regexp.MustCompile(`^target +n1 +n3\n127\.0\.0\.1:\d+ +ok \S+ +ok \S+\n$`)
	if code, out, errOut := run("--from", "zone=z1", "--quorum", "2", live); code != 0 || !matrix.MatchString(out) ||
		errOut != "probe: "+live+" reachable from 2 of 2 nodes\n" {
		t.Errorf("--from zone=z1 --quorum 2: exit %d\n%s%s", code, out, errOut)
	}
	nodes[2].Stop()
	for _, tc := range []struct {
		quorum string
		code   int
		last   string
	}{
		{"2", 0, "probe: 1 of 3 nodes failed as a whole\n"},
		{"3", 10, "probe: sweep: " + live + " reached from fewer than 3 nodes (--quorum)\n"},
	} {
		code, out, errOut := run("--from", "all", "--quorum", tc.quorum, live)
		lines := strings.Split(errOut, "\n")
		if code != tc.code || !regexp.MustCompile(`\n127\.0\.0\.1:\d+ +ok \S+ +ok \S+ +UNAVAILABLE\n$`).MatchString(out) ||
			!strings.HasPrefix(errOut, "probe: node n3: UNAVAILABLE: ") || len(lines) < 3 ||
			!strings.Contains(errOut, "probe: "+live+" reachable from 2 of 3 nodes\n") || !strings.HasSuffix(errOut, tc.last) {
			t.Errorf("--from all --quorum %s, n3 down: exit %d, want %d\n%s%s", tc.quorum, code, tc.code, out, errOut)
		}
	}
	if code, _, errOut := run("--quorum", "2", live); code != 2 || !strings.HasPrefix(errOut, "probe: --quorum counts the nodes of --from: give --from\n") {
		t.Errorf("--quorum without --from: exit %d, %q", code, errOut)
	}
}

// TestFanoutMutualTLS runs a fleet that knows callers by their client
// certificates: each node presents its own, of identity "node", which
// every node lists as a peer. alice's fan-out runs on each node as
// alice's (its audit line says so); mallory's certificate names no peer,
// and she cannot name alice.
// TestFanoutMutualTLS runs a fleet whose nodes know each other by client
// certificates, and whose server certificates name the fleet, not the
// nodes' addresses (--peer-server-name, as a headless Service's name):
// a caller's fan-out runs on each node as that caller, whatever script
// its name is in; a caller that is not a peer cannot name another.
func TestFanoutMutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := probetest.NewCA(t)
	caFile := ca.WriteFile(t, dir)
	nodeCert, nodeKey := probetest.WriteFiles(t, t.TempDir(), ca.Issue(t, "node", false))
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	nodes := startFleet(t, 2, 40, func(i int) []string {
		// The fleet's name alone: not the nodes' addresses.
		certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), ca.Issue(t, "fleet.test", true, func(c *x509.Certificate) {
			c.IPAddresses, c.DNSNames = nil, []string{"fleet.test"}
		}))
		return []string{"--tls-cert=" + certFile, "--tls-key=" + keyFile, "--tls-client-ca=" + caFile, "--peer=node",
			"--peer-cert-file=" + nodeCert, "--peer-key-file=" + nodeKey, "--peer-ca-file=" + caFile, "--peer-server-name=fleet.test"}
	})
	dialAs := func(nd *node, cn string) *grpc.ClientConn {
		conn, err := grpc.NewClient(nd.Addr, grpc.WithTransportCredentials(grpccreds.NewTLS(&tls.Config{
			RootCAs: ca.Pool, ServerName: "fleet.test", Certificates: []tls.Certificate{ca.Issue(t, cn, false)}})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	target := &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: "127.0.0.1", Port: live.Port()}}
	for _, caller := range []string{"alice", "josé", "名前"} {
		before := len(nodes[1].Audit())
		got := sweepAll(probetest.Context(t), t, dialAs(nodes[0], caller), &netprobev1.SweepRequest{
			Targets: []*netprobev1.SweepTarget{target}, Vantages: &netprobev1.VantageSelector{All: true}})
		if names := nodesOf(got.results); got.err != nil || !slices.Equal(names, []string{"n1", "n2"}) || len(got.errors) != 0 {
			t.Fatalf("%s's fan-out: results from %v, node errors %v, ended %v", caller, names, got.errors, got.err)
		}
		probetest.Eventually(t, func() bool { return len(nodes[1].Audit()) > before }, func() string { return "n2 logged no probe" })
		if line := nodes[1].Audit()[len(nodes[1].Audit())-1]; line["caller"] != caller || line["forwarded_by"] != "node" {
			t.Errorf("n2's audit line names caller %v forwarded by %v, want %s by node: %v", line["caller"], line["forwarded_by"], caller, line)
		}
	}
	ctx := metadata.AppendToOutgoingContext(probetest.Context(t), fleet.CallerHeader, "alice")
	_, err := netprobev1.NewProbeServiceClient(dialAs(nodes[1], "mallory")).Connect(ctx, &netprobev1.ConnectRequest{Target: target.Target})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("mallory naming alice: %v, want PERMISSION_DENIED", err)
	}
}
