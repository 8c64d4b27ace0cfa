package exporter

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strconv"
	"sync"

	"github.com/netprobe/netprobe/internal/admission"
)

// knownCredentialsKept bounds the credentials remembered as good.
const knownCredentialsKept = 64

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
	web       *webConfig
	admission *admission.Admission

	mu    sync.Mutex
	known map[[sha256.Size]byte]struct{}
}

func newBasicAuthGuard(web *webConfig, a *admission.Admission) *basicAuthGuard {
	return &basicAuthGuard{web: web, admission: a, known: map[[sha256.Size]byte]struct{}{}}
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
			if _, err := g.admission.Admit(admission.PeerOf(r), admission.Guess); err != nil {
				w.Header().Set("Retry-After", strconv.Itoa(int(1/admission.BasicAuthRate)))
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
