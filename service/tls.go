package service

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// maxCABundleBytes caps a request's ca_bundle.
const maxCABundleBytes = 1 << 20

// maxALPNProtocols caps the protocols a request's alpn may offer: clients
// offer two or three (h2, http/1.1), and the ALPN registry holds a few
// dozen in all.
const maxALPNProtocols = 16

// tlsParams is a validated TlsOptions.
type tlsParams struct {
	serverName string
	alpn       []string
	roots      *x509.CertPool // nil: the system's
	skipVerify bool
	// minVersion and maxVersion bound the versions offered.
	minVersion, maxVersion uint16
	// identity names the client certificate to present, and clientCert
	// is it, once the caller has been found to be granted it.
	identity   string
	clientCert *tls.Certificate
}

// tlsVersions maps the API's versions to crypto/tls's.
var tlsVersions = map[netprobev1.TlsVersion]uint16{
	netprobev1.TlsVersion_TLS_VERSION_1_0: tls.VersionTLS10,
	netprobev1.TlsVersion_TLS_VERSION_1_1: tls.VersionTLS11,
	netprobev1.TlsVersion_TLS_VERSION_1_2: tls.VersionTLS12,
	netprobev1.TlsVersion_TLS_VERSION_1_3: tls.VersionTLS13,
}

// tlsVersion is v as crypto/tls has it, or def when unspecified.
func tlsVersion(v *violations, field string, version netprobev1.TlsVersion, def uint16) uint16 {
	if version == netprobev1.TlsVersion_TLS_VERSION_UNSPECIFIED {
		return def
	}
	n, ok := tlsVersions[version]
	if !ok {
		v.add(field, "unknown TLS version %d", version)
		return def
	}
	return n
}

// validateTLS checks opts for target t; nil when no handshake is asked for.
func validateTLS(v *violations, field string, opts *netprobev1.TlsOptions, t target) *tlsParams {
	if opts == nil {
		return nil
	}
	p := &tlsParams{serverName: opts.GetServerName(), alpn: opts.GetAlpn(), skipVerify: opts.GetInsecureSkipVerify(),
		minVersion: tlsVersion(v, field+".min_version", opts.GetMinVersion(), tls.VersionTLS12),
		maxVersion: tlsVersion(v, field+".max_version", opts.GetMaxVersion(), tls.VersionTLS13),
	}
	if p.minVersion > p.maxVersion {
		v.add(field+".min_version", "%s is above max_version %s", tls.VersionName(p.minVersion), tls.VersionName(p.maxVersion))
	}
	if p.identity = opts.GetClientIdentity(); p.identity != "" {
		if msg := checkServiceName(p.identity); msg != "" {
			v.add(field+".client_identity", "%s is not an identity's name: %s", quote(p.identity), msg)
		}
	}
	if p.serverName == "" && !t.literal.IsValid() {
		p.serverName = t.host
	}
	if p.serverName != "" {
		if msg := checkHostName(p.serverName); msg != "" {
			v.add(field+".server_name", "%s is not a valid DNS name: %s", quote(p.serverName), msg)
		}
	}
	if len(p.alpn) > maxALPNProtocols {
		// Refused before its entries are looked at: a request is allowed
		// 65,536 of them (wire.MaxRequestElements).
		v.add(field+".alpn", "%d protocols is over the cap of %d", len(p.alpn), maxALPNProtocols)
	} else {
		for i, proto := range p.alpn {
			if proto == "" || len(proto) > 255 {
				v.add(fmt.Sprintf("%s.alpn[%d]", field, i), "an ALPN protocol is 1 to 255 bytes")
			}
		}
	}
	if b := opts.GetCaBundle(); len(b) > 0 {
		p.roots = x509.NewCertPool()
		switch {
		case len(b) > maxCABundleBytes:
			v.add(field+".ca_bundle", "%d bytes is over the cap of %d", len(b), maxCABundleBytes)
		case !p.roots.AppendCertsFromPEM(b):
			v.add(field+".ca_bundle", "holds no PEM certificate")
		}
	}
	if t.network == "udp" {
		v.add(field, "TLS needs TCP")
	}
	return p
}

// grantIdentity finds the client identity p names, and checks that the
// caller of ctx may present it: an unknown identity is INVALID_ARGUMENT,
// one the caller is not granted PERMISSION_DENIED. Nothing has been
// dialled yet.
func (s *Server) grantIdentity(ctx context.Context, field string, p *tlsParams) error {
	if p == nil || p.identity == "" {
		return nil
	}
	var cert *tls.Certificate
	ok := false
	if s.cfg.ClientIdentities != nil {
		cert, ok = s.cfg.ClientIdentities.Certificate(p.identity)
	}
	if !ok {
		var v violations
		v.add(field+".client_identity", "no client identity %s on this server (probed --client-identity)", quote(p.identity))
		return v.err()
	}
	caller := CallerFrom(ctx)
	if !granted(ctx, p.identity) && !s.cfg.Policy.MayUse(caller, p.identity) {
		if caller == "" {
			// An anonymous caller has no name a caller line could give.
			return status.Errorf(codes.PermissionDenied, "an anonymous caller may not present client identity %s (a policy line \"identity %s\" grants it to anyone)", p.identity, p.identity)
		}
		return status.Errorf(codes.PermissionDenied, "caller %s may not present client identity %s (a policy line \"caller %s identity %s\" grants it)", caller, p.identity, caller, p.identity)
	}
	p.clientCert = cert
	return nil
}

// ClientIdentities are the client certificates probes may present in
// their TLS handshakes, by name.
type ClientIdentities interface {
	// Certificate returns the identity called name.
	Certificate(name string) (*tls.Certificate, bool)
}

