package server

import (
	"context"
	"strings"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/audit"
	"github.com/netprobe/netprobe/internal/connguard"
	"github.com/netprobe/netprobe/internal/fleet"
	"github.com/netprobe/netprobe/service"
)

// tap authenticates each call as its stream opens, before gRPC reads any
// of its request or starts a handler for it: the caller is named by its
// bearer token when tokens are configured (a call without a valid one is
// UNAUTHENTICATED), else by its verified client certificate, else
// anonymous. Health checks need no token. A refused stream also counts
// against its connection's budget of discarded streams; a call that was
// authenticated makes its connection known (see guardedConn).
//
// gRPC runs it on the connection's reading goroutine, holding the
// transport's lock: it must be quick and must not block.
func (s *Server) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	p, _ := peer.FromContext(ctx)
	health := strings.HasPrefix(info.FullMethodName, healthPrefix)
	forwarded := info.Header.Get(fleet.CallerHeader)
	id, err := s.admission.Identify(admission.Credentials{
		Authorization: info.Header.Get("authorization"),
		TLS:           tlsState(p),
		TokenOptional: health,
		OnBehalfOf:    forwarded,
	})
	if err != nil {
		s.refused(p, info.FullMethodName, err)
		return nil, err
	}
	if id.ForwardedBy != "" {
		ctx = audit.WithForwardedBy(fleet.WithForwarded(ctx), id.ForwardedBy)
	}
	// With tokens, a health check is no authentication: its connection
	// stays unknown.
	connguard.StreamOpened(p, !(health && s.admission.Tokens()))
	if id.Caller != "" {
		ctx = service.WithCaller(ctx, id.Caller)
	}
	return ctx, nil
}

// healthPrefix starts the method names of the health service.
var healthPrefix = "/" + healthpb.Health_ServiceDesc.ServiceName + "/"

// refused logs a call refused before it ran (admission has counted it),
// and charges its connection for the stream. It runs on the connection's
// reading goroutine, and a flood of refused streams must not become a
// flood of log lines that the reader then waits on (the log waits rather
// than drops): the lines are limited to refusalLogRate a second, and a
// line says how many were left out before it.
func (s *Server) refused(p *peer.Peer, method string, err error) {
	connguard.RefusedPeer(p)
	if !s.refusalLog.Allow() {
		s.refusalsUnlogged.Add(1)
		return
	}
	attrs := []any{"grpc.method", method, "grpc.code", status.Code(err).String(), "err", loggedError(err.Error())}
	if p != nil {
		attrs = append(attrs, "peer", p.Addr.String())
	}
	if n := s.refusalsUnlogged.Swap(0); n > 0 {
		attrs = append(attrs, "unlogged_before", n)
	}
	s.logger.Warn("call refused", attrs...)
}

// refusalLogRate and refusalLogBurst limit the log lines of refused calls.
const (
	refusalLogRate  = 10
	refusalLogBurst = 100
)
