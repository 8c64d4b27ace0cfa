package client_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// start runs a probe server for one test and returns a client of it.
func start(t *testing.T, opts ...probetest.Option) (*client.Client, *probetest.Server) {
	t.Helper()
	srv := probetest.Start(t, opts...)
	return client.New(srv.Conn), srv
}

func TestConnect(t *testing.T) {
	t.Parallel()
	c, _ := start(t)
	tg := probetest.Listen(t, "127.0.0.1:0", nil)

	res, err := c.Connect(probetest.Context(t), "tcp", tg.Addr(), client.ConnectOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	var accepted net.Conn
	select {
	case accepted = <-tg.Accepted:
	case <-time.After(probetest.Timeout):
		t.Fatal("the target accepted nothing")
	}
	if got, want := res.RemoteAddr.String(), tg.Addr(); got != want {
		t.Errorf("RemoteAddr = %s, want %s", got, want)
	}
	if got, want := res.LocalAddr.String(), accepted.RemoteAddr().String(); got != want {
		t.Errorf("LocalAddr = %s, want the target's peer %s", got, want)
	}
	if res.Port != uint16(tg.Port()) {
		t.Errorf("Port = %d, want %d", res.Port, tg.Port())
	}
	if diff := cmp.Diff([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, res.Resolved, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Resolved (-want +got):\n%s", diff)
	}
	if len(res.Attempts) != 1 || res.Attempts[0].Addr != res.RemoteAddr || res.Attempts[0].Err != nil || res.Attempts[0].Abandoned {
		t.Errorf("Attempts = %+v, want one that connected to %s", res.Attempts, res.RemoteAddr)
	}
	if res.ConnectDuration <= 0 || res.TotalDuration < res.ConnectDuration {
		t.Errorf("ConnectDuration %v, TotalDuration %v: want 0 < connect <= total", res.ConnectDuration, res.TotalDuration)
	}
	if res.Proto().GetPeerAddress() != tg.Addr() {
		t.Errorf("Proto().PeerAddress = %q, want %q", res.Proto().GetPeerAddress(), tg.Addr())
	}
}

func TestConnectReverseLookup(t *testing.T) {
	t.Parallel()
	c, srv := start(t)
	// 127.0.0.2: 127.0.0.1 would be answered from the hosts file.
	srv.DNS.SetPTR(netip.MustParseAddr("127.0.0.2"), "target.test")
	tg := probetest.Listen(t, "127.0.0.2:0", nil)

	res, err := c.Connect(probetest.Context(t), "tcp", tg.Addr(), client.ConnectOptions{ReverseLookup: true})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if rl := res.ReverseLookup; rl == nil || rl.Err != nil || !cmp.Equal(rl.Names, []string{"target.test."}) {
		t.Errorf("ReverseLookup = %+v, want the name target.test.", rl)
	}
}

// TestProbeErrors checks that each failed probe comes back as a
// *ProbeError with its stage, reason and errno, and reads like a net error.
func TestProbeErrors(t *testing.T) {
	t.Parallel()
	c, srv := start(t)
	srv.DNS.Drop("silent.test")
	closed := fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))
	ca := probetest.NewCA(t)
	mtls := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "localhost", true)}, ClientAuth: tls.RequireAnyClientCert})
		tc.Handshake()
		tc.Close()
	})

	tests := []struct {
		name    string
		address string
		opts    client.ConnectOptions
		stage   client.Stage
		reason  client.Reason
		errno   syscall.Errno
		text    string
	}{
		{
			name:    "refused",
			address: closed,
			stage:   client.StageConnect,
			reason:  client.ReasonRefused,
			errno:   syscall.ECONNREFUSED,
			text:    "connect " + closed + ": connection refused (stage CONNECT, reason REFUSED, errno ECONNREFUSED)",
		},
		{
			name:    "no such host",
			address: "nosuch.test:80",
			stage:   client.StageResolve,
			reason:  client.ReasonNoSuchHost,
			text:    "resolve nosuch.test: no such host (stage RESOLVE, reason NO_SUCH_HOST)",
		},
		{
			name:    "unknown service",
			address: "127.0.0.1:np-nosuch",
			stage:   client.StageServiceLookup,
			reason:  client.ReasonUnknownService,
			text:    "service lookup np-nosuch: unknown service (stage SERVICE_LOOKUP, reason UNKNOWN_SERVICE)",
		},
		{
			name:    "resolve timeout",
			address: "silent.test:80",
			opts:    client.ConnectOptions{Timeout: 300 * time.Millisecond},
			stage:   client.StageResolve,
			reason:  client.ReasonTimeout,
			text:    "resolve silent.test: timed out (stage RESOLVE, reason TIMEOUT)",
		},
		{
			name:    "handshake refused",
			address: mtls.Addr(),
			opts:    client.ConnectOptions{TLS: &client.TLSOptions{ServerName: "localhost", CABundle: ca.PEM}},
			stage:   client.StageTLSHandshake,
			reason:  client.ReasonHandshakeFailure,
			text:    "tls handshake " + mtls.Addr() + ": TLS handshake failure: remote error: tls: certificate required (stage TLS_HANDSHAKE, reason HANDSHAKE_FAILURE)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := c.Connect(probetest.Context(t), "tcp", tt.address, tt.opts)
			var pe *client.ProbeError
			if !errors.As(err, &pe) {
				t.Fatalf("Connect = %v (%T), want a *client.ProbeError", err, err)
			}
			if pe.Stage != tt.stage || pe.Reason != tt.reason {
				t.Errorf("stage %v reason %v, want %v %v", pe.Stage, pe.Reason, tt.stage, tt.reason)
			}
			if got := pe.Error(); got != tt.text {
				t.Errorf("Error() = %q, want %q", got, tt.text)
			}
			if tt.errno != 0 && !errors.Is(err, tt.errno) {
				t.Errorf("errors.Is(err, %v) = false", tt.errno)
			}
			if tt.errno == 0 && pe.Unwrap() != nil {
				t.Errorf("Unwrap() = %v, want nil without an errno", pe.Unwrap())
			}
			if pe.Timeout() != (tt.reason == client.ReasonTimeout) {
				t.Errorf("Timeout() = %v for reason %v", pe.Timeout(), pe.Reason)
			}
			if res == nil || pe.Connect != res || res.TotalDuration <= 0 {
				t.Errorf("the partial result = %+v, want it returned and in the error, with a total duration", res)
			}
			if _, ok := status.FromError(err); ok {
				t.Errorf("a probe result must not read as a gRPC status: %v", err)
			}
		})
	}
}