// defaultTLS is the handshake of a start_tls step when the request gives
// no options: the target's name, verified against the system's roots.
func defaultTLS(t target) *tlsParams {
	p := &tlsParams{minVersion: tls.VersionTLS12, maxVersion: tls.VersionTLS13}
	if !t.literal.IsValid() {
		p.serverName = t.host
	}
	return p
}

// handshake runs TLS over conn and reports it. It returns the TLS
// connection, or a ProbeError (STAGE_TLS_HANDSHAKE) with whatever the
// handshake learnt in the result.
func handshake(ctx context.Context, conn net.Conn, p *tlsParams, t target, start time.Time) (net.Conn, *netprobev1.TlsResult, *netprobev1.ProbeError) {
	begin := time.Now()
	// The chain is verified below, by hand, so that an inspection
	// (skipVerify) still learns whether it would have verified.
	cfg := &tls.Config{
		ServerName:         p.serverName,
		NextProtos:         p.alpn,
		InsecureSkipVerify: true,
		MinVersion:         p.minVersion,
		MaxVersion:         p.maxVersion,
	}
	asked := false
	if p.clientCert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			asked = true
			return p.clientCert, nil
		}
	} else {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			asked = true
			return &tls.Certificate{}, nil
		}
	}
	tc := tls.Client(conn, cfg)
	err := tc.HandshakeContext(ctx)
	var out net.Conn = tc
	if err == nil && asked && tc.ConnectionState().Version == tls.VersionTLS13 {
		// In TLS 1.3 a server judges the client's certificate after the
		// client's side of the handshake is done: its refusal comes as an
		// alert just after. Wait for it a little.
		out, err = lateAlert(ctx, tc, time.Since(begin))
	}
	res := &netprobev1.TlsResult{HandshakeDuration: durationpb.New(time.Since(begin)), ServerName: p.serverName}
	addr := conn.RemoteAddr().String()
	if err != nil {
		return nil, res, probeError(netprobev1.Stage_STAGE_TLS_HANDSHAKE, addr, err, time.Since(start))
	}
	st := tc.ConnectionState()
	res.Version = tls.VersionName(st.Version)
	res.CipherSuite = tls.CipherSuiteName(st.CipherSuite)
	res.Alpn = st.NegotiatedProtocol
	now := time.Now()
	for _, c := range st.PeerCertificates {
		res.PeerCertificates = append(res.PeerCertificates, certificate(c, now))
	}
	verr := verify(st.PeerCertificates, p, t, now)
	// The TLS phase includes verifying the chain, and so loading the
	// system's roots the first time they are used.
	res.HandshakeDuration = durationpb.New(time.Since(begin))
	res.Verified = verr == nil
	if verr != nil {
		res.VerifyError = verr.Error()
		if !p.skipVerify {
			tc.Close()
			return nil, res, probeError(netprobev1.Stage_STAGE_TLS_HANDSHAKE, addr, verr, time.Since(start))
		}
	}
	return out, res, nil
}

// lateAlert reads from tc for about as long again as the handshake took
// (at least 20 ms, within ctx's deadline), for an alert a TLS 1.3 server
// sends after judging the client's certificate. A byte of data that comes
// instead is kept for the connection's first read.
func lateAlert(ctx context.Context, tc *tls.Conn, took time.Duration) (net.Conn, error) {
	wait := time.Now().Add(max(took, 20*time.Millisecond))
	if d, ok := ctx.Deadline(); ok && d.Before(wait) {
		wait = d
	}
	tc.SetReadDeadline(wait)
	defer tc.SetReadDeadline(time.Time{})
	var b [1]byte
	n, err := tc.Read(b[:])
	switch {
	case n > 0:
		return &peekedConn{Conn: tc, peeked: b[:n]}, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return tc, nil
	case errors.Is(err, io.EOF):
		// The server closed after the handshake: for the exchange to see.
		return &peekedConn{Conn: tc, err: err}, nil
	}
	return nil, err
}

// peekedConn is a connection whose first read returns what was read
// ahead of it.
type peekedConn struct {
	net.Conn
	peeked []byte
	err    error
}

func (c *peekedConn) Read(b []byte) (int, error) {
	if len(c.peeked) > 0 {
		n := copy(b, c.peeked)
		c.peeked = c.peeked[n:]
		return n, nil
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(b)
}

// NetConn is the connection under TLS.
func (c *peekedConn) NetConn() net.Conn { return c.Conn.(*tls.Conn).NetConn() }

// verify checks the chain for the server name (or the IP address), as the
// standard client would have.
func verify(certs []*x509.Certificate, p *tlsParams, t target, now time.Time) error {
	if len(certs) == 0 {
		return errors.New("the peer sent no certificate")
	}
	name := p.serverName
	if name == "" {
		name = t.literal.String()
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{DNSName: name, Roots: p.roots, Intermediates: inter, CurrentTime: now})
	return err
}

func certificate(c *x509.Certificate, now time.Time) *netprobev1.Certificate {
	out := &netprobev1.Certificate{
		Subject:   c.Subject.String(),
		Issuer:    c.Issuer.String(),
		DnsNames:  c.DNSNames,
		Serial:    c.SerialNumber.Text(16),
		NotBefore: timestamppb.New(c.NotBefore),
		NotAfter:  timestamppb.New(c.NotAfter),
		DaysLeft:  int32(c.NotAfter.Sub(now).Hours() / 24),
	}
	sum := sha256.Sum256(c.Raw)
	out.Sha256Fingerprint = hex.EncodeToString(sum[:])
	for _, ip := range c.IPAddresses {
		out.IpAddresses = append(out.IpAddresses, ip.String())
	}
	return out
}
