package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// authenticate names the caller: by its bearer token when tokens are
// configured (a call without a valid one is UNAUTHENTICATED), else by its
// verified client certificate, else anonymous.
func authenticate(toks *tokens) auth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		name := certSubject(ctx)
		if toks != nil {
			token, err := auth.AuthFromMD(ctx, "bearer")
			if err != nil {
				return nil, err
			}
			var ok bool
			if name, ok = toks.lookup(token); !ok {
				return nil, status.Error(codes.Unauthenticated, "unknown bearer token")
			}
		}
		if name != "" {
			ctx = service.WithCaller(ctx, name)
		}
		return ctx, nil
	}
}
