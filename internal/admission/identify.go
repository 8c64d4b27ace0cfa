package admission

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/asn1"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/internal/reload"
)

// Credentials are what a call presents to name its caller, however it
// came in: gRPC's metadata and connection, or an HTTP request.
type Credentials struct {
	// Authorization holds the values of the call's authorization header
	// (gRPC metadata, or HTTP's Authorization).
	Authorization []string
	// BasicUser is the HTTP basic auth user that exporter-toolkit has
	// verified against the metrics listener's web configuration: set only
	// when that has users, so that a name a request merely claims is no
	// identity.
	BasicUser string
	// TLS is the connection's TLS state, or nil: a verified client
	// certificate names its caller.
	TLS *tls.ConnectionState
	// TokenOptional says that the call needs no token even when tokens
	// are required: a health check.
	TokenOptional bool
	// OnBehalfOf are the names a call forwarded by a peer of a fleet gives
	// its original caller (fleet.CallerHeader): one, honoured from a peer
	// (Config.Peers) alone.
	OnBehalfOf []string
}

// maxForwardedName bounds the name a peer forwards.
const maxForwardedName = 256

// ErrUnauthenticated refuses a call that needed a valid bearer token and
// had none: UNAUTHENTICATED in gRPC, 401 in HTTP.
var ErrUnauthenticated = status.Error(codes.Unauthenticated, "a valid bearer token is required")

// Identity is who a call is for: its caller's name ("" for an anonymous
// caller, which the limits count by its address), and, for a call a peer
// of a fleet forwarded, that peer's.
type Identity struct {
	Caller, ForwardedBy string
}

// Identify names the caller of a call presenting c, the same way for every
// way in: the basic auth user, when there is one; else, when tokens are
// required and the call needs one, the name of its bearer token (one
// "authorization: Bearer TOKEN", the scheme in any case, or
// ErrUnauthenticated); else its verified client certificate's common name,
// or its whole subject when it has none; else "", an anonymous caller,
// which the limits count by its address. A call a peer of a fleet
// forwards (OnBehalfOf) is the original caller's, as the peer names it;
// such a name from anyone but a peer (Config.Peers) is PERMISSION_DENIED.
func (a *Admission) Identify(c Credentials) (Identity, error) {
	name, err := a.identify(c)
	if err != nil || len(c.OnBehalfOf) == 0 {
		return Identity{Caller: name}, err
	}
	switch fwd := c.OnBehalfOf[0]; {
	case name == "" || !slices.Contains(a.peers, name):
		return Identity{}, status.Errorf(codes.PermissionDenied, "only a peer of this node (probed --peer) may name the caller it forwards a call for; %s is not one", describeCaller(name))
	case len(c.OnBehalfOf) > 1 || fwd == "" || len(fwd) > maxForwardedName || !utf8.ValidString(fwd) || strings.ContainsFunc(fwd, unicode.IsControl):
		return Identity{}, status.Errorf(codes.PermissionDenied, "peer %s forwarded no valid caller name: one of at most %d bytes of text", name, maxForwardedName)
	default:
		return Identity{Caller: fwd, ForwardedBy: name}, nil
	}
}

// describeCaller names a caller in a refusal.
func describeCaller(name string) string {
	if name == "" {
		return "an anonymous caller"
	}
	return "caller " + name
}

// identify names the caller c's own credentials name.
func (a *Admission) identify(c Credentials) (string, error) {
	if c.BasicUser != "" {
		return c.BasicUser, nil
	}
	if t := a.tokens.Load(); t != nil && !c.TokenOptional {
		token, ok := bearer(c.Authorization)
		if ok {
			if name, known := t.lookup(token); known {
				return name, nil
			}
		}
		a.unauthenticated()
		return "", ErrUnauthenticated
	}
	return certSubject(c.TLS)
}

// Tokens reports whether callers need a bearer token.
func (a *Admission) Tokens() bool { return a.tokens.Load() != nil }

// ReloadTokens reads the tokens file again, and puts its tokens in use
// whole; on failure the tokens in use stay. Without a tokens file it does
// nothing.
func (a *Admission) ReloadTokens() error {
	if a.tokensFile == "" {
		return nil
	}
	t, err := loadTokens(a.tokensFile)
	if err != nil {
		return err
	}
	a.tokens.Store(t)
	return nil
}

// bearer returns the token of the one "Bearer TOKEN" value of an
// authorization header: the scheme in any case (RFC 9110), spaces around
// the token dropped.
func bearer(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	return token, ok && strings.EqualFold(scheme, "bearer") && token != ""
}

// certSubject is a verified client certificate's subject: its common
// name, or the whole subject when it has none; "" without a certificate.
// A certificate with an empty subject names no one, and one with several
// common names is ambiguous (Go reads the last, other tools the first):
// either is refused rather than served as anonymous or as a guess.
func certSubject(cs *tls.ConnectionState) (string, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", nil
	}
	subject := cs.VerifiedChains[0][0].Subject
	cns := 0
	for _, n := range subject.Names {
		if n.Type.Equal(oidCommonName) {
			cns++
		}
	}
	switch {
	case cns > 1:
		return "", status.Errorf(codes.Unauthenticated, "the client certificate has %d common names: one names its holder", cns)
	case subject.CommonName != "":
		return subject.CommonName, nil
	case len(subject.Names) == 0:
		return "", status.Error(codes.Unauthenticated, "the client certificate names no one: its subject is empty")
	}
	return subject.String(), nil
}

// oidCommonName is the common name's attribute type (X.520).
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

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
	b, err := reload.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t := &tokens{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s: line %d: want NAME TOKEN", path, n)
		}
		if len(fields[1]) < 16 {
			return nil, fmt.Errorf("%s: line %d: the token of %s is shorter than 16 characters", path, n, fields[0])
		}
		t.names = append(t.names, fields[0])
		t.hashes = append(t.hashes, sha256.Sum256([]byte(fields[1])))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(t.names) == 0 {
		return nil, fmt.Errorf("%s: no token", path)
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
