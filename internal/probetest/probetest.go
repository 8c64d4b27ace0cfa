// Package probetest runs a real netprobe server on loopback for tests, and
// the targets they probe: TCP listeners on loopback with a handler per
// connection, and ports where nothing listens.
package probetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/server"
)

// Timeout bounds every wait in tests.
const Timeout = 10 * time.Second

// Server is a probe server on 127.0.0.1, built as probed builds it (see
// package server), resolving names through a DNS server on loopback.
type Server struct {
	// Addr is the gRPC address, "127.0.0.1:port".
	Addr string
	// Conn is a plaintext client connection to Addr.
	Conn *grpc.ClientConn
	// Probe is the ProbeService client over Conn.
	Probe netprobev1.ProbeServiceClient
	// DNS answers every name the server resolves.
	DNS *dnstest.Server
	// Server is the server itself.
	Server *server.Server
}

// Metrics returns the handler of the server's metrics listener (/probe,
// /metrics, the page), built as probed builds it.
func (s *Server) Metrics(t testing.TB) http.Handler {
	t.Helper()
	ms, err := s.Server.NewMetricsServer(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return ms.Handler()
}

// An Option changes the server's configuration before it starts.
type Option func(*server.Config)

// WithServices makes the server read a services database holding text
// instead of the built-in table alone.
func WithServices(t testing.TB, text string) Option {
	path := filepath.Join(t.TempDir(), "services")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return func(c *server.Config) { c.ServicesFile = path }
}

// WithMaxPayload raises the payload cap, and the gRPC message size with it.
func WithMaxPayload(n int) Option {
	return func(c *server.Config) { c.MaxPayloadBytes = n }
}

// WithPolicy gives the server target policy lines: "allow RULE", "deny
// RULE", "caller NAME allow RULE".
func WithPolicy(lines ...string) Option {
	return func(c *server.Config) { c.PolicyRules = append(c.PolicyRules, lines...) }
}

// WithMaxSweepConcurrency caps the probes one Sweep runs at once.
func WithMaxSweepConcurrency(n int) Option {
	return func(c *server.Config) { c.MaxSweepConcurrency = n }
}

// WithTokens makes the server require a bearer token: tokens maps each
// caller's name to its token (16 characters or more).
func WithTokens(t testing.TB, tokens map[string]string) Option {
	var text strings.Builder
	for name, token := range tokens {
		fmt.Fprintf(&text, "%s %s\n", name, token)
	}
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(text.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *server.Config) { c.Admission.TokensFile = path }
}

// WithConfig changes the server's configuration with f.
func WithConfig(f func(*server.Config)) Option { return Option(f) }

// Unlimited lifts the rate and in-flight limits out of the way of tests
// that run many probes quickly.
func Unlimited(c *server.Config) {
	c.Admission.Rate, c.Admission.Burst = 1e9, 1e9
	c.Admission.MaxInFlight, c.Admission.MaxInFlightPerCaller = 1e6, 1e6
}

// Start runs a probe server until the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	dns := dnstest.Start(t)
	cfg := server.Config{DNSServer: dns.Addr}
	for _, o := range opts {
		o(&cfg)
	}
	srv, addr, stop, err := Serve(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &Server{Addr: addr, Conn: conn, Probe: netprobev1.NewProbeServiceClient(conn), DNS: dns, Server: srv}
}

// Serve runs a probe server built from cfg on 127.0.0.1 until stop, which
// returns the error that ended serving, if any. It is for TestMain and
// examples, which have no testing.TB; tests use Start.
func Serve(cfg server.Config) (srv *server.Server, addr string, stop func() error, err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	cfg.Self = append(cfg.Self, lis.Addr())
	if srv, err = server.New(cfg); err != nil {
		lis.Close()
		return nil, "", nil, err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	return srv, lis.Addr().String(), func() error {
		srv.Stop()
		return <-served
	}, nil
}

// Context returns a context that ends after Timeout or with the test.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Target is a TCP listener on loopback whose accepted connections are
// handed to a handler, each on its own goroutine.
type Target struct {
	// Listener is the target's socket.
	Listener *net.TCPListener
	// Accepted receives the server side of each accepted connection (the
	// first 16; later ones are not queued).
	Accepted chan net.Conn
}

// Listen starts a target on addr ("127.0.0.1:0", "[::1]:0", ...). handle
// may be nil: connections are then held open. At the end of the test every
// accepted connection is closed, which ends handlers blocked reading it.
func Listen(t testing.TB, addr string, handle func(net.Conn)) *Target {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return NewTarget(t, ln.(*net.TCPListener), handle)
}

// NewTarget makes a target of ln, such as a listener made in a test's network
// namespace, as Listen does.
func NewTarget(t testing.TB, ln *net.TCPListener, handle func(net.Conn)) *Target {
	tg := &Target{Listener: ln, Accepted: make(chan net.Conn, 16)}
	done := make(chan struct{})
	var handlers []chan struct{}
	var conns []net.Conn
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			select {
			case tg.Accepted <- c:
			default:
			}
			if handle == nil {
				continue
			}
			h := make(chan struct{})
			handlers = append(handlers, h)
			go func() {
				defer close(h)
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
		for _, h := range handlers {
			<-h
		}
	})
	return tg
}

// Port is the target's port.
func (tg *Target) Port() uint32 { return uint32(tg.Listener.Addr().(*net.TCPAddr).Port) }

// Addr is the target's "ip:port".
func (tg *Target) Addr() string { return tg.Listener.Addr().String() }

// AcceptedNothing reports whether no connection was ever accepted.
func (tg *Target) AcceptedNothing() bool { return len(tg.Accepted) == 0 }

// Reset closes c with an RST instead of a FIN.
func Reset(c net.Conn) {
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// ResetDuringReverseLookup returns a target handler that resets its
// connection while the probe waits for the reverse lookup of ip, which dns
// holds until then. A probe with reverse_lookup set meets the reset at its
// first step after connecting: the send, or the half-close when there is
// nothing to send. It is for one connection.
func ResetDuringReverseLookup(dns *dnstest.Server, ip netip.Addr) func(net.Conn) {
	reset := make(chan struct{})
	queried := dns.HoldPTR(ip, reset)
	var once sync.Once
	return func(c net.Conn) {
		defer once.Do(func() { close(reset) })
		select {
		case <-queried:
			Reset(c)
		case <-time.After(Timeout):
		}
	}
}

// ClosedPort returns a loopback port with nothing listening on it.
func ClosedPort(t testing.TB, network, addr string) uint32 {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return uint32(port)
}

// AcceptAndClose serves ln by closing each connection it accepts, until ln
// is closed: the cheapest target a connect can have, for benchmarks.
func AcceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// SendAndClose serves ln by sending n bytes to each connection it accepts,
// then closing it, until ln is closed: a source of bulk data for
// benchmarks.
func SendAndClose(ln net.Listener, n int64) {
	chunk := make([]byte, 256<<10)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			for left := n; left > 0; {
				w, err := c.Write(chunk[:min(int64(len(chunk)), left)])
				if err != nil {
					return
				}
				left -= int64(w)
			}
		}()
	}
}

