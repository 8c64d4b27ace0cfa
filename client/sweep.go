package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// Expand says how one SweepTarget becomes the targets probed.
type Expand = netprobev1.Expand

// The expansions.
const (
	// ExpandAddresses probes each address of the host on its own.
	ExpandAddresses = netprobev1.Expand_EXPAND_ADDRESSES
	// ExpandSRV reads Address as an SRV name and probes each of its
	// entries.
	ExpandSRV = netprobev1.Expand_EXPAND_SRV
)

// SweepTarget is one entry of a sweep.
type SweepTarget struct {
	// Network and Address are as for Connect; with ExpandSRV, Address is
	// the SRV name alone ("_https._tcp.example.com").
	Network, Address string
	// Timeout bounds each probe of this entry; zero takes SweepOptions'.
	Timeout time.Duration
	// Expand, when set, makes the entry stand for several targets.
	Expand Expand
	// TLS, when set, adds a TLS handshake to each probe of the entry.
	TLS *TLSOptions
	// Source, when set, is the local address to connect from.
	Source netip.Addr
	// Steps, when set, are a dialogue each probe runs once connected, to
	// check the service's answer; the last must be an Expect.
	Steps []Step
	// Trace, when set, traces the path of each probe of the entry, as
	// ConnectOptions.Trace does: the result's Connect.Path. A sweep runs
	// 16 traces at most.
	Trace *TraceOptions
}

// SweepOptions tunes a sweep.
type SweepOptions struct {
	// Concurrency is how many probes run at once; zero is the server's
	// default (16), and the server caps it at its limit.
	Concurrency int
	// Timeout bounds each probe of an entry that sets none; zero is the
	// server's default.
	Timeout time.Duration
	// From, when set, runs the sweep from the nodes of the server's fleet
	// it selects (see docs/fleet.md): each result then has its Vantage,
	// a node that failed as a whole is a result with VantageErr, and the
	// last result has the Fanout counts.
	From *Vantages
}

// Vantages select nodes of a fleet: all of them, or those of these names,
// and those whose labels hold these pairs; Limit of them at most (zero is
// the server's default, 50).
type Vantages struct {
	All    bool
	Nodes  []string
	Labels map[string]string
	Limit  int
}

// ParseVantages reads a selector as the CLI's --from takes it: "all",
// "node=a,b" (nodes by name), "KEY=VALUE" (a label), several joined by
// commas ("node=a,b,zone=eu-1").
func ParseVantages(s string) (*Vantages, error) {
	v := &Vantages{Labels: map[string]string{}}
	inNodes := false
	for item := range strings.SplitSeq(s, ",") {
		k, val, isPair := strings.Cut(item, "=")
		switch {
		case item == "all":
			v.All, inNodes = true, false
		case isPair && k == "node" && val != "":
			v.Nodes, inNodes = append(v.Nodes, val), true
		case isPair && k != "" && val != "":
			if _, dup := v.Labels[k]; dup {
				return nil, fmt.Errorf("vantages %q: label %s given twice", s, k)
			}
			v.Labels[k], inNodes = val, false
		case !isPair && item != "" && inNodes:
			v.Nodes = append(v.Nodes, item)
		default:
			return nil, fmt.Errorf("vantages %q: %q is not all, node=NAME[,NAME...] or KEY=VALUE", s, item)
		}
	}
	return v, nil
}

func (v *Vantages) limit() int {
	if v == nil {
		return 0
	}
	return v.Limit
}

func (v *Vantages) proto() *netprobev1.VantageSelector {
	if v == nil {
		return nil
	}
	return &netprobev1.VantageSelector{All: v.All, Nodes: v.Nodes, Labels: v.Labels, Limit: uint32(v.Limit)}
}

// Vantage is the node of a fleet a result came from.
type Vantage struct {
	Node   string
	Labels map[string]string
	// Addr is where the server asked reached it; "" for that server.
	Addr string
}

