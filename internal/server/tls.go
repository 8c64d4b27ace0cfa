package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/netprobe/netprobe/internal/connguard"
	"github.com/netprobe/netprobe/internal/modules"
)

// certificate holds the server's certificate and loads it again when its
// files change (checked at most once a second, on a handshake) or when
// asked to (SIGHUP), so that a renewed certificate takes effect without a
// restart.
type certificate struct {
	certFile, keyFile string
	logger            *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]time.Time // the files' modification times when loaded
	checked time.Time
}

func loadCertificate(certFile, keyFile string, logger *slog.Logger) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile, logger: logger}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the files; on failure the certificate in use stays.
func (c *certificate) reload() error {
	stamp, err := c.stamps()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cert, c.stamp = &cert, stamp
	return nil
}

func (c *certificate) stamps() ([2]time.Time, error) {
	var stamp [2]time.Time
	for i, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return stamp, fmt.Errorf("tls: %w", err)
		}
		stamp[i] = fi.ModTime()
	}
	return stamp, nil
}

// get returns the certificate, reloading it first if the files changed.
func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	due := time.Since(c.checked) > time.Second
	if due {
		c.checked = time.Now()
	}
	stamp := c.stamp
	c.mu.Unlock()
	if due {
		if now, err := c.stamps(); err == nil && now != stamp {
			if err := c.reload(); err != nil {
				c.logger.Error("reloading the TLS certificate failed; keeping the old one", "err", err)
			} else {
				c.logger.Info("reloaded the TLS certificate", "file", c.certFile)
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert, nil
}

// serverTLS returns the transport credentials for TLS with cert, requiring
// a client certificate signed by the CAs in clientCAFile when it is set.
func serverTLS(cert *certificate, clientCAFile string) (credentials.TransportCredentials, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cert.get}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
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

// loadIdentities reads --client-identity values: NAME=CERT,KEY.
func loadIdentities(specs []string, logger *slog.Logger) (identities, error) {
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
		c, err := loadCertificate(certFile, keyFile, logger)
		if err != nil {
			return nil, fmt.Errorf("client identity %s: %w", name, err)
		}
		out[name] = c
	}
	return out, nil
}

// Certificate implements service.ClientIdentities.
func (ids identities) Certificate(name string) (*tls.Certificate, bool) {
	c, ok := ids[name]
	if !ok {
		return nil, false
	}
	cert, _ := c.get(nil)
	return cert, true
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
