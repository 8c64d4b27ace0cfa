package service

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

const (
	// fallbackDelay is how long the first address family gets before the
	// other one is tried too (RFC 8305's recommended 300ms, as net.Dialer).
	fallbackDelay = 300 * time.Millisecond
	// minAttemptTime is the least time an attempt gets when several
	// addresses share a budget, as in net.Dialer: a dead first address must
	// not eat the whole budget, nor can each be given too little to connect.
	minAttemptTime = 2 * time.Second
)

// attempt is one connection attempt to one address.
type attempt struct {
	addr       netip.AddrPort
	start, end time.Time
	// stage is where err struck: STAGE_SOCKET when no socket was made.
	stage netprobev1.Stage
	err   error
	// abandoned attempts were cancelled because another one connected first,
	// or because the caller left.
	abandoned bool
	// socketMade is set once the socket exists.
	socketMade bool
}

// probing is one probe under way: what its phases share, made once, so
// that the functions of its phases take it as their receiver instead of a
// row of parameters, as net's sysDialer does. The phases are functions of
// their own for the stack's sake (see doc.go). The connect phase fills in
// targets, resolved and connectStart as it goes, and resp once it is over.
type probing struct {
	s *Server
	// ctx is the caller's; pctx ends with the probe's timeout too.
	ctx, pctx context.Context
	start     time.Time
	target    target
	tls       *tlsParams
	// icmp is set for an ICMP echo (network "icmp"), which connect sends
	// instead of dialling.
	icmp *icmpParams

	targets      []netip.AddrPort
	resolved     time.Duration
	connectStart time.Time
	resp         *netprobev1.ConnectResponse
}

// connect runs the service lookup, resolve and connect phases and reports
// them in p.resp. It returns the connection, or nil with p.resp.Error set.
func (p *probing) connect() net.Conn {
	t := &p.target
	if t.network == "icmp" {
		p.echo()
		return nil
	}
	if t.port == 0 {
		e, ok := p.s.cfg.Services.ByName(t.service, t.network)
		if !ok {
			p.resp = failed(&netprobev1.ConnectResponse{}, unknownService(t.service, t.network, p.start), p.start)
			return nil
		}
		t.port = e.Port
	}
	addrs, err := p.s.resolve(p.pctx, *t)
	p.resolved = time.Since(p.start)
	if err != nil {
		resp := &netprobev1.ConnectResponse{Port: uint32(t.port), ResolveDuration: durationpb.New(p.resolved)}
		p.resp = failed(resp, probeError(netprobev1.Stage_STAGE_RESOLVE, t.host, err, p.resolved), p.start)
		return nil
	}
	p.targets = make([]netip.AddrPort, len(addrs))
	for i, a := range addrs {
		p.targets[i] = netip.AddrPortFrom(a, t.port)
	}

	ctx := p.pctx
	if t.source.IsValid() {
		ctx = context.WithValue(ctx, sourceKey{}, t.source)
	}
	p.connectStart = time.Now()
	caller := CallerFrom(ctx)
	check := func(ap netip.AddrPort) error { return p.s.cfg.Policy.Check(caller, ap) }
	conn, attempts := dialParallel(ctx, t.network, p.targets, check)
	p.resp = p.dialReport(conn, attempts)
	return conn
}

// dialReport makes the report of a connect phase that is over. It is made
// only then, in a function of its own, so that a probe waiting on the
// network holds no more than it needs to dial: neither the report nor this
// frame (see doc.go).
func (p *probing) dialReport(conn net.Conn, attempts []*attempt) *netprobev1.ConnectResponse {
	// The marks are here rather than in connect, whose frame is on the
	// stack while the dial waits.
	Mark(p.ctx, MarkDialed)
	defer Mark(p.ctx, MarkReported)
	resp := &netprobev1.ConnectResponse{
		Port:              uint32(p.targets[0].Port()),
		ResolvedAddresses: make([]string, len(p.targets)),
		ResolveDuration:   durationpb.New(p.resolved),
		ConnectDuration:   durationpb.New(time.Since(p.connectStart)),
	}
	for i, ap := range p.targets {
		resp.ResolvedAddresses[i] = ap.Addr().String()
	}
	var firstErr *netprobev1.ProbeError
	resp.Attempts, firstErr = reportAttempts(attempts, p.connectStart, p.start)
	if conn == nil {
		if firstErr == nil {
			// Nothing was tried before the budget ran out (or every try
			// was cut short by it).
			firstErr = probeError(netprobev1.Stage_STAGE_CONNECT, p.targets[0].String(), context.Cause(p.pctx), time.Since(p.start))
		}
		return failed(resp, firstErr, p.start)
	}
	resp.LocalAddress = conn.LocalAddr().String()
	resp.PeerAddress = conn.RemoteAddr().String()
	resp.TcpInfo = tcpInfo(conn)
	resp.TotalDuration = durationpb.New(time.Since(p.start))
	return resp
}

