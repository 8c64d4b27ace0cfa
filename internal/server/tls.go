package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/netprobe/netprobe/internal/connguard"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/internal/reload"
)

// certificate is a certificate and its key, loaded again (reload) when
// their files change, on SIGHUP or on POST /-/reload (see
// internal/reload), so that a renewed certificate takes effect without a
// restart.
type certificate struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

// file is c as probed's files keep it current, named name.
func (c *certificate) file(name string) reload.File {
	return reload.File{Name: name, Paths: []string{c.certFile, c.keyFile}, Load: c.reload}
}

// reload reads the files; on failure the certificate in use stays.
func (c *certificate) reload() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("%s, %s: %w", c.certFile, c.keyFile, err)
	}
	c.cert.Store(&cert)
	return nil
}

// get returns the certificate in use.
func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cert.Load(), nil
}

// serverTLS returns the transport credentials for TLS with cert, requiring
// a client certificate signed by the CAs in clientCAFile when it is set.
func serverTLS(cert *certificate, clientCAFile string) (credentials.TransportCredentials, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cert.get}
	if clientCAFile != "" {
		pem, err := reload.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client CA: no certificate in %s", clientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(cfg), nil
}

// tlsState is the TLS state of p's connection, or nil.
func tlsState(p *peer.Peer) *tls.ConnectionState {
	if p == nil {
		return nil
	}
	info, ok := connguard.AuthInfo(p.AuthInfo).(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return &info.State
}

// identities are the client certificates probes may present, by name,
// each reloaded as the server's own is.
type identities map[string]*certificate

// parseIdentities reads --client-identity values, NAME=CERT,KEY; probed's
// files load them (see New).
func parseIdentities(specs []string) (identities, error) {
	out := identities{}
	for _, spec := range specs {
		name, files, ok := strings.Cut(spec, "=")
		certFile, keyFile, ok2 := strings.Cut(files, ",")
		if !ok || !ok2 || name == "" || certFile == "" || keyFile == "" {
			return nil, fmt.Errorf("client identity %q: want NAME=CERT,KEY", spec)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("client identity %s is given twice", name)
		}
		if strings.HasPrefix(name, modules.IdentityPrefix) {
			return nil, fmt.Errorf("client identity %s: names starting %q are the modules' certificates", name, modules.IdentityPrefix)
		}
		out[name] = &certificate{certFile: certFile, keyFile: keyFile}
	}
	return out, nil
}

// Certificate implements service.ClientIdentities.
func (ids identities) Certificate(name string) (*tls.Certificate, bool) {
	c, ok := ids[name]
	if !ok {
		return nil, false
	}
	return c.cert.Load(), true
}

// clientIdentities are the client certificates probes may present: the
// server's (--client-identity), and its modules' ("module/NAME").
type clientIdentities struct {
	ids     identities
	modules *modules.Store
}

func (c clientIdentities) Certificate(name string) (*tls.Certificate, bool) {
	if strings.HasPrefix(name, modules.IdentityPrefix) {
		return c.modules.Certificate(name)
	}
	return c.ids.Certificate(name)
}
