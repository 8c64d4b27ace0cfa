package service_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// tlsTarget serves TLS with cfg on loopback: each connection completes the
// handshake (or fails it) and closes.
func tlsTarget(t *testing.T, cfg *tls.Config) uint32 {
	t.Helper()
	return probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, cfg)
		tc.SetDeadline(time.Now().Add(probetest.Timeout))
		tc.Handshake()
		tc.Close()
	}).Port()
}

func validFor(from, to time.Duration) func(*x509.Certificate) {
	return func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(from), time.Now().Add(to)
	}
}

// TestConnectTLS checks a TLS handshake's result and each reason it fails
// for, against certificates made here.
func TestConnectTLS(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	ca := probetest.NewCA(t)
	day := 24 * time.Hour
	serve := func(cfg *tls.Config) uint32 { return tlsTarget(t, cfg) }
	cert := func(changes ...func(*x509.Certificate)) []tls.Certificate {
		return []tls.Certificate{ca.Issue(t, "probed-target", true, changes...)}
	}
	valid := serve(&tls.Config{Certificates: cert(validFor(-time.Hour, 30*day+time.Hour)), NextProtos: []string{"http/1.1"}})
	expired := serve(&tls.Config{Certificates: cert(validFor(-2*day, -day))})
	notYet := serve(&tls.Config{Certificates: cert(validFor(day, 2*day))})
	tls10 := serve(&tls.Config{Certificates: cert(), MaxVersion: tls.VersionTLS10})
	h2 := serve(&tls.Config{Certificates: cert(), NextProtos: []string{"h2"}})
	// Only an RSA key exchange, which Go's client no longer offers: the
	// server finds no suite in common and says handshake_failure.
	noSuite := serve(&tls.Config{Certificates: cert(), MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}})

	tests := []struct {
		name    string
		port    uint32
		opts    *netprobev1.TlsOptions
		reason  netprobev1.Reason // unset: success
		check   func(t *testing.T, r *netprobev1.TlsResult)
		noChain bool
	}{
		{
			name: "valid",
			port: valid,
			opts: &netprobev1.TlsOptions{ServerName: "localhost", CaBundle: ca.PEM, Alpn: []string{"h2", "http/1.1"}},
			check: func(t *testing.T, r *netprobev1.TlsResult) {
				c := r.GetPeerCertificates()
				if !r.GetVerified() || r.GetVerifyError() != "" || r.GetVersion() != "TLS 1.3" || r.GetCipherSuite() == "" || r.GetAlpn() != "http/1.1" || r.GetServerName() != "localhost" || r.GetHandshakeDuration() == nil {
					t.Errorf("result %v", r)
				}
				if len(c) != 1 || c[0].GetSubject() != "CN=probed-target" || c[0].GetIssuer() != "CN=netprobe test CA" || c[0].GetDaysLeft() != 30 ||
					len(c[0].GetDnsNames()) != 1 || c[0].GetDnsNames()[0] != "localhost" || len(c[0].GetIpAddresses()) != 1 || c[0].GetIpAddresses()[0] != "127.0.0.1" || c[0].GetSerial() == "" {
					t.Errorf("chain %v", c)
				}
			},
		},
		{
			name: "IP address, no SNI",
			port: valid,
			opts: &netprobev1.TlsOptions{CaBundle: ca.PEM},
			check: func(t *testing.T, r *netprobev1.TlsResult) {
				if !r.GetVerified() || r.GetServerName() != "" || r.GetAlpn() != "" {
					t.Errorf("result %v", r)
				}
			},
		},
		{name: "expired", port: expired, opts: &netprobev1.TlsOptions{CaBundle: ca.PEM}, reason: netprobev1.Reason_REASON_CERTIFICATE_EXPIRED},
		{name: "not yet valid", port: notYet, opts: &netprobev1.TlsOptions{CaBundle: ca.PEM}, reason: netprobev1.Reason_REASON_CERTIFICATE_NOT_YET_VALID},
		{name: "wrong host", port: valid, opts: &netprobev1.TlsOptions{ServerName: "other.test", CaBundle: ca.PEM}, reason: netprobev1.Reason_REASON_HOSTNAME_MISMATCH},
		{name: "unknown CA", port: valid, opts: &netprobev1.TlsOptions{}, reason: netprobev1.Reason_REASON_UNKNOWN_AUTHORITY},
		{
			name: "unknown CA, inspected",
			port: valid,
			opts: &netprobev1.TlsOptions{InsecureSkipVerify: true},
			check: func(t *testing.T, r *netprobev1.TlsResult) {
				if r.GetVerified() || r.GetVerifyError() == "" || len(r.GetPeerCertificates()) != 1 {
					t.Errorf("an inspection of an untrusted chain: %v", r)
				}
			},
		},
		{name: "TLS 1.0 only", port: tls10, opts: &netprobev1.TlsOptions{CaBundle: ca.PEM}, reason: netprobev1.Reason_REASON_PROTOCOL_VERSION, noChain: true},
		{name: "no cipher suite in common", port: noSuite, opts: &netprobev1.TlsOptions{CaBundle: ca.PEM}, reason: netprobev1.Reason_REASON_HANDSHAKE_FAILURE, noChain: true},
		{
			name: "ALPN h2",
			port: h2,
			opts: &netprobev1.TlsOptions{CaBundle: ca.PEM, Alpn: []string{"h2", "http/1.1"}},
			check: func(t *testing.T, r *netprobev1.TlsResult) {
				if r.GetAlpn() != "h2" {
					t.Errorf("ALPN %q, want h2", r.GetAlpn())
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: tcpTarget(tt.port), Tls: tt.opts})
			if err != nil {
				t.Fatal(err)
			}
			if tt.reason == 0 {
				checkError(t, resp.GetError(), nil)
			} else {
				checkError(t, resp.GetError(), &wantError{stage: netprobev1.Stage_STAGE_TLS_HANDSHAKE, reason: tt.reason})
				if r := resp.GetTls(); r.GetVerified() || (!tt.noChain && len(r.GetPeerCertificates()) == 0) {
					t.Errorf("a failed handshake's result %v: want the chain it saw, unverified", r)
				}
			}
			if tt.check != nil {
				tt.check(t, resp.GetTls())
			}
		})
	}
}

