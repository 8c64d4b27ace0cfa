package server

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strconv"
	"sync"
)

// The budget of basic auth attempts each source has (an IPv4 address or
// IPv6 /64): exporter-toolkit checks a password it has not seen with
// bcrypt, 50 to 100 ms of CPU each, and a flood of wrong ones would
// otherwise cost a core.
const (
	// basicAuthBurst attempts at once, then one every
	// 1/basicAuthRate seconds.
	basicAuthBurst = 5
	basicAuthRate  = 0.2
	// knownCredentialsKept bounds the credentials remembered as good.
	knownCredentialsKept = 64
)

// basicAuthGuard stands in front of exporter-toolkit's basic auth, which
// runs bcrypt on every password it has not seen: a request carrying
// credentials that have not passed before is charged to its source's
// budget first, and refused with 429 once that is spent, without the
// hash. 429 rather than 401: the password may be right, and a client told
// it is wrong would give up or page someone instead of waiting.
// Credentials that have passed are remembered (as their SHA-256) and never
// charged, so that a Prometheus behind the same address as an attacker
// keeps scraping.
type basicAuthGuard struct {
	web   *webConfig
	rates *rateLimiter

	mu    sync.Mutex
	known map[[sha256.Size]byte]struct{}
}

func newBasicAuthGuard(web *webConfig, m *metrics) *basicAuthGuard {
	return &basicAuthGuard{web: web, rates: newRateLimiter("basic_auth", basicAuthRate, basicAuthBurst, m),
		known: map[[sha256.Size]byte]struct{}{}}
}

// passedKey marks the context of a request the guard let through with a
// flag that the handler behind exporter-toolkit sets: the credentials
// passed.
type passedKey struct{}

// wrap puts the guard in front of next, exporter-toolkit's handler.
func (g *basicAuthGuard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || !g.web.hasUsers() {
			next.ServeHTTP(w, r)
			return
		}
		key := sha256.Sum256([]byte(strconv.Quote(user) + ":" + pass))
		if !g.isKnown(key) {
			if err := g.rates.Limit(withPeer(r)); err != nil {
				w.Header().Set("Retry-After", strconv.Itoa(int(1/basicAuthRate)))
				http.Error(w, "too many basic auth attempts from this address; try again later", http.StatusTooManyRequests)
				return
			}
		}
		passed := false
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), passedKey{}, &passed)))
		g.remember(key, passed)
	})
}

// markPassed wraps the handler exporter-toolkit serves once the
// credentials passed, telling the guard so.
func markPassed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, ok := r.Context().Value(passedKey{}).(*bool); ok {
			*p = true
		}
		h.ServeHTTP(w, r)
	})
}

func (g *basicAuthGuard) isKnown(key [sha256.Size]byte) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.known[key]
	return ok
}

// remember keeps credentials that passed, and forgets those that no
// longer do (a password changed in the web configuration).
func (g *basicAuthGuard) remember(key [sha256.Size]byte, passed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !passed {
		delete(g.known, key)
		return
	}
	if _, ok := g.known[key]; ok {
		return
	}
	if len(g.known) >= knownCredentialsKept {
		for k := range g.known {
			delete(g.known, k)
			break
		}
	}
	g.known[key] = struct{}{}
}