// ServeHello serves HTTP on ln, answering every request with "hello\n",
// until stop, which returns the error that ended serving, if any but the
// server's closing. It needs no testing.TB, for TestMain.
func ServeHello(ln net.Listener) (stop func() error) {
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "hello")
	})}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	return func() error {
		hs.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// Echo reads the request to EOF (the probe's half-close) and sends it back.
func Echo(c net.Conn) {
	req, err := ReadAll(c)
	if err != nil {
		return
	}
	c.Write(req)
	c.Close()
}

// ReadAll reads c to EOF, bounded by Timeout.
func ReadAll(c net.Conn) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(Timeout))
	return io.ReadAll(c)
}

// WaitClosed waits until the peer of c has closed or reset the connection.
func WaitClosed(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(Timeout))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		if err != nil {
			return nil
		}
	}
}

// SharedDir is a directory, removed when t ends, that every user may read
// and search: for what a test runs as another user (t.TempDir's parent is
// root's alone).
func SharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "netprobe-shared")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// SharedExecutable copies the program at path into a SharedDir, mode
// 0755, for a test that runs it as another user, and returns the copy's
// path. The copy is written by cp, a process of its own: were this
// process to hold it open for writing, a fork by a parallel test would
// inherit that descriptor, and exec of the copy could fail with ETXTBSY
// ("text file busy") until that child had exec'd in turn.
func SharedExecutable(t testing.TB, path string) string {
	t.Helper()
	to := filepath.Join(SharedDir(t), filepath.Base(path))
	if out, err := exec.Command("cp", path, to).CombinedOutput(); err != nil {
		t.Fatalf("cp %s %s: %v\n%s", path, to, err, out)
	}
	if err := os.Chmod(to, 0o755); err != nil {
		t.Fatal(err)
	}
	return to
}
