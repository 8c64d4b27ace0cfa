package client_test

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/netprobe/netprobe/client"
	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestSweepBrokenServer plays a probe server, and a fleet's entry, that
// break the API, against the client's Sweep: results for entries the
// sweep does not have (an index of 4,000,000,000 would panic whoever
// indexes the targets with it), a result with no report that is not
// abandoned (whoever reads its times would panic), a fleet's result with
// no node, and a fleet's result to a sweep that asked for none. Each
// ends the call with ErrProtocol, yielding nothing broken; from a fleet, a
// node's broken result is that node's VantageErr instead, and nothing
// more of it is yielded, while the other nodes' results stand.
func TestSweepBrokenServer(t *testing.T) {
	t.Parallel()
	ok := func(index uint32) *netprobev1.SweepResponse {
		return &netprobev1.SweepResponse{Index: index, Target: &netprobev1.Target{Host: "127.0.0.1", Port: 80}, Connect: &netprobev1.ConnectResponse{}}
	}
	from := func(node, addr string, r *netprobev1.SweepResponse) *netprobev1.SweepResponse {
		r.Vantage = &netprobev1.Vantage{Node: node, Address: addr}
		return r
	}
	targets := []client.SweepTarget{{Network: "tcp", Address: "127.0.0.1:80"}, {Network: "tcp", Address: "127.0.0.1:81"}}
	fleet := &client.Vantages{All: true}
	for _, tc := range []struct {
		name string
		from *client.Vantages
		sent []*netprobev1.SweepResponse
		// want is what Sweep yields, a line each: "node index" of a
		// result, "node: VantageErr", or the error that ends the call.
		want []string
	}{
		{"an index past the targets", nil,
			[]*netprobev1.SweepResponse{ok(0), ok(4_000_000_000), ok(1)},
			[]string{"- 0", "sweep: protocol error: a result for entry 4000000000, of a sweep of 2"}},
		{"the first index past the targets", nil,
			[]*netprobev1.SweepResponse{ok(2)},
			[]string{"sweep: protocol error: a result for entry 2, of a sweep of 2"}},
		{"no report, not abandoned", nil,
			[]*netprobev1.SweepResponse{{Index: 1}},
			[]string{"sweep: protocol error: a result for entry 1 with no report, and not abandoned"}},
		{"a fleet's result unasked", nil,
			[]*netprobev1.SweepResponse{from("n1", "", ok(0))},
			[]string{"sweep: protocol error: a fleet's result, to a sweep that asked for none"}},
		{"a node's failure unasked", nil,
			[]*netprobev1.SweepResponse{{VantageError: &netprobev1.VantageError{Code: "UNAVAILABLE"}}},
			[]string{"sweep: protocol error: a fleet's result, to a sweep that asked for none"}},
		{"a node's index past the targets", fleet,
			[]*netprobev1.SweepResponse{
				from("bad", "10.0.0.2:7070", ok(0)), from("good", "", ok(0)),
				from("bad", "10.0.0.2:7070", ok(4_000_000_000)),
				from("bad", "10.0.0.2:7070", ok(1)), from("good", "", ok(1)),
				from("bad", "10.0.0.2:7070", &netprobev1.SweepResponse{VantageError: &netprobev1.VantageError{Code: "UNAVAILABLE"}}),
				{Fanout: &netprobev1.FanoutSummary{Asked: 2, Answered: 1, Failed: 1, Skipped: 7}}},
			[]string{"bad 0", "good 0",
				"bad: INTERNAL: sweep: protocol error: a result for entry 4000000000, of a sweep of 2; what else the node sends is dropped",
				"good 1", "fanout {Asked:2 Answered:1 Failed:1 Skipped:7}"}},
		{"a node's result with no report", fleet,
			[]*netprobev1.SweepResponse{from("n1", "", &netprobev1.SweepResponse{Index: 0}), from("n1", "", ok(1))},
			[]string{"n1: INTERNAL: sweep: protocol error: a result for entry 0 with no report, and not abandoned; what else the node sends is dropped"}},
		{"a fleet's result with no node", fleet,
			[]*netprobev1.SweepResponse{from("n1", "", ok(0)), ok(1)},
			[]string{"n1 0", "sweep: protocol error: a result from a fleet that names no node"}},
		{"a failure with no node", fleet,
			[]*netprobev1.SweepResponse{{VantageError: &netprobev1.VantageError{Code: "UNAVAILABLE"}}},
			[]string{"sweep: protocol error: a result from a fleet that names no node"}},
		{"abandoned, no report", fleet,
			[]*netprobev1.SweepResponse{from("n1", "", &netprobev1.SweepResponse{Index: 1, Abandoned: true})},
			[]string{"n1 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := probetest.ServeSweeps(t, tc.sent...)
			c, err := client.Dial(srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var got []string
			protocol := false
			for r, err := range c.Sweep(probetest.Context(t), targets, client.SweepOptions{From: tc.from}) {
				node := "-"
				switch {
				case err != nil:
					got = append(got, err.Error())
					protocol = protocol || errors.Is(err, client.ErrProtocol)
					continue
				case r.Vantage != nil:
					node = r.Vantage.Node
				}
				switch {
				case r.Fanout != nil:
					got = append(got, fmt.Sprintf("fanout %+v", *r.Fanout))
				case r.VantageErr != nil:
					got = append(got, node+": "+r.VantageErr.Error())
					protocol = protocol || errors.Is(r.VantageErr, client.ErrProtocol)
					// What -o json prints is the failure, not the broken
					// result.
					if p := r.Proto(); p.GetVantageError().GetMessage() != r.VantageErr.Message || p.GetIndex() != 0 || p.GetConnect() != nil {
						t.Errorf("Proto() of %s's failure: %v", node, p)
					}
				default:
					got = append(got, fmt.Sprintf("%s %d", node, r.Index))
				}
			}
			if diff := gocmp.Diff(tc.want, got); diff != "" {
				t.Errorf("yielded (-want +got):\n%s", diff)
			}
			if wantProtocol := strings.Contains(strings.Join(tc.want, "\n"), "protocol error"); protocol != wantProtocol {
				t.Errorf("errors.Is(ErrProtocol) %v, want %v", protocol, wantProtocol)
			}
		})
	}
}

// TestVantageNames names the nodes of fleets whose names collide, or
// that name themselves to attack a terminal: each set is named the same
// in any order.
func TestVantageNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		vantages []client.Vantage
		want     []string
	}{
		{"names apart", []client.Vantage{{Node: "n1"}, {Node: "n2", Addr: "10.0.0.2:7070"}}, []string{"n1", "n2"}},
		{"three of one name", []client.Vantage{{Node: "vm"}, {Node: "vm", Addr: "10.0.0.2:7070"}, {Node: "vm", Addr: "10.0.0.3:7070"}},
			[]string{"vm", "vm@10.0.0.2:7070", "vm@10.0.0.3:7070"}},
		{"two peers of one name", []client.Vantage{{Node: "vm", Addr: "10.0.0.2:7070"}, {Node: "vm", Addr: "10.0.0.3:7070"}, {Node: "db"}},
			[]string{"vm@10.0.0.2:7070", "vm@10.0.0.3:7070", "db"}},
		{"not UTF-8", []client.Vantage{{Node: "n\xff"}}, []string{"n\uFFFD"}},
		{"escape codes", []client.Vantage{{Node: "\x1b[2J\x1b]0;owned\x07n1"}}, []string{"\uFFFD[2J\uFFFD]0;owned\uFFFDn1"}},
		{"a right-to-left override", []client.Vantage{{Node: "n1\u202e"}}, []string{"n1\uFFFD"}},
		{"names that collide once printable", []client.Vantage{{Node: "n\x00"}, {Node: "n\x01", Addr: "10.0.0.2:7070\x1b"}},
			[]string{"n\uFFFD", "n\uFFFD@10.0.0.2:7070\uFFFD"}},
		{"names that print alike from one address", []client.Vantage{{Node: "n\x01", Addr: "10.0.0.2:7070"}, {Node: "n\x00", Addr: "10.0.0.2:7070"}},
			[]string{"n\uFFFD#2", "n\uFFFD"}},
		{"a name that is another's with its address", []client.Vantage{{Node: "a@10.0.0.2:7070"}, {Node: "a", Addr: "10.0.0.2:7070"}, {Node: "a", Addr: "10.0.0.3:7070"}},
			[]string{"a@10.0.0.2:7070#2", "a@10.0.0.2:7070", "a@10.0.0.3:7070"}},
		{"a name that is a numbered one", []client.Vantage{{Node: "n\uFFFD#2"}, {Node: "n\x00", Addr: "10.0.0.2:7070"}, {Node: "n\x01", Addr: "10.0.0.2:7070"}},
			[]string{"n\uFFFD#2#2", "n\uFFFD", "n\uFFFD#2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := client.VantageNames(tc.vantages); !slices.Equal(got, tc.want) {
				t.Errorf("names %q, want %q", got, tc.want)
			}
			reversed, want := slices.Clone(tc.vantages), slices.Clone(tc.want)
			slices.Reverse(reversed)
			slices.Reverse(want)
			if got := client.VantageNames(reversed); !slices.Equal(got, want) {
				t.Errorf("reversed: names %q, want %q", got, want)
			}
		})
	}
}

