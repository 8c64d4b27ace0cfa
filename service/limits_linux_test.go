package service_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestConnectTooManyOpenFiles lowers the process's descriptor limit to the
// descriptors already open, so the probe's socket() fails with EMFILE, then
// checks the server recovers once descriptors are free again. It does not
// call t.Parallel: the limit is the whole process's.
func TestConnectTooManyOpenFiles(t *testing.T) {
	e := probetest.Start(t)
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	req := &netprobev1.ConnectRequest{Target: tcpTarget(tg.Port())}
	// Warm up, so the gRPC connection needs no new descriptor later.
	if resp, err := e.Probe.Connect(probetest.Context(t), req); err != nil || resp.Error != nil {
		t.Fatalf("Connect: %v %v", err, resp.GetError())
	}
	ctx := probetest.Context(t)

	var saved syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	lowestFree := f.Fd()
	f.Close()
	// Every descriptor below lowestFree is in use, so none is left.
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: uint64(lowestFree), Max: saved.Max}); err != nil {
		t.Fatal(err)
	}
	resp, err := e.Probe.Connect(ctx, req)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	checkError(t, resp.Error, &wantError{stage: netprobev1.Stage_STAGE_SOCKET, reason: netprobev1.Reason_REASON_TOO_MANY_OPEN_FILES, errno: "EMFILE"})

	resp, err = e.Probe.Connect(ctx, req)
	if err != nil || resp.Error != nil {
		t.Fatalf("Connect after the limit was restored: %v %v", err, resp.GetError())
	}
}

// openDescriptors counts the process's open file descriptors.
func openDescriptors(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// TestNoDescriptorLeak runs a burst of failed and cancelled probes and
// checks that the process's descriptors come back to where they were. It
// does not call t.Parallel: it counts the whole process's descriptors.
func TestNoDescriptorLeak(t *testing.T) {
	e := probetest.Start(t)
	// The target closes its end once the server has closed its own (or
	// the test ends), never on a timer of its own.
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("hello"))
		io.Copy(io.Discard, c)
		c.Close()
	})
	closed := probetest.ClosedPort(t, "tcp", "127.0.0.1:0")
	ctx := probetest.Context(t)
	// Warm up, so the gRPC connection is made before counting.
	if resp, err := e.Probe.Connect(ctx, &netprobev1.ConnectRequest{Target: tcpTarget(closed)}); err != nil || resp.GetError() == nil {
		t.Fatalf("Connect: %v, %v", resp, err)
	}
	base := openDescriptors(t)

	for range 20 {
		if _, err := e.Probe.Connect(ctx, &netprobev1.ConnectRequest{Target: tcpTarget(closed)}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Probe.Connect(ctx, &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "nosuch.test", Port: 80}}); err != nil {
			t.Fatal(err)
		}
		// The caller's deadline and the probe's timeout both outlast the
		// test: only the caller leaving can end this Fetch in time.
		fctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		stream, err := e.Probe.Fetch(fctx, &netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), KeepWriteOpen: true, Timeout: durationpb.New(30 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
	}

	// Closing is asynchronous on both ends: wait for the count to settle.
	var n int
	probetest.Eventually(t, func() bool {
		n = openDescriptors(t)
		return n <= base
	}, func() string { return fmt.Sprintf("%d descriptors open after the burst, %d before", n, base) })
}
