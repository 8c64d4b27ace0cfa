package service_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// tokens are the bearer tokens of TestPolicy's callers.
var tokens = map[string]string{"ops": "ops-0123456789abcdef", "team-a": "team-a-0123456789abcdef", "team-b": "team-b-0123456789abcdef"}

// as returns a test context whose calls carry caller's bearer token.
func as(t *testing.T, caller string) context.Context {
	return metadata.AppendToOutgoingContext(probetest.Context(t), "authorization", "Bearer "+tokens[caller])
}

// deniedDetail checks that err is PERMISSION_DENIED carrying a STAGE_POLICY
// ProbeError for address that names rule.
func deniedDetail(t *testing.T, err error, address, rule string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.PermissionDenied {
		t.Fatalf("got %v, want PermissionDenied", err)
	}
	var pe *netprobev1.ProbeError
	for _, d := range st.Details() {
		if p, ok := d.(*netprobev1.ProbeError); ok {
			pe = p
		}
	}
	if pe.GetStage() != netprobev1.Stage_STAGE_POLICY || pe.GetReason() != netprobev1.Reason_REASON_DENIED || pe.GetAddress() != address || pe.GetRule() != rule {
		t.Errorf("detail = %v, want STAGE_POLICY / REASON_DENIED for %s by %q", pe, address, rule)
	}
}

// TestPolicy dials for real: a denied address is refused and its listener
// never sees a connection, however the address is reached.
func TestPolicy(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.WithPolicy("deny 127.0.0.2/32", "caller team-a allow 127.0.0.3"), probetest.WithTokens(t, tokens))
	denied := probetest.Listen(t, "127.0.0.2:0", nil)
	allowed := probetest.Listen(t, "127.0.0.3:0", nil)
	other := probetest.Listen(t, "127.0.0.4:0", nil)
	port := denied.Port()
	deniedAddr := fmt.Sprintf("127.0.0.2:%d", port)
	connect := func(ctx context.Context, host string, port uint32) (*netprobev1.ConnectResponse, error) {
		return e.Probe.Connect(ctx, &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: host, Port: port}})
	}

	t.Run("address", func(t *testing.T) {
		_, err := connect(as(t, "ops"), "127.0.0.2", port)
		deniedDetail(t, err, deniedAddr, "127.0.0.2/32")
	})
	t.Run("IPv4-mapped", func(t *testing.T) {
		// The server dials the IPv4 address the mapped form carries.
		_, err := connect(as(t, "ops"), "::ffff:127.0.0.2", port)
		deniedDetail(t, err, deniedAddr, "127.0.0.2/32")
	})
	t.Run("IPv4-compatible", func(t *testing.T) {
		// ::a.b.c.d is judged by the IPv4 address it carries too: a sit
		// tunnel would take it there.
		_, err := connect(as(t, "ops"), "::127.0.0.2", port)
		deniedDetail(t, err, fmt.Sprintf("[::7f00:2]:%d", port), "127.0.0.2/32")
	})
	t.Run("name", func(t *testing.T) {
		e.DNS.SetAddrs("denied.test", netip.MustParseAddr("127.0.0.2"))
		_, err := connect(as(t, "ops"), "denied.test", port)
		deniedDetail(t, err, deniedAddr, "127.0.0.2/32")
	})
	t.Run("rebinding", func(t *testing.T) {
		e.DNS.SetAddrs("rebind.test", netip.MustParseAddr("127.0.0.3"))
		resp, err := connect(as(t, "ops"), "rebind.test", allowed.Port())
		if err != nil || resp.GetError() != nil {
			t.Fatalf("first answer, allowed: %v, %v", resp.GetError(), err)
		}
		e.DNS.SetAddrs("rebind.test", netip.MustParseAddr("127.0.0.2"))
		_, err = connect(as(t, "ops"), "rebind.test", port)
		deniedDetail(t, err, deniedAddr, "127.0.0.2/32")
	})
	t.Run("one address of two", func(t *testing.T) {
		// Both listen on the same port number: only the policy tells
		// them apart.
		both := probetest.Listen(t, fmt.Sprintf("127.0.0.3:%d", port), nil)
		e.DNS.SetAddrs("mixed.test", netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"))
		resp, err := connect(as(t, "ops"), "mixed.test", port)
		if err != nil || resp.GetError() != nil || resp.GetPeerAddress() != both.Addr() {
			t.Fatalf("Connect = %v, %v; want a connection to %s", resp, err, both.Addr())
		}
		a := resp.GetAttempts()
		if len(a) != 2 || a[0].GetError().GetStage() != netprobev1.Stage_STAGE_POLICY || a[0].GetError().GetRule() != "127.0.0.2/32" || a[1].GetError() != nil {
			t.Errorf("attempts = %v, want the refused one, then the connection", a)
		}
	})
	t.Run("fetch", func(t *testing.T) {
		stream, err := e.Probe.Fetch(as(t, "ops"), &netprobev1.FetchRequest{Target: &netprobev1.Target{Host: "127.0.0.2", Port: port}})
		if err == nil {
			_, err = stream.Recv()
		}
		deniedDetail(t, err, deniedAddr, "127.0.0.2/32")
	})
	t.Run("caller", func(t *testing.T) {
		teamA := as(t, "team-a")
		if resp, err := connect(teamA, "127.0.0.3", allowed.Port()); err != nil || resp.GetError() != nil {
			t.Errorf("team-a to its own address: %v, %v", resp.GetError(), err)
		}
		_, err := connect(teamA, "127.0.0.4", other.Port())
		deniedDetail(t, err, other.Addr(), "not covered by caller team-a's allow rules")
		teamB := as(t, "team-b")
		if resp, err := connect(teamB, "127.0.0.4", other.Port()); err != nil || resp.GetError() != nil {
			t.Errorf("team-b, with no rules of its own: %v, %v", resp.GetError(), err)
		}
	})

	if !denied.AcceptedNothing() {
		t.Error("the denied listener accepted a connection")
	}
}
