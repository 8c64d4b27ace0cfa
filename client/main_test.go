package client_test

import (
	"fmt"
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// The examples' world, set up by TestMain: examples have no *testing.T.
var (
	// probeServer is the address of a probe server on loopback.
	probeServer string
	// webServer is "127.0.0.1:port" of an HTTP server saying hello.
	webServer string
	// closedAddr is "127.0.0.1:port" where nothing listens.
	closedAddr string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	_, addr, stopProbe, err := probetest.Serve(server.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	probeServer = addr
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	webServer = web.Addr().String()
	stopWeb := probetest.ServeHello(web)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	closedAddr = closed.Addr().String()
	closed.Close()

	code := m.Run()

	if err := stopWeb(); err != nil {
		fmt.Fprintln(os.Stderr, "web server:", err)
		code = 1
	}
	if err := stopProbe(); err != nil {
		fmt.Fprintln(os.Stderr, "probe server:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	return code
}