// failed sets resp's error and total duration.
func failed(resp *netprobev1.ConnectResponse, e *netprobev1.ProbeError, start time.Time) *netprobev1.ConnectResponse {
	resp.Error = e
	resp.TotalDuration = durationpb.New(time.Since(start))
	return resp
}

// reportAttempts describes the attempts, and picks the probe's error among
// theirs: the first failure, or a policy refusal only when every address
// was refused.
func reportAttempts(attempts []*attempt, connectStart, start time.Time) ([]*netprobev1.DialAttempt, *netprobev1.ProbeError) {
	out := make([]*netprobev1.DialAttempt, 0, len(attempts))
	var firstErr, firstDenied *netprobev1.ProbeError
	for _, a := range attempts {
		pa := &netprobev1.DialAttempt{
			Address:   a.addr.String(),
			Start:     durationpb.New(a.start.Sub(connectStart)),
			Duration:  durationpb.New(a.end.Sub(a.start)),
			Abandoned: a.abandoned,
		}
		if a.err != nil && !a.abandoned {
			pa.Error = probeError(a.stage, a.addr.String(), a.err, a.end.Sub(start))
			switch {
			case a.stage == netprobev1.Stage_STAGE_POLICY && firstDenied == nil:
				firstDenied = pa.Error
			case a.stage != netprobev1.Stage_STAGE_POLICY && firstErr == nil:
				firstErr = pa.Error
			}
		}
		out = append(out, pa)
	}
	if firstErr == nil {
		firstErr = firstDenied
	}
	return out, firstErr
}

// dialParallel races the first address family against the other, as Happy
// Eyeballs does: the other family starts after fallbackDelay or as soon as
// the first has failed, the first connection wins and the rest are
// abandoned. Unlike net.Dialer it keeps every attempt's outcome.
func dialParallel(ctx context.Context, network string, addrs []netip.AddrPort, check func(netip.AddrPort) error) (net.Conn, []*attempt) {
	primaries, fallbacks := partition(addrs)
	if len(fallbacks) == 0 {
		return dialSerial(ctx, network, primaries, check)
	}
	return race(ctx, network, primaries, fallbacks, check)
}

// race is dialParallel with both families. It is a function of its own so
// that the common case, one family, does not carry its frame: a probe
// waiting on the network holds its whole stack (see doc.go).
func race(ctx context.Context, network string, primaries, fallbacks []netip.AddrPort, check func(netip.AddrPort) error) (net.Conn, []*attempt) {
	type result struct {
		conn     net.Conn
		attempts []*attempt
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, 2)
	run := func(addrs []netip.AddrPort) {
		c, a := dialSerial(ctx, network, addrs, check)
		results <- result{c, a}
	}
	go run(primaries)
	timer := time.NewTimer(fallbackDelay)
	defer timer.Stop()
	running, fallbackStarted := 1, false
	var winner net.Conn
	var all []*attempt
	for running > 0 {
		select {
		case <-timer.C:
			if !fallbackStarted {
				fallbackStarted = true
				running++
				go run(fallbacks)
			}
		case r := <-results:
			running--
			all = append(all, r.attempts...)
			switch {
			case r.conn != nil && winner == nil:
				winner = r.conn
				cancel()
			case r.conn != nil:
				// Both families connected at once: keep the first.
				r.conn.Close()
				r.attempts[len(r.attempts)-1].abandoned = true
			case !fallbackStarted && winner == nil:
				fallbackStarted = true
				running++
				go run(fallbacks)
			}
		}
	}
	slices.SortStableFunc(all, func(a, b *attempt) int { return a.start.Compare(b.start) })
	return winner, all
}

