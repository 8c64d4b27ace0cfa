package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/local"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/wire"
)

// Client asks one probe server for probes. It is safe for concurrent use.
type Client struct {
	probe  netprobev1.ProbeServiceClient
	health healthpb.HealthClient
	// conn is the connection Dial made, closed by Close; nil after New.
	conn *grpc.ClientConn
}

// New returns a Client that makes its calls over cc. The caller keeps
// ownership of cc: Close on this Client does not close it.
func New(cc grpc.ClientConnInterface) *Client {
	return &Client{
		probe:  netprobev1.NewProbeServiceClient(cc),
		health: healthpb.NewHealthClient(cc),
	}
}

// dialConfig collects the DialOptions.
type dialConfig struct {
	tls   *tls.Config
	local bool
	token string
	extra []grpc.DialOption
}

// A DialOption configures Dial.
type DialOption func(*dialConfig)

// WithTLS makes Dial use TLS with cfg (nil: the system roots and the target's
// host name). Without it the connection is plaintext.
func WithTLS(cfg *tls.Config) DialOption {
	return func(c *dialConfig) {
		if cfg == nil {
			cfg = &tls.Config{}
		}
		c.tls = cfg
	}
}

// WithInsecureLocalTransport makes Dial talk to the probe server without
// TLS, and only to a local peer: every connection's peer must be a
// loopback address (127.0.0.0/8, ::1) or a Unix socket, or its handshake
// fails before a byte is sent (gRPC's local credentials, which check the
// address the connection reached, whatever name led there). With it,
// WithBearerToken sends its token without TLS, which is safe only where
// the token crosses no network: probed on localhost or a Unix socket, which
// it serves in plaintext by default. It and WithTLS exclude each other.
func WithInsecureLocalTransport() DialOption {
	return func(c *dialConfig) { c.local = true }
}

// WithBearerToken sends "authorization: Bearer token" with every call. It
// needs WithTLS, or WithInsecureLocalTransport for a local probe server: a
// token must not cross the network in the clear.
func WithBearerToken(token string) DialOption {
	return func(c *dialConfig) { c.token = token }
}

// WithGRPCOptions passes further options to grpc.NewClient.
func WithGRPCOptions(opts ...grpc.DialOption) DialOption {
	return func(c *dialConfig) { c.extra = append(c.extra, opts...) }
}

// Dial returns a Client with its own connection to the probe server at
// target, in grpc.NewClient's syntax ("host:port", "unix:/path", ...). Like
// grpc.NewClient it does not wait for the server: the first call connects.
// Close the Client when done.
//
// The connection reads through a buffer of 1 MiB, sized for Fetch's bulk
// data, and lets the server send up to 16 MiB ahead of what the program
// has read. A program holding many connections that do not Fetch can pass
// WithGRPCOptions(grpc.WithReadBufferSize(32 << 10)) for gRPC's usual
// read buffer.
func Dial(target string, opts ...DialOption) (*Client, error) {
	var cfg dialConfig
	for _, o := range opts {
		o(&cfg)
	}
	creds := insecure.NewCredentials()
	switch {
	case cfg.tls != nil && cfg.local:
		return nil, errors.New("netprobe: WithTLS and WithInsecureLocalTransport exclude each other")
	case cfg.tls != nil:
		creds = credentials.NewTLS(cfg.tls)
	case cfg.local:
		creds = local.NewCredentials()
	}
	gopts := append(wire.DialOptions(), grpc.WithTransportCredentials(creds))
	if cfg.token != "" {
		if cfg.tls == nil && !cfg.local {
			return nil, errors.New("netprobe: a bearer token needs TLS (WithTLS), or a local probe server (WithInsecureLocalTransport)")
		}
		// Over local credentials a loopback TCP connection has no
		// transport security, to gRPC's eyes: the peer check stands in
		// for it.
		gopts = append(gopts, grpc.WithPerRPCCredentials(bearer{token: cfg.token, needTLS: !cfg.local}))
	}
	cc, err := grpc.NewClient(target, append(gopts, cfg.extra...)...)
	if err != nil {
		return nil, fmt.Errorf("netprobe: dial %s: %w", target, err)
	}
	c := New(cc)
	c.conn = cc
	return c, nil
}

// Close closes the connection Dial made. It does nothing for a Client from
// New.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// Health asks the probe server whether it is serving probes: the standard
// gRPC health check for netprobe.v1.ProbeService.
func (c *Client) Health(ctx context.Context) (healthpb.HealthCheckResponse_ServingStatus, error) {
	resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{Service: netprobev1.ProbeService_ServiceDesc.ServiceName})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, err
	}
	return resp.GetStatus(), nil
}

// bearer sends a bearer token with each call: only over TLS when needTLS,
// else over local credentials.
type bearer struct {
	token   string
	needTLS bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.needTLS }