// TestCallErrors checks the errors that are not probe results: bad input
// caught before any call, calls the server refuses, and a server that is
// not there. None of them may be a *ProbeError.
func TestCallErrors(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		calls.Add(1)
		return invoke(ctx, method, req, reply, cc, opts...)
	}
	srv := probetest.Start(t)
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUnaryInterceptor(count))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := client.New(conn)

	t.Run("caught before calling", func(t *testing.T) {
		for _, tt := range []struct{ network, address, want string }{
			{"sctp", "127.0.0.1:80", "probe sctp: unknown network sctp"},
			{"tcp", "127.0.0.1", "probe tcp: address 127.0.0.1: missing port in address"},
			{"tcp", "127.0.0.1:70000", "probe tcp: address 127.0.0.1:70000: invalid port"},
			{"udp", "127.0.0.1:0", "probe udp: address 127.0.0.1:0: invalid port"},
		} {
			_, err := c.Connect(probetest.Context(t), tt.network, tt.address, client.ConnectOptions{})
			var opErr *net.OpError
			if !errors.As(err, &opErr) || err.Error() != tt.want {
				t.Errorf("Connect(%q, %q) = %v, want a *net.OpError %q", tt.network, tt.address, err, tt.want)
			}
		}
		if n := calls.Load(); n != 0 {
			t.Errorf("%d calls were made", n)
		}
	})

	t.Run("refused by the server", func(t *testing.T) {
		_, err := c.Connect(probetest.Context(t), "tcp", "bad host:80", client.ConnectOptions{})
		var pe *client.ProbeError
		if errors.As(err, &pe) {
			t.Fatalf("got a ProbeError for a refused call: %v", pe)
		}
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument {
			t.Fatalf("code %v, want InvalidArgument: %v", st.Code(), err)
		}
		var fields []string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					fields = append(fields, v.GetField())
				}
			}
		}
		if !cmp.Equal(fields, []string{"target.host"}) {
			t.Errorf("bad fields %v, want [target.host]", fields)
		}
	})

	t.Run("server not there", func(t *testing.T) {
		down, err := client.Dial(fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp", "127.0.0.1:0")))
		if err != nil {
			t.Fatal(err)
		}
		defer down.Close()
		_, err = down.Connect(probetest.Context(t), "tcp", "127.0.0.1:80", client.ConnectOptions{})
		var pe *client.ProbeError
		if errors.As(err, &pe) || status.Code(err) != codes.Unavailable {
			t.Errorf("Connect through a dead server = %v, want an Unavailable status", err)
		}
	})
}

