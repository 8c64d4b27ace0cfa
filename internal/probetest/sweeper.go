package probetest

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// Sweeper is a ProbeService on loopback whose Sweep streams the responses
// it was given, whatever it is asked, and whose Connect answers as
// AnswerConnects says,
// beside a health service saying SERVING: a probe server, or a fleet's
// entry, that breaks the API as a test needs (results for entries the
// sweep does not have, a node that names itself with escape codes), for
// the tests of what its callers trust. It is the one thing tests fake: no
// real server sends these.
type Sweeper struct {
	netprobev1.UnimplementedProbeServiceServer
	// Addr is the gRPC address, "127.0.0.1:port".
	Addr string

	responses []*netprobev1.SweepResponse
	mu        sync.Mutex
	requests  []*netprobev1.SweepRequest
	connected func() (*netprobev1.ConnectResponse, error)
}

// AnswerConnects makes every Connect answer what f returns.
func (s *Sweeper) AnswerConnects(f func() (*netprobev1.ConnectResponse, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected = f
}

// ServeSweeps starts a Sweeper streaming responses, until the test ends.
func ServeSweeps(t testing.TB, responses ...*netprobev1.SweepResponse) *Sweeper {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Sweeper{Addr: lis.Addr().String(), responses: responses}
	srv := grpc.NewServer()
	netprobev1.RegisterProbeServiceServer(srv, s)
	hs := health.NewServer()
	hs.SetServingStatus(netprobev1.ProbeService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return s
}

// Sweep records req and streams the responses.
func (s *Sweeper) Sweep(req *netprobev1.SweepRequest, stream grpc.ServerStreamingServer[netprobev1.SweepResponse]) error {
	s.mu.Lock()
	s.requests = append(s.requests, proto.CloneOf(req))
	s.mu.Unlock()
	for _, r := range s.responses {
		if err := stream.Send(r); err != nil {
			return err
		}
	}
	return nil
}

// Connect answers as AnswerConnects said.
func (s *Sweeper) Connect(context.Context, *netprobev1.ConnectRequest) (*netprobev1.ConnectResponse, error) {
	s.mu.Lock()
	f := s.connected
	s.mu.Unlock()
	if f == nil {
		return nil, grpcstatus.Error(codes.Unimplemented, "this Sweeper answers no Connect")
	}
	return f()
}

// Requests are the Sweep requests received so far.
func (s *Sweeper) Requests() []*netprobev1.SweepRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*netprobev1.SweepRequest(nil), s.requests...)
}
