package client

import (
	"crypto/tls"
	"time"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// TLSOptions asks for a TLS handshake with the target once connected.
type TLSOptions struct {
	// ServerName is sent as SNI and verified; empty is the target's host
	// when that is a name.
	ServerName string
	// ALPN lists the application protocols to offer.
	ALPN []string
	// CABundle holds PEM certificates to trust instead of the probe
	// server's system roots.
	CABundle []byte
	// InsecureSkipVerify completes the handshake whatever the chain, for
	// inspection; the result still says whether it verified.
	InsecureSkipVerify bool
	// MinVersion and MaxVersion bound the TLS versions offered, as
	// crypto/tls's constants (tls.VersionTLS12); zero is TLS 1.2 and 1.3.
	MinVersion, MaxVersion uint16
	// ClientIdentity names a client certificate configured on the probe
	// server (probed --client-identity), to present when asked.
	ClientIdentity string
}

// tlsVersions maps crypto/tls's versions to the API's.
var tlsVersions = map[uint16]netprobev1.TlsVersion{
	tls.VersionTLS10: netprobev1.TlsVersion_TLS_VERSION_1_0,
	tls.VersionTLS11: netprobev1.TlsVersion_TLS_VERSION_1_1,
	tls.VersionTLS12: netprobev1.TlsVersion_TLS_VERSION_1_2,
	tls.VersionTLS13: netprobev1.TlsVersion_TLS_VERSION_1_3,
}

func (o *TLSOptions) proto() *netprobev1.TlsOptions {
	if o == nil {
		return nil
	}
	return &netprobev1.TlsOptions{ServerName: o.ServerName, Alpn: o.ALPN, CaBundle: o.CABundle, InsecureSkipVerify: o.InsecureSkipVerify,
		MinVersion: tlsVersions[o.MinVersion], MaxVersion: tlsVersions[o.MaxVersion], ClientIdentity: o.ClientIdentity}
}

// TLSResult is what the handshake found.
type TLSResult struct {
	// HandshakeDuration is how long the handshake took.
	HandshakeDuration time.Duration
	// Version ("TLS 1.3"), CipherSuite and ALPN are what was negotiated.
	Version, CipherSuite, ALPN string
	// ServerName is the name sent and verified against.
	ServerName string
	// Chain is the peer's certificates, leaf first.
	Chain []Certificate
	// Verified is true when the chain verified; VerifyError says why not.
	Verified    bool
	VerifyError string
}

// Certificate describes one certificate of a chain.
type Certificate struct {
	Subject, Issuer     string
	DNSNames, IPs       []string
	Serial              string
	NotBefore, NotAfter time.Time
	// DaysLeft is the whole days left before NotAfter at the probe.
	DaysLeft int
	// SHA256 is the SHA-256 fingerprint of the certificate, in hex.
	SHA256 string
}

func newTLSResult(r *netprobev1.TlsResult) *TLSResult {
	if r == nil {
		return nil
	}
	out := &TLSResult{
		HandshakeDuration: r.GetHandshakeDuration().AsDuration(),
		Version:           r.GetVersion(),
		CipherSuite:       r.GetCipherSuite(),
		ALPN:              r.GetAlpn(),
		ServerName:        r.GetServerName(),
		Verified:          r.GetVerified(),
		VerifyError:       r.GetVerifyError(),
	}
	for _, c := range r.GetPeerCertificates() {
		out.Chain = append(out.Chain, Certificate{
			Subject:   c.GetSubject(),
			Issuer:    c.GetIssuer(),
			DNSNames:  c.GetDnsNames(),
			IPs:       c.GetIpAddresses(),
			Serial:    c.GetSerial(),
			NotBefore: c.GetNotBefore().AsTime(),
			NotAfter:  c.GetNotAfter().AsTime(),
			DaysLeft:  int(c.GetDaysLeft()),
			SHA256:    c.GetSha256Fingerprint(),
		})
	}
	return out
}