// VantageNames names each of vantages for people and metric labels: by
// its node's name, and, where several share a name (a fleet whose nodes
// kept the default --node-name, the host name), as NAME@ADDRESS, but for
// the server asked itself (Addr ""), which keeps NAME. A name depends on
// the set alone, not on its order, so that a column or a series keeps its
// name from one call to the next; every name is its own (see below).
// Names and addresses are made printable:
// valid UTF-8, and U+FFFD for what a terminal would act on (control and
// format characters), since a node names itself.
func VantageNames(vantages []Vantage) []string {
	names := make([]string, len(vantages))
	addrs := map[string]map[string]bool{}
	for i, v := range vantages {
		names[i] = Printable(v.Node)
		if addrs[names[i]] == nil {
			addrs[names[i]] = map[string]bool{}
		}
		addrs[names[i]][v.Addr] = true
	}
	for i, v := range vantages {
		if len(addrs[names[i]]) > 1 && v.Addr != "" {
			names[i] += "@" + Printable(v.Addr)
		}
	}
	// Names may still be one: a node named "a@X" beside two named "a", or
	// names that print alike from one address (a node names itself as it
	// likes). Of those, all but the first in the order of their raw names
	// and addresses take #2, #3, ..., until every name is its own.
	for {
		byName := map[string][]int{}
		for i, n := range names {
			byName[n] = append(byName[n], i)
		}
		alike := false
		for n, idx := range byName {
			if len(idx) < 2 {
				continue
			}
			alike = true
			slices.SortFunc(idx, func(a, b int) int {
				return cmp.Or(strings.Compare(vantages[a].Node, vantages[b].Node), strings.Compare(vantages[a].Addr, vantages[b].Addr))
			})
			for k, i := range idx[1:] {
				names[i] = n + "#" + strconv.Itoa(k+2)
			}
		}
		if !alike {
			return names
		}
	}
}

// Printable is s with U+FFFD for each byte that is not UTF-8 and each rune
// that does not print (but a space): what a server or a fleet's node says
// (a name, a message), made safe for a terminal, which would obey its
// escape codes.
func Printable(s string) string {
	return strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
}

// VantageError is why a node of a fleet gave no results, or no more.
type VantageError struct {
	// Code is the gRPC status code's canonical name (UNAVAILABLE,
	// DEADLINE_EXCEEDED, ...), and Message says why.
	Code, Message string
	// protocol is set when the client, not the server, found the node's
	// results broken: errors.Is(e, ErrProtocol).
	protocol bool
}

func (e *VantageError) Error() string { return e.Code + ": " + e.Message }

// Unwrap is ErrProtocol for a node whose results broke the API, else nil.
func (e *VantageError) Unwrap() error {
	if e.protocol {
		return ErrProtocol
	}
	return nil
}

// ErrProtocol is what a server's answer that breaks the API is: a result
// for an entry the sweep does not have, a result with no report that is
// not abandoned, a fan-out's result that names no node. Sweep checks every
// result, so that what it yields can be trusted to index the targets.
var ErrProtocol = errors.New("protocol error")

// FanoutSummary counts the nodes of a sweep run from a fleet: those sent
// the sweep (Asked), those that ended it (Answered), those that failed as
// a whole (Failed), and those the selector matched past its limit, not
// asked (Skipped).
type FanoutSummary struct {
	Asked, Answered, Failed, Skipped int
}

// SweepResult is the result of one probe of a sweep.
type SweepResult struct {
	// Index is the position of the entry in the targets given to Sweep:
	// Sweep yields no result whose Index is not one.
	Index int
	// Target is the "host:port" probed, after any expansion.
	Target string
	// Connect is the report; nil for a probe the sweep never started,
	// which is Abandoned.
	Connect *ConnectResult
	// Summary is how the entry's dialogue went (SweepTarget.Steps), once
	// connected; nil without one.
	Summary *FetchSummary
	// Err is why the probe failed (a policy refusal, or its dialogue,
	// included), or nil.
	Err *ProbeError
	// Abandoned is true when the sweep ran out of time or was cancelled
	// before this probe finished.
	Abandoned bool
	// Vantage, in a sweep From a fleet, is the node this came from.
	Vantage *Vantage
	// VantageErr, in a sweep From a fleet, says Vantage failed as a whole:
	// the result holds no probe. A node whose results break the API
	// (errors.Is(VantageErr, ErrProtocol)) has this in place of the first
	// broken one, and nothing of it follows.
	VantageErr *VantageError
	// Fanout, in the last result of a sweep From a fleet and in it alone,
	// counts the nodes; the result holds no probe.
	Fanout *FanoutSummary

	proto *netprobev1.SweepResponse
}

