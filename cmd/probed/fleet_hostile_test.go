package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// fakePeer is a node of a fleet that says what a test makes it say: its
// Describe answer, and what its Sweep streams.
type fakePeer struct {
	netprobev1.UnimplementedProbeServiceServer
	describe *netprobev1.DescribeResponse
	// sweep streams a forwarded sweep's responses through send until it
	// fails.
	sweep func(send func(*netprobev1.SweepResponse) error)
	// cut is closed when the entry has cut the sweep.
	cut chan struct{}
}

func (f *fakePeer) Describe(context.Context, *netprobev1.DescribeRequest) (*netprobev1.DescribeResponse, error) {
	return f.describe, nil
}

func (f *fakePeer) Sweep(_ *netprobev1.SweepRequest, stream grpc.ServerStreamingServer[netprobev1.SweepResponse]) error {
	f.sweep(stream.Send)
	<-stream.Context().Done()
	close(f.cut)
	return stream.Context().Err()
}

// serveFake serves f on addr.
func serveFake(t *testing.T, addr string, f *fakePeer) {
	t.Helper()
	f.cut = make(chan struct{})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	netprobev1.RegisterProbeServiceServer(s, f)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
}

// TestFanoutHostilePeer runs an entry among peers that break the
// protocol: one sends a result for a target the sweep has not, one floods
// a target with results, one sends the counts as if it were the entry,
// one describes itself with a name no node may have. Each is cut as
// INTERNAL when it breaks it (its stream ended, its junk not passed on),
// the entry's own results and counts reach the caller, and the one that
// described itself amiss is down, its name nowhere on the page.
func TestFanoutHostilePeer(t *testing.T) {
	t.Parallel()
	port := probetest.FreePort(t)
	_, p, _ := net.SplitHostPort(port)
	at := func(i int) string { return fmt.Sprintf("127.0.0.%d:%s", 180+i, p) }
	result := func(index uint32) *netprobev1.SweepResponse {
		return &netprobev1.SweepResponse{Index: index, Target: &netprobev1.Target{Host: "127.0.0.1", Port: 1}, Connect: &netprobev1.ConnectResponse{}}
	}
	describe := func(name string) *netprobev1.DescribeResponse {
		return &netprobev1.DescribeResponse{Node: name, Instance: name}
	}
	fakes := map[string]*fakePeer{
		"out-of-range": {describe: describe("out-of-range"), sweep: func(send func(*netprobev1.SweepResponse) error) {
			send(result(0))
			send(result(4000000000))
		}},
		"flood": {describe: describe("flood"), sweep: func(send func(*netprobev1.SweepResponse) error) {
			for send(result(0)) == nil {
			}
		}},
		"counts": {describe: describe("counts"), sweep: func(send func(*netprobev1.SweepResponse) error) {
			send(&netprobev1.SweepResponse{Fanout: &netprobev1.FanoutSummary{Asked: 1000, Answered: 1000}})
		}},
	}
	long := strings.Repeat("n", 100000)
	liar := &fakePeer{describe: &netprobev1.DescribeResponse{Node: long, Instance: "liar"}, sweep: func(func(*netprobev1.SweepResponse) error) {}}
	peers := []string{"--peers=" + at(1), "--peers=" + at(5)}
	for i, name := range []string{"out-of-range", "flood", "counts"} {
		serveFake(t, at(i+2), fakes[name])
		peers = append(peers, "--peers="+at(i+2))
	}
	serveFake(t, at(5), liar)
	entry := probetest.StartProbed(t, exec.Command(probedBin, append([]string{"--listen=" + at(1), "--node-name=entry"}, peers...)...))
	probetest.Eventually(t, func() bool { return entry.Logged("peer up") >= 4 && entry.Logged("peer does not answer") >= 1 },
		func() string { return fmt.Sprintf("the entry heard from %d peers", entry.Logged("peer up")) })

	live := probetest.Listen(t, "127.0.0.1:0", nil)
	got := sweepAll(probetest.Context(t), t, dial(t, entry.Addr), &netprobev1.SweepRequest{
		Targets:  []*netprobev1.SweepTarget{{Target: &netprobev1.Target{Host: "127.0.0.1", Port: live.Port()}}},
		Vantages: &netprobev1.VantageSelector{Nodes: []string{"entry", "out-of-range", "flood", "counts"}}})
	if got.err != nil || len(got.results["entry"]) != 1 || got.results["entry"][0].GetConnect().GetError() != nil {
		t.Fatalf("ended %v, the entry's results %v", got.err, got.results["entry"])
	}
	for name, want := range map[string]string{
		"out-of-range": "the node broke the protocol: it sent a result for target 4000000000 of a sweep of 1",
		"flood":        "the node broke the protocol: it sent more than 1 result for target 0",
		"counts":       "the node broke the protocol: it sent a vantage, a vantage_error or fanout counts, which only an entry sends",
	} {
		e := got.errors[name]
		if e.GetCode() != "INTERNAL" || !strings.HasPrefix(e.GetMessage(), want) {
			t.Errorf("%s: %v, want INTERNAL %q", name, e, want)
		}
		// What it sent before it broke the protocol, and no more.
		if n, most := len(got.results[name]), map[string]int{"out-of-range": 1, "flood": 1}[name]; n != most {
			t.Errorf("%s: %d results passed on, want %d", name, n, most)
		}
		select {
		case <-fakes[name].cut:
		case <-time.After(probetest.Timeout):
			t.Errorf("%s: its sweep was not cut", name)
		}
	}
	if f := got.fanout; f.GetAsked() != 4 || f.GetAnswered() != 1 || f.GetFailed() != 3 {
		t.Errorf("fanout %v, want the entry's own: 4 asked, 1 answered, 3 failed", f)
	}

	_, page := httpGet(t, "http://"+entry.MetricsAddr+"/")
	if strings.Contains(page, long[:1000]) || len(page) > 64<<10 {
		t.Errorf("the page (%d bytes) shows the name the liar gave itself", len(page))
	}
	if !strings.Contains(page, "the peer describes itself amiss: its node name") {
		t.Errorf("the page does not say why the liar is down")
	}
	if entry.LongestLine() > 8<<10 {
		t.Errorf("the entry logged a line of %d bytes", entry.LongestLine())
	}
}