// TestSweepLimit checks that a selector's limit reaches the server as it
// was given, and that one the wire cannot carry (a uint32) is refused
// before anything is sent, not wrapped around to a small one.
func TestSweepLimit(t *testing.T) {
	t.Parallel()
	srv := probetest.ServeSweeps(t, &netprobev1.SweepResponse{Fanout: &netprobev1.FanoutSummary{}})
	c, err := client.Dial(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	targets := []client.SweepTarget{{Network: "tcp", Address: "127.0.0.1:80"}}
	for _, tc := range []struct {
		name  string
		limit int
		err   string
	}{
		{"unset", 0, ""},
		{"seven", 7, ""},
		{"the most", 1<<32 - 1, ""},
		{"one past the most", 1 << 32, "sweep: vantages' limit 4294967296: want 0 (the server's default) to 4294967295"},
		{"negative", -1, "sweep: vantages' limit -1: want 0 (the server's default) to 4294967295"},
	} {
		before := len(srv.Requests())
		var got error
		for _, err := range c.Sweep(probetest.Context(t), targets, client.SweepOptions{From: &client.Vantages{All: true, Limit: tc.limit}}) {
			got = cmp.Or(got, err)
		}
		reqs := srv.Requests()
		switch {
		case tc.err == "" && (got != nil || len(reqs) != before+1 || reqs[before].GetVantages().GetLimit() != uint32(tc.limit)):
			t.Errorf("%s: %v, requests %v; want limit %d sent", tc.name, got, reqs[before:], tc.limit)
		case tc.err != "" && (got == nil || got.Error() != tc.err || len(reqs) != before):
			t.Errorf("%s: %v, %d requests sent; want %q and none", tc.name, got, len(reqs)-before, tc.err)
		}
	}
}
