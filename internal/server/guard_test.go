package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/service"
)

func newTestGuard(t *testing.T, logs *bytes.Buffer) *guard {
	t.Helper()
	m := newMetrics(prometheus.NewRegistry())
	toks := &tokens{names: []string{"alice"}, hashes: [][sha256.Size]byte{sha256.Sum256([]byte("alice-token-0123456789"))}}
	return &guard{
		logUnary: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			logs.WriteString("logged\n")
			return h(ctx, req)
		},
		authn:    authenticate(toks),
		rates:    newRateLimiter(1e9, 1e9, m),
		inflight: newInFlight(10, 10, m),
		logger:   slog.New(slog.NewTextHandler(logs, nil)),
	}
}

func withToken(token string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "bearer "+token))
}

// TestGuardAdmits checks what the guard asks of each kind of call: health
// checks need no token, probes need one and count in flight, and only the
// calls without an audit line are logged.
func TestGuardAdmits(t *testing.T) {
	healthCheck := healthpb.Health_Check_FullMethodName
	for _, tc := range []struct {
		name     string
		method   string
		ctx      context.Context
		wantCode codes.Code
		wantLog  bool
	}{
		{"health without a token", healthCheck, context.Background(), codes.OK, true},
		{"connect without a token", netprobev1.ProbeService_Connect_FullMethodName, context.Background(), codes.Unauthenticated, false},
		{"connect with a wrong token", netprobev1.ProbeService_Connect_FullMethodName, withToken("mallory-token-0123456789"), codes.Unauthenticated, false},
		{"connect with a token", netprobev1.ProbeService_Connect_FullMethodName, withToken("alice-token-0123456789"), codes.OK, false},
		{"resolve with a token", netprobev1.ProbeService_ResolveService_FullMethodName, withToken("alice-token-0123456789"), codes.OK, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			g := newTestGuard(t, &logs)
			var caller string
			var inFlight int
			_, err := g.unary(tc.ctx, nil, &grpc.UnaryServerInfo{FullMethod: tc.method}, func(ctx context.Context, _ any) (any, error) {
				caller = service.CallerFrom(ctx)
				g.inflight.mu.Lock()
				inFlight = g.inflight.total
				g.inflight.mu.Unlock()
				return "done", nil
			})
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("code = %v (%v), want %v", got, err, tc.wantCode)
			}
			if got := strings.Contains(logs.String(), "logged"); got != tc.wantLog {
				t.Errorf("logged = %v, want %v", got, tc.wantLog)
			}
			if tc.wantCode != codes.OK {
				return
			}
			wantCaller, wantInFlight := "", 0
			if tc.method != healthCheck {
				wantCaller = "alice"
			}
			if strings.HasPrefix(tc.method, "/netprobe.v1.ProbeService/") {
				wantInFlight = 1
			}
			if caller != wantCaller || inFlight != wantInFlight {
				t.Errorf("in the handler: caller %q, %d in flight; want %q, %d", caller, inFlight, wantCaller, wantInFlight)
			}
			if g.inflight.total != 0 {
				t.Errorf("%d still in flight after the call", g.inflight.total)
			}
		})
	}
}

// TestGuardRecovers checks that a panicking handler becomes INTERNAL, is
// logged with its stack, and gives its in-flight place back.
func TestGuardRecovers(t *testing.T) {
	var logs bytes.Buffer
	g := newTestGuard(t, &logs)
	resp, err := g.unary(withToken("alice-token-0123456789"), nil, &grpc.UnaryServerInfo{FullMethod: netprobev1.ProbeService_Connect_FullMethodName}, func(context.Context, any) (any, error) {
		panic("boom")
	})
	if status.Code(err) != codes.Internal || resp != nil {
		t.Fatalf("got %v, %v; want nil, INTERNAL", resp, err)
	}
	if !strings.Contains(logs.String(), "panic in handler") || !strings.Contains(logs.String(), "boom") || !strings.Contains(logs.String(), "TestGuardRecovers") {
		t.Errorf("log does not name the panic and its stack:\n%s", logs.String())
	}
	if g.inflight.total != 0 {
		t.Errorf("%d still in flight after the panic", g.inflight.total)
	}
}
