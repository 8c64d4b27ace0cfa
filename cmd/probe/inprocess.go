package main

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"github.com/netprobe/netprobe/client"
	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/services"
	"github.com/netprobe/netprobe/internal/wire"
	"github.com/netprobe/netprobe/service"
)

// inProcess runs the probe service in this process, reached through an
// in-memory gRPC connection: the same calls, limits and errors as a remote
// probed with its default flags.
func inProcess(dnsServer string) (*client.Client, func(), error) {
	table, err := services.Load("/etc/services")
	if err != nil {
		return nil, nil, err
	}
	srv, err := service.New(service.Config{Resolver: service.ResolverFor(dnsServer), Services: table})
	if err != nil {
		return nil, nil, err
	}
	// The buffer is per direction; it only needs to keep the stream moving.
	lis := bufconn.Listen(256 << 10)
	gs := grpc.NewServer(wire.ServerOptions()...)
	netprobev1.RegisterProbeServiceServer(gs, srv)
	hs := health.NewServer()
	hs.SetServingStatus(netprobev1.ProbeService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		// Serve ends with an error once Stop closes the listener.
		_ = gs.Serve(lis)
	}()
	c, err := client.Dial("passthrough:///in-process", client.WithGRPCOptions(
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
	))
	if err != nil {
		gs.Stop()
		<-served
		return nil, nil, fmt.Errorf("in-process server: %w", err)
	}
	return c, func() {
		c.Close()
		gs.Stop()
		<-served
	}, nil
}
