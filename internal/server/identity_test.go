package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// TestClientIdentities probes a target that requires a client certificate
// from its own CA, presenting an identity the server holds: the right one,
// none, one from another CA, one the caller is not granted, one that does
// not exist.
func TestClientIdentities(t *testing.T) {
	t.Parallel()
	serverCA, clientCA := probetest.NewCA(t), probetest.NewCA(t)
	goodCert, goodKey := probetest.WriteFiles(t, t.TempDir(), clientCA.Issue(t, "billing", false))
	strangerCert, strangerKey := probetest.WriteFiles(t, t.TempDir(), probetest.NewCA(t).Issue(t, "billing", false))
	probedCA := probetest.NewCA(t)
	certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), probedCA.Issue(t, "probed", true))
	srv := probetest.Start(t, withTLS(certFile, keyFile), probetest.WithTokens(t, tokens),
		probetest.WithPolicy("caller alice identity billing", "identity stranger"),
		probetest.WithConfig(func(c *server.Config) {
			c.ClientIdentities = []string{"billing=" + goodCert + "," + goodKey, "stranger=" + strangerCert + "," + strangerKey}
		}))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(clientCA.PEM)
	cfg := &tls.Config{Certificates: []tls.Certificate{serverCA.Issue(t, "localhost", true)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err == nil {
			io.WriteString(tc, "hello "+tc.ConnectionState().PeerCertificates[0].Subject.CommonName+"\n")
		}
		tc.Close()
	})
	dial := func(token string) *client.Client {
		return dialClient(t, srv.Addr, client.WithTLS(&tls.Config{RootCAs: probedCA.Pool}), client.WithBearerToken(token))
	}
	alice, bob := dial(aliceToken), dial(bobToken)
	opts := func(identity string) *client.TLSOptions {
		return &client.TLSOptions{ServerName: "localhost", CABundle: serverCA.PEM, ClientIdentity: identity}
	}
	if _, err := alice.Connect(probetest.Context(t), "tcp", tg.Addr(), client.ConnectOptions{TLS: opts("billing")}); err != nil {
		t.Errorf("alice as billing: %v", err)
	}
	// A Fetch over it loses none of the reply to the wait for a late
	// refusal.
	f, err := alice.Fetch(probetest.Context(t), "tcp", tg.Addr(), client.FetchOptions{TLS: opts("billing")})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(f); err != nil || string(got) != "hello billing\n" {
		t.Errorf("a Fetch as billing: %q, %v", got, err)
	}
	f.Close()
	for _, tc := range []struct {
		caller   *client.Client
		identity string
		code     codes.Code
	}{
		{alice, "", codes.OK},
		{alice, "stranger", codes.OK},
		{bob, "billing", codes.PermissionDenied},
		{alice, "nothing-such", codes.InvalidArgument},
	} {
		_, err := tc.caller.Connect(probetest.Context(t), "tcp", tg.Addr(), client.ConnectOptions{TLS: opts(tc.identity)})
		var pe *client.ProbeError
		switch {
		case tc.code != codes.OK && status.Code(err) != tc.code:
			t.Errorf("identity %q: %v, want %v", tc.identity, err, tc.code)
		case tc.code == codes.OK && (!errors.As(err, &pe) || pe.Stage != client.StageTLSHandshake || pe.Reason != client.ReasonHandshakeFailure):
			t.Errorf("identity %q: %v, want the target's refusal, TLS_HANDSHAKE / HANDSHAKE_FAILURE", tc.identity, err)
		}
	}
}