// TestRefusal checks a call the server's target policy refused: a status
// error, from which Refusal recovers the ProbeError naming the rule.
func TestRefusal(t *testing.T) {
	t.Parallel()
	c, _ := start(t, probetest.WithPolicy("deny 127.0.0.2"))
	tg := probetest.Listen(t, "127.0.0.2:0", nil)

	_, err := c.Connect(probetest.Context(t), "tcp", tg.Addr(), client.ConnectOptions{})
	var pe *client.ProbeError
	if status.Code(err) != codes.PermissionDenied || errors.As(err, &pe) {
		t.Fatalf("Connect = %v, want a PermissionDenied status, not a probe result", err)
	}
	pe, ok := client.Refusal(err)
	want := "policy " + tg.Addr() + `: denied by the target policy, rule "127.0.0.2" (stage POLICY, reason DENIED)`
	if !ok || pe.Stage != client.StagePolicy || pe.Reason != client.ReasonDenied || pe.Rule != "127.0.0.2" || pe.Error() != want {
		t.Errorf("Refusal = %v, %v; want %q", pe, ok, want)
	}
	if _, ok := client.Refusal(status.Error(codes.PermissionDenied, "no token")); ok {
		t.Error("Refusal of a PermissionDenied without a ProbeError said yes")
	}
	if !tg.AcceptedNothing() {
		t.Error("the refused target accepted a connection")
	}
}

