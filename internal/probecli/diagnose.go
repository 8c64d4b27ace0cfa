package probecli

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/service"
)

// TLS alerts a server sends a client that gave no certificate it wants.
const (
	alertBadCertificate      = 42
	alertCertificateRequired = 116
)

// diagnose looks again at a --server that a call could not reach, to say
// what gRPC's UNAVAILABLE does not: that the server speaks TLS to a client
// that did not, or wants a client certificate the client did not give. It
// opens one connection of its own and sends nothing but a TLS handshake,
// no token. It returns err, or a clearer error for the same failure.
func (a *app) diagnose(ctx context.Context, err error) error {
	if status.Code(err) != codes.Unavailable {
		return err
	}
	if _, _, splitErr := net.SplitHostPort(a.server); splitErr != nil {
		// unix:, dns:///: nothing to say of those here.
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.ServerTimeout)
	defer cancel()
	askedTLS := a.TLS || a.CAFile != "" || a.CertFile != ""
	switch {
	case !askedTLS:
		// Whether the server completes a TLS handshake at all: its
		// certificate is not the question, so it is not verified, and
		// nothing else is sent on the connection.
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}}
		conn, herr := d.DialContext(ctx, "tcp", a.server)
		if herr != nil {
			return err
		}
		conn.Close()
		return exitError{exitUnavailable, fmt.Sprintf("%s serves TLS, and this was plaintext: give --tls, and --ca-file when its certificate is not signed by a CA this machine trusts", a.serverName())}
	case a.CertFile == "":
		cfg, cerr := a.tlsConfig()
		if cerr != nil {
			return err
		}
		cfg.NextProtos = []string{"h2"}
		d := tls.Dialer{Config: cfg}
		conn, herr := d.DialContext(ctx, "tcp", a.server)
		if herr == nil {
			// TLS 1.3 sends the server's refusal of the client's
			// (missing) certificate after the client's handshake is done:
			// it is the first thing read.
			conn.SetReadDeadline(time.Now().Add(a.ServerTimeout))
			_, herr = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if alert, ok := service.PeerAlert(herr); ok && (alert == alertCertificateRequired || alert == alertBadCertificate) {
			return exitError{exitRejected, fmt.Sprintf("%s requires a client certificate: give --cert-file and --key-file", a.serverName())}
		}
	}
	return err
}
