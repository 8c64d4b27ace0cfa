package main

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestSelfProbe runs probed on wildcard addresses in a namespace of its
// own (so that its ports are nobody else's) and asks it to probe itself
// through the other addresses it answers on: anywhere in 127.0.0.0/8, ::1,
// and the IPv4-mapped and NAT64 forms of those, on its gRPC and its metrics
// port. Each is refused before a packet is sent; another port on the same
// addresses is not.
func TestSelfProbe(t *testing.T) {
	t.Parallel()
	ns := netlab.NewNamespace(t)
	probetest.StartProbed(t, ns.Command(probedBin, "--listen=:7080", "--plaintext", "--metrics-addr=:7081"))
	var other *probetest.Target
	if err := ns.Do(func() error {
		ln, err := net.Listen("tcp", "127.0.0.5:0")
		if err != nil {
			return err
		}
		other = probetest.NewTarget(t, ln.(*net.TCPListener), nil)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial("passthrough:///probed", client.WithGRPCOptions(grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		var conn net.Conn
		err := ns.Do(func() (err error) {
			conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", "127.0.0.1:7080")
			return err
		})
		return conn, err
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	for _, tc := range []struct{ addr, rule string }{
		{"127.0.0.5:7080", "built-in: the probe server itself (127.0.0.0/8 port 7080)"},
		{"[::ffff:127.0.0.9]:7080", "built-in: the probe server itself (127.0.0.0/8 port 7080)"},
		{"[64:ff9b::7f00:9]:7080", "built-in: the probe server itself (127.0.0.0/8 port 7080)"},
		{"[::1]:7080", "built-in: the probe server itself ([::1]:7080)"},
		{"127.0.0.5:7081", "built-in: the probe server itself (127.0.0.0/8 port 7081)"},
		{"[::1]:7081", "built-in: the probe server itself ([::1]:7081)"},
	} {
		_, err := c.Connect(probetest.Context(t), "tcp", tc.addr, client.ConnectOptions{})
		if pe, ok := client.Refusal(err); !ok || pe.Rule != tc.rule {
			t.Errorf("Connect %s: %v, want refused by %q", tc.addr, err, tc.rule)
		}
		// A raw Fetch carrying an HTTP/2 preface, or a GET of /metrics.
		_, err = c.Fetch(probetest.Context(t), "tcp", tc.addr, client.FetchOptions{Payload: []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("Fetch %s: %v, want PermissionDenied", tc.addr, err)
		}
	}
	if _, err := c.Connect(probetest.Context(t), "tcp", other.Addr(), client.ConnectOptions{}); err != nil {
		t.Errorf("Connect to another port of 127.0.0.5: %v", err)
	}
}