func TestFetch(t *testing.T) {
	t.Parallel()
	c, _ := start(t)

	t.Run("echo", func(t *testing.T) {
		t.Parallel()
		tg := probetest.Listen(t, "127.0.0.1:0", probetest.Echo)
		f, err := c.Fetch(probetest.Context(t), "tcp", tg.Addr(), client.FetchOptions{Payload: []byte("ping\n")})
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		defer f.Close()
		if f.Connect.RemoteAddr.String() != tg.Addr() {
			t.Errorf("connected to %s, want %s", f.Connect.RemoteAddr, tg.Addr())
		}
		if f.Summary() != nil {
			t.Error("Summary before the end is not nil")
		}
		got, err := io.ReadAll(f)
		if err != nil || string(got) != "ping\n" {
			t.Fatalf("ReadAll = %q, %v; want the echo", got, err)
		}
		s := f.Summary()
		if s == nil || s.EndReason != client.EndEOF || s.BytesSent != 5 || s.BytesReceived != 5 || s.TimeToFirstByte <= 0 {
			t.Errorf("Summary = %+v, want EOF after 5 bytes each way", s)
		}
	})

	t.Run("lines", func(t *testing.T) {
		t.Parallel()
		tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
			c.Write([]byte("one\ntwo\nthree\n"))
			c.Close()
		})
		f, err := c.Fetch(probetest.Context(t), "tcp", tg.Addr(), client.FetchOptions{Framing: client.FramingLines})
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		defer f.Close()
		first, err := f.Next()
		if err != nil || string(first) != "one\n" {
			t.Fatalf("Next = %q, %v; want the first line", first, err)
		}
		var rest []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			rest = append(rest, sc.Text())
		}
		if err := sc.Err(); err != nil || !cmp.Equal(rest, []string{"two", "three"}) {
			t.Errorf("scanned %q, %v; want two, three", rest, err)
		}
	})

	t.Run("max bytes", func(t *testing.T) {
		t.Parallel()
		tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) { c.Write([]byte("abcdef")) })
		f, err := c.Fetch(probetest.Context(t), "tcp", tg.Addr(), client.FetchOptions{MaxBytes: 3})
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		defer f.Close()
		got, err := io.ReadAll(f)
		if err != nil || string(got) != "abc" || f.Summary().EndReason != client.EndMaxBytes {
			t.Errorf("ReadAll = %q, %v, end %v; want abc, EOF at the cap", got, err, f.Summary().EndReason)
		}
	})

	t.Run("reset mid-stream", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
			c.Write([]byte("partial"))
			select {
			case <-release:
			case <-time.After(probetest.Timeout):
			}
			probetest.Reset(c)
		})
		f, err := c.Fetch(probetest.Context(t), "tcp", tg.Addr(), client.FetchOptions{})
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		defer f.Close()
		buf := make([]byte, len("partial"))
		if _, err := io.ReadFull(f, buf); err != nil || string(buf) != "partial" {
			t.Fatalf("read %q, %v; want partial", buf, err)
		}
		close(release)
		n, err := f.Read(buf)
		var pe *client.ProbeError
		if n != 0 || !errors.As(err, &pe) || pe.Stage != client.StageReceive || pe.Reason != client.ReasonReset || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("Read after the reset = %d, %v; want a RECEIVE / RESET ProbeError", n, err)
		}
		if pe.Summary == nil || pe.Summary.BytesReceived != 7 || pe.Summary.EndReason != client.EndError || pe.Connect != f.Connect {
			t.Errorf("the error's Summary = %+v, Connect = %p; want 7 bytes received, END_REASON_ERROR, the connect report", pe.Summary, pe.Connect)
		}
		if _, again := f.Read(buf); again != err {
			t.Errorf("a second Read = %v, want the same error", again)
		}
	})

	t.Run("connect fails", func(t *testing.T) {
		t.Parallel()
		addr := fmt.Sprintf("127.0.0.1:%d", probetest.ClosedPort(t, "tcp", "127.0.0.1:0"))
		f, err := c.Fetch(probetest.Context(t), "tcp", addr, client.FetchOptions{Payload: []byte("x")})
		var pe *client.ProbeError
		if f != nil || !errors.As(err, &pe) || pe.Stage != client.StageConnect || pe.Reason != client.ReasonRefused {
			t.Fatalf("Fetch = %v, %v; want nil and a CONNECT / REFUSED ProbeError", f, err)
		}
		if pe.Connect == nil || len(pe.Connect.Attempts) != 1 || pe.Summary == nil || pe.Summary.BytesSent != 0 || pe.Summary.TotalDuration <= 0 {
			t.Errorf("Connect %+v, Summary %+v: want one attempt and a summary with nothing sent", pe.Connect, pe.Summary)
		}
	})

	t.Run("close abandons", func(t *testing.T) {
		t.Parallel()
		tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) { c.Write([]byte("hello")) })
		f, err := c.Fetch(probetest.Context(t), "tcp", tg.Addr(), client.FetchOptions{KeepWriteOpen: true})
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if b, err := f.Next(); err != nil || string(b) != "hello" {
			t.Fatalf("Next = %q, %v; want hello", b, err)
		}
		f.Close()
		// The target never closes; only the server closing its end after
		// the caller left ends this wait.
		if err := probetest.WaitClosed(<-tg.Accepted); err != nil {
			t.Errorf("the target connection stayed open after Close: %v", err)
		}
	})

	t.Run("udp datagrams", func(t *testing.T) {
		t.Parallel()
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			buf := make([]byte, 64)
			n, from, err := pc.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "ping" {
				return
			}
			pc.WriteTo([]byte("one"), from)
			pc.WriteTo([]byte("two"), from)
		}()
		f, err := c.Fetch(probetest.Context(t), "udp", pc.LocalAddr().String(), client.FetchOptions{
			Payload:     []byte("ping"),
			ReadTimeout: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		defer f.Close()
		var got []string
		for {
			b, err := f.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			got = append(got, string(b))
		}
		if !cmp.Equal(got, []string{"one", "two"}) || f.Summary().EndReason != client.EndIdle {
			t.Errorf("datagrams %q, end %v; want one, two, then IDLE", got, f.Summary().EndReason)
		}
	})

	t.Run("payload and HTTP GET both", func(t *testing.T) {
		t.Parallel()
		_, err := c.Fetch(probetest.Context(t), "tcp", "127.0.0.1:80", client.FetchOptions{Payload: []byte("x"), HTTPGet: &client.HTTPGet{Path: "/"}})
		if err == nil || !strings.Contains(err.Error(), "not both") {
			t.Errorf("Fetch = %v, want a refusal of both requests", err)
		}
	})
}

