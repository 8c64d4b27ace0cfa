package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// maxCABundleBytes caps a request's ca_bundle.
const maxCABundleBytes = 1 << 20

// tlsParams is a validated TlsOptions.
type tlsParams struct {
	serverName string
	alpn       []string
	roots      *x509.CertPool // nil: the system's
	skipVerify bool
	// minVersion and maxVersion bound the versions offered.
	minVersion, maxVersion uint16
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
	if opts.GetClientIdentity() != "" {
		v.add(field+".client_identity", "this server has no client identities")
	}
	if p.serverName == "" && !t.literal.IsValid() {
		p.serverName = t.host
	}
	if p.serverName != "" {
		if msg := checkHostName(p.serverName); msg != "" {
			v.add(field+".server_name", "%q is not a valid DNS name: %s", p.serverName, msg)
		}
	}
	for i, proto := range p.alpn {
		if proto == "" || len(proto) > 255 {
			v.add(fmt.Sprintf("%s.alpn[%d]", field, i), "an ALPN protocol is 1 to 255 bytes")
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
func handshake(ctx context.Context, conn net.Conn, p *tlsParams, t target, start time.Time) (*tls.Conn, *netprobev1.TlsResult, *netprobev1.ProbeError) {
	begin := time.Now()
	// The chain is verified below, by hand, so that an inspection
	// (skipVerify) still learns whether it would have verified.
	tc := tls.Client(conn, &tls.Config{
		ServerName:         p.serverName,
		NextProtos:         p.alpn,
		InsecureSkipVerify: true,
		MinVersion:         p.minVersion,
		MaxVersion:         p.maxVersion,
	})
	err := tc.HandshakeContext(ctx)
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
	return tc, res, nil
}

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
	for _, ip := range c.IPAddresses {
		out.IpAddresses = append(out.IpAddresses, ip.String())
	}
	return out
}