// Proto returns the result as the server sent it; for a node's broken
// result, the VantageErr that stands for it.
func (r *SweepResult) Proto() *netprobev1.SweepResponse { return r.proto }

// Sweep probes many targets in one call and yields each result as it
// finishes. A failed probe is a result (its Err set), never an error; the
// sequence yields an error, and stops, only when the call itself fails,
// or the server's answer breaks the API (ErrProtocol; from a fleet, a
// node's broken result is a VantageErr of that node instead). The ctx
// deadline bounds the whole sweep: what it cuts short comes back
// Abandoned.
func (c *Client) Sweep(ctx context.Context, targets []SweepTarget, opts SweepOptions) iter.Seq2[*SweepResult, error] {
	return func(yield func(*SweepResult, error) bool) {
		if l := opts.From.limit(); l < 0 || uint64(l) > math.MaxUint32 {
			yield(nil, fmt.Errorf("sweep: vantages' limit %d: want 0 (the server's default) to %d", l, uint32(math.MaxUint32)))
			return
		}
		req := &netprobev1.SweepRequest{Concurrency: uint32(opts.Concurrency), Vantages: opts.From.proto()}
		if opts.Timeout != 0 {
			req.Timeout = durationpb.New(opts.Timeout)
		}
		for _, st := range targets {
			t, err := sweepTarget(st)
			if err != nil {
				yield(nil, err)
				return
			}
			req.Targets = append(req.Targets, t)
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.probe.Sweep(ctx, req)
		if err != nil {
			yield(nil, err)
			return
		}
		// broken are the nodes of a fleet whose results broke the API:
		// what they send next is dropped.
		broken := map[[2]string]bool{}
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
			r := newSweepResult(resp)
			bad := r.check(len(targets), opts.From != nil)
			switch {
			case bad != nil && (opts.From == nil || r.Vantage == nil):
				yield(nil, bad)
				return
			case r.Vantage != nil && broken[[2]string{r.Vantage.Node, r.Vantage.Addr}]:
				continue
			case bad != nil:
				// One node's broken result is that node's failure, not
				// the call's: the others' results stand.
				broken[[2]string{r.Vantage.Node, r.Vantage.Addr}] = true
				verr := &netprobev1.VantageError{Code: "INTERNAL", Message: bad.Error() + "; what else the node sends is dropped"}
				r = &SweepResult{Vantage: r.Vantage, VantageErr: &VantageError{Code: verr.Code, Message: verr.Message, protocol: true},
					proto: &netprobev1.SweepResponse{Vantage: resp.GetVantage(), VantageError: verr}}
			}
			if !yield(r, nil) {
				return
			}
		}
	}
}

// check says how r breaks the API of a sweep of n entries (from a fleet
// when fanout), or nil when it does not.
func (r *SweepResult) check(n int, fanout bool) error {
	switch {
	case !fanout && (r.Vantage != nil || r.VantageErr != nil || r.Fanout != nil):
		return fmt.Errorf("sweep: %w: a fleet's result, to a sweep that asked for none", ErrProtocol)
	case r.Fanout != nil:
		return nil
	case r.Vantage == nil && fanout:
		return fmt.Errorf("sweep: %w: a result from a fleet that names no node", ErrProtocol)
	case r.VantageErr != nil:
		return nil
	case r.proto.GetIndex() >= uint32(n):
		return fmt.Errorf("sweep: %w: a result for entry %d, of a sweep of %d", ErrProtocol, r.proto.GetIndex(), n)
	case r.Connect == nil && !r.Abandoned:
		return fmt.Errorf("sweep: %w: a result for entry %d with no report, and not abandoned", ErrProtocol, r.Index)
	}
	return nil
}