func TestResolveService(t *testing.T) {
	t.Parallel()
	c, _ := start(t, probetest.WithServices(t, "np-test 7777/udp np-alias\n"))
	ctx := probetest.Context(t)

	svc, err := c.ResolveService(ctx, "udp", "np-alias")
	if err != nil || svc.Name != "np-test" || svc.Port != 7777 || svc.Protocol != "udp" || svc.Source != client.SourceSystem || !cmp.Equal(svc.Aliases, []string{"np-alias"}) {
		t.Errorf("ResolveService(udp, np-alias) = %+v, %v", svc, err)
	}
	svc, err = c.ResolvePort(ctx, "tcp", 443)
	if err != nil || svc.Name != "https" || svc.Source != client.SourceBuiltin {
		t.Errorf("ResolvePort(tcp, 443) = %+v, %v; want https from the built-in table", svc, err)
	}
	_, err = c.ResolveService(ctx, "tcp", "np-test")
	var pe *client.ProbeError
	if !errors.As(err, &pe) || pe.Stage != client.StageServiceLookup || pe.Reason != client.ReasonUnknownService || pe.Connect != nil {
		t.Errorf("ResolveService(tcp, np-test) = %v, want SERVICE_LOOKUP / UNKNOWN_SERVICE", err)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	c, _ := start(t)
	st, err := c.Health(probetest.Context(t))
	if err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Health = %v, %v; want SERVING", st, err)
	}
}

// TestDialTLSAndToken runs Dial's options against a server that requires
// TLS and a bearer token.
func TestDialTLSAndToken(t *testing.T) {
	t.Parallel()
	ca := probetest.NewCA(t)
	certFile, keyFile := probetest.WriteFiles(t, t.TempDir(), ca.Issue(t, "probed", true))
	const token = "s3cret-0123456789abcdef"
	srv := probetest.Start(t, probetest.WithTokens(t, map[string]string{"alice": token}), probetest.WithConfig(func(c *server.Config) {
		c.TLSCert, c.TLSKey = certFile, keyFile
	}))
	tlsConfig := &tls.Config{RootCAs: ca.Pool}

	tests := []struct {
		name string
		opts []client.DialOption
		want codes.Code
	}{
		{"TLS and token", []client.DialOption{client.WithTLS(tlsConfig), client.WithBearerToken(token)}, codes.OK},
		{"TLS without token", []client.DialOption{client.WithTLS(tlsConfig)}, codes.Unauthenticated},
		{"wrong token", []client.DialOption{client.WithTLS(tlsConfig), client.WithBearerToken("guess")}, codes.Unauthenticated},
		{"plaintext to TLS", nil, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := client.Dial(srv.Addr, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.ResolveService(probetest.Context(t), "tcp", "https")
			if got := status.Code(err); got != tt.want {
				t.Errorf("code %v, want %v: %v", got, tt.want, err)
			}
		})
	}

	if c, err := client.Dial(srv.Addr, client.WithBearerToken(token)); err == nil {
		c.Close()
		t.Error("Dial with a token but no TLS succeeded; the token would go out in the clear")
	}
}

