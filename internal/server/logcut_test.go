package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// TestLoggedErrorCut fails calls with an error of 1 MB, as an
// INVALID_ARGUMENT answer repeating a caller's request once was, through
// both ways a failed call is logged: the logging interceptor (Sweep and
// the other methods) and logFailed (Connect and Fetch, whose successes
// are audited instead). Each line holds the error's start and its length,
// not all of it.
func TestLoggedErrorCut(t *testing.T) {
	huge := status.Error(codes.InvalidArgument, "invalid request: "+strings.Repeat("tls.alpn[0]: an ALPN protocol is 1 to 255 bytes; ", 20000))
	for _, tc := range []struct {
		name string
		log  func(l *slog.Logger)
	}{
		{"interceptor", func(l *slog.Logger) {
			intercept := logging.UnaryServerInterceptor(interceptorLogger(l), logging.WithLogOnEvents(logging.FinishCall))
			intercept(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: netprobev1.ProbeService_Sweep_FullMethodName}, func(context.Context, any) (any, error) {
				return nil, huge
			})
		}},
		{"logFailed", func(l *slog.Logger) {
			(&guard{logger: l}).logFailed(context.Background(), netprobev1.ProbeService_Fetch_FullMethodName, huge)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			tc.log(slog.New(slog.NewJSONHandler(&logs, nil)))
			line := logs.String()
			if len(line) > maxLoggedError+1<<10 || !strings.Contains(line, "invalid request: tls.alpn[0]") || !strings.Contains(line, "bytes)") {
				t.Errorf("a line of %d bytes, want the error's start cut to %d bytes: %.300s", len(line), maxLoggedError, line)
			}
		})
	}
}
