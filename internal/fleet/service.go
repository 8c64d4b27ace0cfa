package fleet

import (
	"context"

	"google.golang.org/grpc"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/service"
)

// Service is the probe service of a fleet's node: a Sweep with vantages
// fans out, Describe says who the node is; the rest is the probe
// service's.
type Service struct {
	*service.Server
	fleet *Fleet
}

// NewService is s on the node of f.
func NewService(s *service.Server, f *Fleet) *Service { return &Service{Server: s, fleet: f} }

// Describe implements netprobev1.ProbeServiceServer.
func (s *Service) Describe(context.Context, *netprobev1.DescribeRequest) (*netprobev1.DescribeResponse, error) {
	lim := s.Server.Limits()
	return s.fleet.node.Describe(lim.MaxTimeout, lim.MaxSweepTargets, s.fleet.MaxFanout()), nil
}

// Sweep implements netprobev1.ProbeServiceServer: on this node alone, or,
// with vantages, from the nodes they select. A Sweep a peer forwards runs
// here alone, whatever its vantages say.
func (s *Service) Sweep(req *netprobev1.SweepRequest, stream grpc.ServerStreamingServer[netprobev1.SweepResponse]) error {
	ctx := stream.Context()
	if req.GetVantages() == nil || Forwarded(ctx) {
		return s.Server.Sweep(req, stream)
	}
	return s.FanOut(ctx, req, stream.Send)
}

// FanOut runs req, whose vantages are set, from the nodes they select,
// for the caller of ctx, every response leaving through send: a Sweep's
// fan-out, whichever way the caller came in (gRPC, /probe's from=).
func (s *Service) FanOut(ctx context.Context, req *netprobev1.SweepRequest, send func(*netprobev1.SweepResponse) error) error {
	if err := s.Server.ValidateSweep(req); err != nil {
		return err
	}
	// The nodes charge the caller as the limits here know it: its name,
	// or an anonymous caller's address.
	caller := admission.CallerOf(ctx).String()
	return s.fleet.Sweep(ctx, req, caller, send, s.Server)
}

type forwardedKey struct{}

// WithForwarded marks ctx as a call a peer forwarded.
func WithForwarded(ctx context.Context) context.Context {
	return context.WithValue(ctx, forwardedKey{}, true)
}

// Forwarded says whether ctx is a call a peer forwarded.
func Forwarded(ctx context.Context) bool {
	f, _ := ctx.Value(forwardedKey{}).(bool)
	return f
}
