package service_test

import (
	"os"
	"syscall"
	"testing"

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
