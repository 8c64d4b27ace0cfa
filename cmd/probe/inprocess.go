package main

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/server"
)

// inProcess runs the probe service in this process, reached through an
// in-memory gRPC connection. The server is built as probed builds it with
// its default flags (but for the payload cap, which the CLI has a flag
// for), so the calls, limits and errors are the same.
func inProcess(dnsServer string, maxPayload int) (*client.Client, func(), error) {
	srv, err := server.New(server.Config{DNSServer: dnsServer, ServicesFile: "/etc/services", MaxPayloadBytes: maxPayload})
	if err != nil {
		return nil, nil, err
	}
	// The buffer is per direction; it only needs to keep the stream moving.
	lis := bufconn.Listen(256 << 10)
	served := make(chan struct{})
	go func() {
		defer close(served)
		// Serve ends with an error once Stop closes the listener.
		_ = srv.Serve(lis)
	}()
	c, err := client.Dial("passthrough:///in-process", client.WithGRPCOptions(
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
	))
	if err != nil {
		srv.Stop()
		<-served
		return nil, nil, fmt.Errorf("in-process server: %w", err)
	}
	return c, func() {
		c.Close()
		srv.Stop()
		<-served
	}, nil
}