// TestFanoutSelectors holds a selector to what a node's name and labels
// can be: each refusal INVALID_ARGUMENT naming the field, short whatever
// the selector's size, and nothing streamed.
func TestFanoutSelectors(t *testing.T) {
	t.Parallel()
	nodes := startFleet(t, 2, 90, func(int) []string { return []string{"--max-fanout=10"} })
	conn := dial(t, nodes[0].Addr)
	targets := []*netprobev1.SweepTarget{{Target: &netprobev1.Target{Host: "127.0.0.1", Port: 1}}}
	many := func(n int, f func(i int) string) []string {
		var out []string
		for i := range n {
			out = append(out, f(i))
		}
		return out
	}
	manyLabels := map[string]string{}
	for i := range 33 {
		manyLabels[fmt.Sprintf("k%d", i)] = "v"
	}
	for _, tc := range []struct {
		name string
		sel  *netprobev1.VantageSelector
		msg  string
	}{
		{"all with names", &netprobev1.VantageSelector{All: true, Nodes: []string{"n2"}}, "vantages.all: all selects every node, and goes alone; give nodes or labels without it"},
		{"all with labels", &netprobev1.VantageSelector{All: true, Labels: map[string]string{"zone": "z1"}}, "vantages.all: all selects every node, and goes alone; give nodes or labels without it"},
		{"more names than --max-fanout", &netprobev1.VantageSelector{Nodes: many(11, func(i int) string { return fmt.Sprintf("n%d", i) })},
			"vantages.nodes: 11 names, over the server's maximum of 10 nodes a fan-out asks (--max-fanout)"},
		{"a name with a space", &netprobev1.VantageSelector{Nodes: []string{"n1", "n 2"}}, `vantages.nodes[1]: "n 2": only letters, digits and - _ . /`},
		{"an empty name", &netprobev1.VantageSelector{Nodes: []string{""}}, `vantages.nodes[0]: "": want 1 to 63 characters`},
		{"a long name", &netprobev1.VantageSelector{Nodes: []string{strings.Repeat("x", 100000)}}, `vantages.nodes[0]: "` + strings.Repeat("x", 63) + `...": want 1 to 63 characters`},
		{"an empty label key", &netprobev1.VantageSelector{Labels: map[string]string{"": ""}}, `vantages.labels: key "": want 1 to 63 characters`},
		{"an empty label value", &netprobev1.VantageSelector{Labels: map[string]string{"zone": ""}}, `vantages.labels[zone]: value "": want 1 to 63 characters`},
		{"a label of another script", &netprobev1.VantageSelector{Labels: map[string]string{"zone": "é"}}, `vantages.labels[zone]: value "é": only letters, digits and - _ . /`},
		{"too many labels", &netprobev1.VantageSelector{Labels: manyLabels}, "vantages.labels: 33 pairs, over the 32 labels a node may have"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sweepAll(probetest.Context(t), t, conn, &netprobev1.SweepRequest{Targets: targets, Vantages: tc.sel})
			st, _ := status.FromError(got.err)
			if st.Code() != codes.InvalidArgument || st.Message() != tc.msg || len(got.results) != 0 || got.fanout != nil {
				t.Errorf("%v (%d nodes' results, fanout %v); want INVALID_ARGUMENT %q", got.err, len(got.results), got.fanout, tc.msg)
			}
		})
	}

	t.Run("the entry first within a limit", func(t *testing.T) {
		got := sweepAll(probetest.Context(t), t, dial(t, nodes[1].Addr), &netprobev1.SweepRequest{Targets: targets,
			Vantages: &netprobev1.VantageSelector{All: true, Limit: 1}})
		if names := nodesOf(got.results); got.err != nil || !slices.Equal(names, []string{"n2"}) ||
			got.fanout.GetAsked() != 1 || got.fanout.GetSkipped() != 1 {
			t.Errorf("results from %v, fanout %v, ended %v; want n2, the entry, asked and n1 skipped", names, got.fanout, got.err)
		}
	})
}