// TestDialLocalToken sends a bearer token without TLS to probe servers on
// loopback and on a Unix socket, with WithInsecureLocalTransport, and plays
// a name that leads off the machine: the connection is refused before a
// byte leaves, token or not.
func TestDialLocalToken(t *testing.T) {
	t.Parallel()
	const token = "local-0123456789abcdef"
	tokens := probetest.WithTokens(t, map[string]string{"alice": token})
	srv := probetest.Start(t, tokens)
	// A server of the same tokens on a Unix socket.
	var cfg server.Config
	tokens(&cfg)
	unixSrv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "probed.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- unixSrv.Serve(lis) }()
	t.Cleanup(func() {
		unixSrv.Stop()
		<-served
	})

	tests := []struct {
		name   string
		target string
		opts   []client.DialOption
		want   codes.Code
	}{
		{"loopback with the token", srv.Addr, []client.DialOption{client.WithInsecureLocalTransport(), client.WithBearerToken(token)}, codes.OK},
		{"loopback without it", srv.Addr, []client.DialOption{client.WithInsecureLocalTransport()}, codes.Unauthenticated},
		{"loopback with a wrong one", srv.Addr, []client.DialOption{client.WithInsecureLocalTransport(), client.WithBearerToken("guess-0123456789abcdef")}, codes.Unauthenticated},
		{"Unix socket with the token", "unix:" + sock, []client.DialOption{client.WithInsecureLocalTransport(), client.WithBearerToken(token)}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := client.Dial(tt.target, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.ResolveService(probetest.Context(t), "tcp", "https")
			if got := status.Code(err); got != tt.want {
				t.Errorf("code %v, want %v: %v", got, tt.want, err)
			}
		})
	}

	// A peer that is not local: a listener on loopback, reached through a
	// connection that says it went to 192.0.2.1 (as a name that resolves
	// off the machine would). The handshake refuses it, and the listener
	// receives nothing: no preface, no token.
	received := make(chan []byte, 1)
	far := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		b, _ := probetest.ReadAll(c)
		received <- b
		c.Close()
	})
	c, err := client.Dial("passthrough:///far.example:7070", client.WithInsecureLocalTransport(), client.WithBearerToken(token),
		client.WithGRPCOptions(grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", far.Addr())
			if err != nil {
				return nil, err
			}
			return farConn{conn}, nil
		})))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ResolveService(probetest.Context(t), "tcp", "https")
	c.Close()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "local credentials rejected connection to non-local address") {
		t.Errorf("a peer off the machine: %v, want Unavailable and the local credentials' refusal", err)
	}
	select {
	case b := <-received:
		if len(b) != 0 {
			t.Errorf("the peer off the machine received %d bytes: %q", len(b), b)
		}
	case <-time.After(probetest.Timeout):
		t.Error("the connection to the peer off the machine was not closed")
	}

	for name, opts := range map[string][]client.DialOption{
		"a token without TLS or a local transport": {client.WithBearerToken(token)},
		"TLS and a local transport":                {client.WithTLS(nil), client.WithInsecureLocalTransport()},
	} {
		if c, err := client.Dial(srv.Addr, opts...); err == nil {
			c.Close()
			t.Errorf("Dial with %s succeeded", name)
		}
	}
}

// farConn is a connection that says its peer is 192.0.2.1:7070.
type farConn struct{ net.Conn }

func (farConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 7070}
}

