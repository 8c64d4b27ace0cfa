package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/netprobe/netprobe/internal/connguard"
	"github.com/netprobe/netprobe/service"
)

// tokens are the bearer tokens callers may present, by name. Only their
// hashes are kept, and a token is compared with every one of them in
// constant time, so that timing tells nothing about which came close.
type tokens struct {
	names  []string
	hashes [][sha256.Size]byte
}

// loadTokens reads a tokens file: one "NAME TOKEN" a line; blank lines and
// lines starting with # are skipped.
func loadTokens(path string) (*tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	defer f.Close()
	t := &tokens{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("tokens: %s line %d: want NAME TOKEN", path, n)
		}
		if len(fields[1]) < 16 {
			return nil, fmt.Errorf("tokens: %s line %d: token for %s is shorter than 16 characters", path, n, fields[0])
		}
		t.names = append(t.names, fields[0])
		t.hashes = append(t.hashes, sha256.Sum256([]byte(fields[1])))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	if len(t.names) == 0 {
		return nil, fmt.Errorf("tokens: %s holds no token", path)
	}
	return t, nil
}

// lookup returns the name of token, if it is one of ours.
func (t *tokens) lookup(token string) (string, bool) {
	h := sha256.Sum256([]byte(token))
	found := -1
	for i := range t.hashes {
		if subtle.ConstantTimeCompare(h[:], t.hashes[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return t.names[found], true
}

// bearer returns the token of an "authorization: Bearer TOKEN" header.
func bearer(header metadata.MD) (string, bool) {
	v := header.Get("authorization")
	if len(v) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(v[0], " ")
	return token, ok && strings.EqualFold(scheme, "bearer") && token != ""
}

// tap authenticates each call as its stream opens, before gRPC reads any
// of its request or starts a handler for it: the caller is named by its
// bearer token when tokens are configured (a call without a valid one is
// UNAUTHENTICATED), else by its verified client certificate, else
// anonymous. Health checks need no token. A refused stream also counts
// against its connection's budget of discarded streams; a call that was
// authenticated makes its connection known (see guardedConn).
//
// gRPC runs it on the connection's reading goroutine, holding the
// transport's lock: it must be quick and must not block.
func (s *Server) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	p, _ := peer.FromContext(ctx)
	name := certSubject(p)
	authenticated := true
	if s.tokens != nil {
		if strings.HasPrefix(info.FullMethodName, healthPrefix) {
			// A health check is no authentication: its connection stays
			// unknown.
			authenticated = false
		} else {
			token, ok := bearer(info.Header)
			if ok {
				name, ok = s.tokens.lookup(token)
			}
			if !ok {
				err := status.Error(codes.Unauthenticated, "a valid bearer token is required")
				s.refused(p, info.FullMethodName, "unauthenticated", err)
				return nil, err
			}
		}
	}
	connguard.StreamOpened(p, authenticated)
	if name != "" {
		ctx = service.WithCaller(ctx, name)
	}
	return ctx, nil
}

// healthPrefix starts the method names of the health service.
var healthPrefix = "/" + healthpb.Health_ServiceDesc.ServiceName + "/"

// refused counts and logs a call refused before it ran, and charges its
// connection for the stream. It runs on the connection's reading
// goroutine, and a flood of refused streams must not become a flood of log
// lines that the reader then waits on (the log waits rather than drops):
// the lines are limited to refusalLogRate a second, and a line says how
// many were left out before it. The metric counts every one.
func (s *Server) refused(p *peer.Peer, method, reason string, err error) {
	s.metrics.transportRefusals.WithLabelValues(reason).Inc()
	connguard.RefusedPeer(p)
	if !s.refusalLog.Allow() {
		s.refusalsUnlogged.Add(1)
		return
	}
	attrs := []any{"grpc.method", method, "grpc.code", status.Code(err).String(), "err", err}
	if p != nil {
		attrs = append(attrs, "peer", p.Addr.String())
	}
	if n := s.refusalsUnlogged.Swap(0); n > 0 {
		attrs = append(attrs, "unlogged_before", n)
	}
	s.logger.Warn("call refused", attrs...)
}

// refusalLogRate and refusalLogBurst limit the log lines of refused calls.
const (
	refusalLogRate  = 10
	refusalLogBurst = 100
)
