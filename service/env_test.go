package service_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/services"
	"github.com/netprobe/netprobe/service"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is a probe server on loopback, reached through a real gRPC client,
// resolving names through a DNS server on loopback.
type env struct {
	client netprobev1.ProbeServiceClient
	dns    *dnstest.Server
}

type envOption func(*service.Config, *[]grpc.ServerOption)

// withServices makes the server read a services database with text.
func withServices(t *testing.T, text string) envOption {
	path := filepath.Join(t.TempDir(), "services")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return func(c *service.Config, _ *[]grpc.ServerOption) {
		tab, err := services.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		c.Services = tab
	}
}

// withMaxPayload raises the payload cap, and the gRPC message size with it.
func withMaxPayload(n int) envOption {
	return func(c *service.Config, opts *[]grpc.ServerOption) {
		c.MaxPayloadBytes = n
		*opts = append(*opts, grpc.MaxRecvMsgSize(n+64<<10))
	}
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	dns := dnstest.Start(t)
	tab, err := services.Load("")
	if err != nil {
		t.Fatal(err)
	}
	cfg := service.Config{Resolver: service.ResolverFor(dns.Addr), Services: tab}
	var srvOpts []grpc.ServerOption
	for _, o := range opts {
		o(&cfg, &srvOpts)
	}
	srv, err := service.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(srvOpts...)
	netprobev1.RegisterProbeServiceServer(gs, srv)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &env{client: netprobev1.NewProbeServiceClient(conn), dns: dns}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// target is a TCP listener on loopback whose accepted connections are
// handed to handle, each on its own goroutine.
type target struct {
	ln       *net.TCPListener
	accepted chan net.Conn // the server side of each accepted connection
}

// listen starts a target on addr ("127.0.0.1:0", "[::1]:0", ...). handle
// may be nil: connections are then held open. At the end of the test every
// accepted connection is closed, which ends handlers blocked reading it.
func listen(t *testing.T, addr string, handle func(net.Conn)) *target {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{ln: ln.(*net.TCPListener), accepted: make(chan net.Conn, 16)}
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
			case tg.accepted <- c:
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

func (tg *target) port() uint32 { return uint32(tg.ln.Addr().(*net.TCPAddr).Port) }

// acceptedNothing reports whether no connection was ever accepted.
func (tg *target) acceptedNothing() bool { return len(tg.accepted) == 0 }

// closedPort returns a loopback TCP port with nothing listening on it.
func closedPort(t *testing.T, network, addr string) uint32 {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return uint32(port)
}

// readAll reads c to EOF, bounded by testTimeout.
func readAll(c net.Conn) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(testTimeout))
	return io.ReadAll(c)
}

// waitClosed waits until the peer of c has closed or reset the connection.
func waitClosed(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(testTimeout))
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