func sweepTarget(st SweepTarget) (*netprobev1.SweepTarget, error) {
	out := &netprobev1.SweepTarget{Expand: st.Expand, Tls: st.TLS.proto(), Trace: st.Trace.proto()}
	if st.Timeout != 0 {
		out.Timeout = durationpb.New(st.Timeout)
	}
	var err error
	if st.Expand == ExpandSRV {
		// An SRV name brings its own ports.
		out.Target, err = target(st.Network, net.JoinHostPort(st.Address, "1"))
		if out.Target != nil {
			out.Target.Port = 0
		}
	} else {
		out.Target, err = target(st.Network, st.Address)
	}
	if out.Target != nil {
		out.Target.SourceAddress = sourceAddress(st.Source)
	}
	if len(st.Steps) > 0 && err == nil {
		out.Steps, err = stepsProto(st.Steps)
	}
	return out, err
}

func newSweepResult(resp *netprobev1.SweepResponse) *SweepResult {
	t := resp.GetTarget()
	port := t.GetService()
	if t.GetPort() != 0 {
		port = strconv.FormatUint(uint64(t.GetPort()), 10)
	}
	r := &SweepResult{
		Index:     int(resp.GetIndex()),
		Target:    net.JoinHostPort(t.GetHost(), port),
		Abandoned: resp.GetAbandoned(),
		proto:     resp,
	}
	if v := resp.GetVantage(); v != nil {
		r.Vantage = &Vantage{Node: v.GetNode(), Labels: v.GetLabels(), Addr: v.GetAddress()}
	}
	if e := resp.GetVantageError(); e != nil {
		r.VantageErr = &VantageError{Code: e.GetCode(), Message: e.GetMessage()}
		return r
	}
	if f := resp.GetFanout(); f != nil {
		r.Fanout = &FanoutSummary{Asked: int(f.GetAsked()), Answered: int(f.GetAnswered()), Failed: int(f.GetFailed()), Skipped: int(f.GetSkipped())}
		return r
	}
	if c := resp.GetConnect(); c != nil {
		r.Connect = newConnectResult(c)
		if pe := newProbeError(c.GetError()); pe != nil {
			pe.Connect, pe.Path = r.Connect, r.Connect.Path
			r.Err = pe
		}
	}
	if s := resp.GetSummary(); s != nil {
		r.Summary = newFetchSummary(s)
		if pe := newProbeError(s.GetError()); pe != nil && r.Err == nil {
			pe.Connect, pe.Summary = r.Connect, r.Summary
			if r.Connect != nil {
				pe.Path = r.Connect.Path
			}
			r.Err = pe
		}
	}
	return r
}

// FleetResult is one result of SweepFleet.
type FleetResult struct {
	// Server is the index, in the clients given to SweepFleet, of the
	// probe server that made this probe.
	Server int
	// Result is the probe's result; nil when Err is set.
	Result *SweepResult
	// Err is the server's call error, which ends its part of the sweep.
	Err error
}

// SweepFleet runs the same sweep from every probe server at once, each a
// vantage point, and yields the results as they come. Stopping the
// iteration cancels what is left.
func SweepFleet(ctx context.Context, servers []*Client, targets []SweepTarget, opts SweepOptions) iter.Seq[FleetResult] {
	return func(yield func(FleetResult) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		results := make(chan FleetResult)
		var wg sync.WaitGroup
		for i, c := range servers {
			wg.Go(func() {
				for r, err := range c.Sweep(ctx, targets, opts) {
					select {
					case results <- FleetResult{Server: i, Result: r, Err: err}:
					case <-ctx.Done():
						return
					}
				}
			})
		}
		go func() {
			wg.Wait()
			close(results)
		}()
		for r := range results {
			if !yield(r) {
				cancel()
				for range results {
					// Drain, so the senders end.
				}
				return
			}
		}
	}
}
