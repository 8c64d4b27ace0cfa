package service

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// Connect implements netprobev1.ProbeServiceServer.
func (s *Server) Connect(ctx context.Context, req *netprobev1.ConnectRequest) (*netprobev1.ConnectResponse, error) {
	Mark(ctx, MarkHandler)
	cp, err := s.validateConnect(req)
	if err != nil {
		return nil, err
	}
	if err := s.grantIdentity(ctx, "tls", cp.tls); err != nil {
		return nil, err
	}
	Mark(ctx, MarkValidated)
	start := time.Now()
	// The caller's deadline caps the probe's: whichever comes first ends it.
	pctx, cancel := context.WithTimeout(ctx, cp.timeout)
	defer cancel()

	p := &probing{s: s, ctx: ctx, pctx: pctx, start: start, target: cp.target, tls: cp.tls, icmp: cp.icmp}
	conn := p.connect()
	return p.connected(req, conn, cp.trace)
}

// connected finishes a Connect once the dial is over: the handshake, the
// reverse lookup, the trace, the report. It is a function of its own so
// that its frame is not on the stack while the dial waits (see doc.go).
func (p *probing) connected(req *netprobev1.ConnectRequest, conn net.Conn, trace *traceParams) (*netprobev1.ConnectResponse, error) {
	resp := p.resp
	if conn != nil {
		p.finish(req, conn)
		Mark(p.ctx, MarkClosed)
	}
	if from := resp.GetIcmp().GetReplyAddress(); from != "" && req.GetReverseLookup() {
		resp.ReverseLookup = p.s.reverseLookup(p.pctx, &net.IPAddr{IP: net.ParseIP(from)}, p.start)
		resp.TotalDuration = durationpb.New(time.Since(p.start))
	}
	// The trace comes after the connection is closed: the target does
	// not hold it open while the trace runs.
	resp.Path = p.tracePath(p.ctx, trace, resp, resp.Error)
	p.s.observe(p.ctx, Report{Method: "Connect", Target: req.GetTarget(), Connect: resp, Error: resp.Error, Path: resp.Path, Duration: time.Since(p.start)})
	Mark(p.ctx, MarkObserved)
	if err := callerGone(p.ctx); err != nil {
		return nil, err
	}
	if err := refused(resp.Error); err != nil {
		return nil, err
	}
	return resp, nil
}

// finish runs what follows a connection, the handshake and the reverse
// lookup, and closes it.
func (p *probing) finish(req *netprobev1.ConnectRequest, conn net.Conn) {
	defer conn.Close()
	resp := p.resp
	if p.tls != nil {
		_, resp.Tls, resp.Error = handshake(p.pctx, conn, p.tls, p.target, p.start)
	}
	if req.GetReverseLookup() {
		resp.ReverseLookup = p.s.reverseLookup(p.pctx, conn.RemoteAddr(), p.start)
	}
	resp.TotalDuration = durationpb.New(time.Since(p.start))
}

// callerGone returns the status for a caller who cancelled or whose
// deadline has passed, or nil. The deadline is read off the clock as well as
// ctx.Err: a dial that ran into the caller's deadline can return a moment
// before the context's own timer marks it done, and that is still the
// caller's deadline, not the probe's timeout.
func callerGone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	}
	return nil
}

// refused turns a probe that the target policy refused outright into
// PERMISSION_DENIED, with the ProbeError naming the rule as a detail; nil
// for anything else.
func refused(pe *netprobev1.ProbeError) error {
	if pe.GetStage() != netprobev1.Stage_STAGE_POLICY {
		return nil
	}
	st, err := status.New(codes.PermissionDenied, pe.GetMessage()).WithDetails(pe)
	if err != nil {
		return status.Error(codes.PermissionDenied, pe.GetMessage())
	}
	return st.Err()
}