// TestSweep checks that each probe is a result, expanded entries included,
// and that a bad entry fails the call before anything is sent.
func TestSweep(t *testing.T) {
	t.Parallel()
	c, srv := start(t)
	up := probetest.Listen(t, "127.0.0.1:0", nil)
	srv.DNS.SetAddrs("two.test", netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
	targets := []client.SweepTarget{
		{Network: "tcp", Address: fmt.Sprintf("two.test:%d", up.Port()), Expand: client.ExpandAddresses},
		{Network: "tcp", Address: "nosuch.test:80"},
	}
	got := map[string]string{}
	for r, err := range c.Sweep(probetest.Context(t), targets, client.SweepOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		outcome := "ok"
		if r.Err != nil {
			outcome = r.Err.Stage.String()
		}
		got[fmt.Sprintf("%d %s", r.Index, r.Target)] = outcome
	}
	want := map[string]string{
		fmt.Sprintf("0 127.0.0.1:%d", up.Port()): "ok",
		fmt.Sprintf("0 127.0.0.2:%d", up.Port()): "STAGE_CONNECT",
		"1 nosuch.test:80":                       "STAGE_RESOLVE",
	}
	if !cmp.Equal(got, want) {
		t.Errorf("results %v, want %v", got, want)
	}

	for r, err := range c.Sweep(probetest.Context(t), []client.SweepTarget{{Network: "tcp", Address: "no-port"}}, client.SweepOptions{}) {
		var opErr *net.OpError
		if r != nil || !errors.As(err, &opErr) {
			t.Errorf("a bad entry: %v, %v; want a *net.OpError and no result", r, err)
		}
	}
}

// TestConnectTLS checks the handshake's result and a failed verification.
func TestConnectTLS(t *testing.T) {
	t.Parallel()
	c, _ := start(t)
	ca := probetest.NewCA(t)
	var leaf []byte
	serve := func(changes ...func(*x509.Certificate)) string {
		cert := ca.Issue(t, "target", true, changes...)
		leaf = cert.Certificate[0]
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
		return probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
			tc := tls.Server(c, cfg)
			tc.Handshake()
			tc.Close()
		}).Addr()
	}
	good := serve()
	sum := sha256.Sum256(leaf)
	expired := serve(func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Hour) })
	opts := client.ConnectOptions{TLS: &client.TLSOptions{ServerName: "localhost", CABundle: ca.PEM}}

	res, err := c.Connect(probetest.Context(t), "tcp", good, opts)
	if err != nil || res.TLS == nil || !res.TLS.Verified || res.TLS.Version != "TLS 1.3" || len(res.TLS.Chain) != 1 || res.TLS.Chain[0].Subject != "CN=target" || res.TLS.Chain[0].DNSNames[0] != "localhost" || res.TLS.Chain[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("Connect with TLS: %+v, %v", res.TLS, err)
	}
	res, err = c.Connect(probetest.Context(t), "tcp", expired, opts)
	var pe *client.ProbeError
	want := "tls handshake " + expired + ": certificate expired (stage TLS_HANDSHAKE, reason CERTIFICATE_EXPIRED)"
	if !errors.As(err, &pe) || pe.Stage != client.StageTLSHandshake || pe.Reason != client.ReasonCertificateExpired || err.Error() != want || res.TLS == nil || res.TLS.Verified {
		t.Errorf("an expired certificate: %v, TLS %+v; want %q", err, res.TLS, want)
	}
}

// TestSweepFleet sweeps from two probe servers at once, and stops early.
func TestSweepFleet(t *testing.T) {
	t.Parallel()
	a, _ := start(t)
	b, _ := start(t)
	up := probetest.Listen(t, "127.0.0.1:0", nil)
	targets := []client.SweepTarget{{Network: "tcp", Address: up.Addr()}, {Network: "tcp", Address: up.Addr()}}
	perServer := map[int]int{}
	for fr := range client.SweepFleet(probetest.Context(t), []*client.Client{a, b}, targets, client.SweepOptions{}) {
		if fr.Err != nil || fr.Result.Err != nil {
			t.Fatalf("server %d: %v, %v", fr.Server, fr.Err, fr.Result)
		}
		perServer[fr.Server]++
	}
	if perServer[0] != 2 || perServer[1] != 2 {
		t.Errorf("results per server %v, want 2 each", perServer)
	}
	n := 0
	for range client.SweepFleet(probetest.Context(t), []*client.Client{a, b}, targets, client.SweepOptions{}) {
		n++
		break
	}
	if n != 1 {
		t.Errorf("%d results after stopping at the first", n)
	}
}

