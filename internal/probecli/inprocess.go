package probecli

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/server"
	"github.com/netprobe/netprobe/service"
)

// inProcess runs the probe service in this process, reached through an
// in-memory gRPC connection. The server is built as probed builds it with
// its default flags (but for the payload cap and a client certificate,
// which the CLI has flags for, and source addresses, which are the
// user's to bind), so the calls, limits and errors are the same.
func (a *app) inProcess() (*client.Client, func(), error) {
	cfg := server.Config{
		DNSServer: a.DNSServer,
		Limits:    service.Limits{MaxPayloadBytes: a.MaxPayload},
		// The user's own machine: any source address it lets them bind.
		AllowSource: []string{"0.0.0.0/0", "::/0"},
	}
	if a.targetCert != "" {
		// The user's own certificate, for the user's own probes.
		cfg.ClientIdentities = []string{inProcessIdentity + "=" + a.targetCert + "," + a.targetKey}
		cfg.PolicyRules = []string{"identity " + inProcessIdentity}
	}
	srv, err := server.New(cfg)
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