// TestSweepTLS checks that each probe of a sweep entry with TLS options
// reports its handshake.
func TestSweepTLS(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	ca := probetest.NewCA(t)
	port := tlsTarget(t, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "x", true)}})
	results, err := sweep(probetest.Context(t), t, e.Probe, &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{
		{Target: tcpTarget(port), Tls: &netprobev1.TlsOptions{ServerName: "localhost", CaBundle: ca.PEM}},
		{Target: tcpTarget(port), Tls: &netprobev1.TlsOptions{ServerName: "nope.test", CaBundle: ca.PEM}},
	}})
	if err != nil || len(results) != 2 {
		t.Fatalf("Sweep: %d results, %v", len(results), err)
	}
	for _, r := range results {
		want := r.GetIndex() == 0
		if r.GetConnect().GetTls().GetVerified() != want || (r.GetConnect().GetError() == nil) != want {
			t.Errorf("entry %d: %v", r.GetIndex(), r.GetConnect())
		}
	}
}

// TestFetchTLS fetches over TLS: an HTTP GET crosses the TLS stream, and a
// failed verification ends the fetch before anything is sent.
func TestFetchTLS(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	ca := probetest.NewCA(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "web", true)}}
	got := make(chan []byte, 2)
	port := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, cfg)
		req, err := probetest.ReadAll(tc)
		got <- req
		if err == nil {
			tc.Write([]byte("HTTP/1.0 200 OK\r\n\r\nhello over TLS\n"))
		}
		tc.Close()
	}).Port()

	f := fetch(t, e.Probe, &netprobev1.FetchRequest{
		Target:  tcpTarget(port),
		Request: &netprobev1.FetchRequest_HttpGet{HttpGet: &netprobev1.HttpGet{Path: "/"}},
		Tls:     &netprobev1.TlsOptions{ServerName: "localhost", CaBundle: ca.PEM},
	})
	f.check(t, nil, netprobev1.EndReason_END_REASON_EOF, []string{"HTTP/1.0 200 OK\r\n\r\nhello over TLS\n"})
	if !f.connect.GetTls().GetVerified() || f.connect.GetTls().GetVersion() != "TLS 1.3" {
		t.Errorf("the connect message's TLS: %v", f.connect.GetTls())
	}
	if req := <-got; string(req) != "GET / HTTP/1.0\r\n\r\n" {
		t.Errorf("the server read %q", req)
	}

	f = fetch(t, e.Probe, &netprobev1.FetchRequest{
		Target:  tcpTarget(port),
		Request: &netprobev1.FetchRequest_Payload{Payload: []byte("secret")},
		Tls:     &netprobev1.TlsOptions{ServerName: "other.test", CaBundle: ca.PEM},
	})
	// Like a failed connect: the connect message and the summary both carry
	// the error, and nothing was sent.
	want := &wantError{stage: netprobev1.Stage_STAGE_TLS_HANDSHAKE, reason: netprobev1.Reason_REASON_HOSTNAME_MISMATCH}
	checkError(t, f.connect.GetError(), want)
	checkError(t, f.summary.GetError(), want)
	if f.summary.GetEndReason() != netprobev1.EndReason_END_REASON_ERROR || len(f.data) != 0 || f.summary.GetBytesSent() != 0 {
		t.Errorf("sent %d bytes to a server that failed verification", f.summary.GetBytesSent())
	}
}
