package service

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// tracer follows the path to one address, TTL by TTL (trace_linux.go; other
// systems cannot, trace_other.go).
type tracer struct {
	dst netip.AddrPort
	// udp traces with datagrams rather than SYNs.
	udp bool
	// src is the source address the probe asked for; the kernel chooses
	// when it is not valid.
	src             netip.Addr
	maxHops, perHop int
	start           time.Time
}

// tracePath traces the path to the address the probe reached, or failed
// to reach, when the request asks for it then: failure is the probe's
// failure, its connect's or its exchange's. It returns nil when no trace
// is asked for, or the probe had no such address (it failed before one:
// service lookup, resolution, the policy, the local socket). The trace
// ends with parent: the call's context for a Connect or a Fetch, the
// sweep's budget for a Sweep's.
func (p *probing) tracePath(parent context.Context, tp *traceParams, resp *netprobev1.ConnectResponse, failure *netprobev1.ProbeError) *netprobev1.Path {
	if tp == nil || (failure == nil && !tp.always) {
		return nil
	}
	dst, ok := traceDestination(resp)
	// The address was dialled, so the policy let it through; it is asked
	// again all the same, as a connect that ran out of time before it began
	// reports the first address, dialled or not.
	if !ok || p.s.cfg.Policy.Check(CallerFrom(p.ctx), dst) != nil {
		return nil
	}
	// The trace runs on the caller's context, not the probe's, whose time
	// may be over: on a budget of its own, cut by a shutdown as Fetches
	// are, and ending a margin before the caller's deadline (as a Sweep
	// does) so that what it found is sent before the deadline is there.
	ctx, done := p.s.cuttable(parent)
	defer done()
	deadline := time.Now().Add(tp.timeout)
	if d, ok := parent.Deadline(); ok {
		deadline = minTime(deadline, d.Add(-sweepMargin(time.Until(d), 1)))
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	tr := &tracer{dst: dst, udp: p.target.network == "udp", src: p.target.source, maxHops: tp.maxHops, perHop: tp.perHop, start: time.Now()}
	path := tr.run(ctx)
	if tp.names {
		p.s.nameHops(ctx, path.Hops)
	}
	path.Destination = dst.String()
	path.Duration = durationpb.New(time.Since(tr.start))
	path.Timeout = durationpb.New(tp.timeout)
	return path
}

const (
	// nameLookups is how many reverse lookups of a trace's hops run at
	// once.
	nameLookups = 8
	// nameMargin is how long before the trace's end its lookups are given
	// up: a resolver returns a moment after its deadline, and the trace
	// must not outlive its timeout.
	nameMargin = 5 * time.Millisecond
)

// nameHops looks up the names of the hops that answered, each address
// once, until a margin before ctx ends; a hop whose lookup fails or is cut
// short keeps no name. An address the target policy denies the caller is
// not looked up: a network that forges the hops' answers must not make
// the server read back the names of ranges the caller may not probe.
func (s *Server) nameHops(ctx context.Context, hops []*netprobev1.Hop) {
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-nameMargin))
		defer cancel()
	}
	caller := CallerFrom(ctx)
	var addrs []string
	for _, h := range hops {
		a, err := netip.ParseAddr(h.Address)
		if err != nil || slices.Contains(addrs, h.Address) || s.cfg.Policy.Check(caller, netip.AddrPortFrom(a, 0)) != nil {
			continue
		}
		addrs = append(addrs, h.Address)
	}
	// names is written by the lookups as they end: the loop below ranges
	// over addrs, never over it.
	names := make(map[string]string, len(addrs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, nameLookups)
	for _, addr := range addrs {
		wg.Go(func() {
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				return
			}
			// Go drops the names that are no domain names and returns
			// the rest with an error: those are kept.
			found, _ := s.cfg.Resolver.LookupAddr(ctx, addr)
			if len(found) == 0 {
				return
			}
			mu.Lock()
			names[addr] = strings.TrimSuffix(found[0], ".")
			mu.Unlock()
		})
	}
	// What is found by the end is kept; a lookup still running is left to
	// end on its own, its answer unused.
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	for _, h := range hops {
		h.Name = names[h.Address]
	}
}

// traceDestination is the address a probe reached or failed to reach,
// which a trace follows; false when it got to none.
func traceDestination(resp *netprobev1.ConnectResponse) (netip.AddrPort, bool) {
	var dst netip.AddrPort
	var err error
	switch pe := resp.Error; {
	case resp.PeerAddress != "":
		dst, err = netip.ParseAddrPort(resp.PeerAddress)
	case pe.GetStage() == netprobev1.Stage_STAGE_CONNECT:
		dst, err = netip.ParseAddrPort(pe.GetAddress())
	default:
		return dst, false
	}
	return dst, err == nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