// partition splits addrs into those of the first address's family and the
// rest, keeping their order.
func partition(addrs []netip.AddrPort) (primaries, fallbacks []netip.AddrPort) {
	first := addrs[0].Addr().Is4()
	if !slices.ContainsFunc(addrs, func(a netip.AddrPort) bool { return a.Addr().Is4() != first }) {
		return addrs, nil
	}
	for _, a := range addrs {
		if a.Addr().Is4() == first {
			primaries = append(primaries, a)
		} else {
			fallbacks = append(fallbacks, a)
		}
	}
	return primaries, fallbacks
}

// dialSerial tries addrs in turn, giving each a share of what is left of the
// budget, until one connects.
func dialSerial(ctx context.Context, network string, addrs []netip.AddrPort, check func(netip.AddrPort) error) (net.Conn, []*attempt) {
	var attempts []*attempt
	for i, addr := range addrs {
		if ctx.Err() != nil {
			break
		}
		a := &attempt{addr: addr, start: time.Now(), stage: netprobev1.Stage_STAGE_CONNECT}
		attempts = append(attempts, a)
		// An attempt gets a context of its own only when its share ends
		// before the budget does: the last address (or the only one) has
		// the whole rest, and a context with a timer is memory that every
		// held probe keeps.
		actx, cancel := ctx, context.CancelFunc(func() {})
		if d, ok := partialDeadline(ctx, a.start, len(addrs)-i); ok {
			actx, cancel = context.WithDeadline(ctx, d)
		}
		conn, err := dialOne(actx, network, addr, a, check)
		cancel()
		a.end = time.Now()
		if err == nil {
			return conn, attempts
		}
		a.err = err
		if errors.Is(ctx.Err(), context.Canceled) {
			a.abandoned = true
		}
	}
	return nil, attempts
}

// partialDeadline shares the time left among the addresses left, as
// net.Dialer does. It reports false when ctx has no deadline to share, or
// when the share is all that is left.
func partialDeadline(ctx context.Context, now time.Time, remaining int) (time.Time, bool) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return time.Time{}, false
	}
	left := deadline.Sub(now)
	share := left / time.Duration(remaining)
	if share < minAttemptTime {
		share = min(minAttemptTime, left)
	}
	return now.Add(share), share < left
}

// sourceKey marks a context whose dials bind the netip.Addr it holds.
type sourceKey struct{}

// socketMadeKey marks a context whose dial records, in the *bool it holds,
// that the socket was made.
type socketMadeKey struct{}

// dialer is shared by every attempt, so that an attempt's frame does not
// hold a net.Dialer of its own (see doc.go).
var dialer = net.Dialer{
	KeepAlive: -1,
	// The hook runs once the socket exists and before connect(2). It binds
	// the source address a probe asked for, itself rather than through
	// LocalAddr, so that a bind the kernel refuses is told apart from a
	// failed connect: the socket counts as made only once it is bound.
	ControlContext: func(ctx context.Context, _, _ string, rc syscall.RawConn) error {
		if src, ok := ctx.Value(sourceKey{}).(netip.Addr); ok {
			if err := bindSource(rc, src); err != nil {
				return err
			}
		}
		if made, ok := ctx.Value(socketMadeKey{}).(*bool); ok {
			*made = true
		}
		return nil
	},
}

// dialOne connects to one address, once the policy allows it: a refused
// address gets no socket, let alone a packet. An error before the socket
// exists is a STAGE_SOCKET failure.
func dialOne(ctx context.Context, network string, addr netip.AddrPort, a *attempt, check func(netip.AddrPort) error) (net.Conn, error) {
	if err := check(addr); err != nil {
		a.stage = netprobev1.Stage_STAGE_POLICY
		return nil, err
	}
	if addr.Addr().Is4() {
		network += "4"
	} else {
		network += "6"
	}
	conn, err := dialer.DialContext(context.WithValue(ctx, socketMadeKey{}, &a.socketMade), network, addr.String())
	if err != nil && !a.socketMade && ctx.Err() == nil {
		a.stage = netprobev1.Stage_STAGE_SOCKET
	}
	return conn, err
}