// TestFetchBulk fetches megabytes whose every byte depends on its offset,
// through a client on a connection of its own (Dial, with wire's buffers)
// and one on a plain gRPC connection (New): the data arrives in messages
// that span many HTTP/2 frames, gathered into buffers the client's data
// aliases, and every byte must come out in its place.
func TestFetchBulk(t *testing.T) {
	t.Parallel()
	const size = 8<<20 + 12345
	pattern := make([]byte, size)
	for i := range pattern {
		pattern[i] = byte(i*7 + i>>11)
	}
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write(pattern)
		c.Close()
	})
	newC, srv := start(t)
	dialC, err := client.Dial(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dialC.Close() })
	for _, tc := range []struct {
		name string
		c    *client.Client
	}{{"Dial", dialC}, {"New", newC}} {
		t.Run(tc.name+" ReadAll", func(t *testing.T) {
			f, err := tc.c.Fetch(probetest.Context(t), "tcp", tg.Addr(), client.FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := io.ReadAll(f)
			if err != nil || len(got) != size {
				t.Fatalf("ReadAll: %d bytes, %v; want %d", len(got), err, size)
			}
			if i := firstDiff(got, pattern); i >= 0 {
				t.Errorf("byte %d is %#x, want %#x", i, got[i], pattern[i])
			}
		})
		t.Run(tc.name+" Next", func(t *testing.T) {
			f, err := tc.c.Fetch(probetest.Context(t), "tcp", tg.Addr(), client.FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			off, chunks := 0, 0
			for {
				b, err := f.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("Next after %d bytes: %v", off, err)
				}
				if off+len(b) > size {
					t.Fatalf("%d bytes, more than the %d sent", off+len(b), size)
				}
				if i := firstDiff(b, pattern[off:off+len(b)]); i >= 0 {
					t.Fatalf("byte %d is %#x, want %#x", off+i, b[i], pattern[off+i])
				}
				off += len(b)
				chunks++
			}
			if off != size || chunks < 2 {
				t.Errorf("%d bytes in %d messages, want %d in several", off, chunks, size)
			}
		})
	}
}

// firstDiff is the first index where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestFetchDialogue runs a dialogue whose reply quotes the first match:
// the matches come back as they happen, copied out of the stream.
func TestFetchDialogue(t *testing.T) {
	t.Parallel()
	c, _ := start(t)
	tg := probetest.Listen(t, "127.0.0.1:0", func(conn net.Conn) {
		defer conn.Close()
		io.WriteString(conn, "PING :k9\r\n")
		if line, _ := bufio.NewReader(conn).ReadString('\n'); line == "PONG k9\n" {
			io.WriteString(conn, "001 welcome\r\n")
		}
	})
	f, err := c.Fetch(probetest.Context(t), "tcp", tg.Addr(), client.FetchOptions{Steps: []client.Step{
		client.Expect(`^PING :(\w+)`), {SendTemplate: "PONG $1\n"}, client.Expect(`^001 (\w+)`),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil || string(got) != "PING :k9\r\n001 welcome\r\n" || f.Summary().EndReason != client.EndMatched {
		t.Fatalf("read %q, %v, summary %+v", got, err, f.Summary())
	}
	want := []client.Match{
		{Step: 0, Groups: [][]byte{[]byte("PING :k9"), []byte("k9")}},
		{Step: 2, Groups: [][]byte{[]byte("001 welcome"), []byte("welcome")}},
	}
	if !cmp.Equal(f.Matches(), want) {
		t.Errorf("matches %v, want %v", f.Matches(), want)
	}
}
