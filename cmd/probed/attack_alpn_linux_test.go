package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// maxRefusalBytes bounds an answer refusing a request, its message and
// details together, and maxLogLine a log line: a few KiB whatever the
// request.
const (
	maxRefusalBytes = 8 << 10
	maxLogLine      = 8 << 10
)

// TestAttackALPNBomb plays the alpn bomb on the real binary in its
// default configuration, with no token: TLS options whose alpn holds
// empty strings, two bytes each on the wire. 540,000 of them in a Fetch
// of 1 MB once grew probed from 19 to 647 MiB and answered, after 4 s, with
// a 29 MB message and as large a BadRequest detail and log line; 12 at
// once were OOM-killed in 3 GiB. Now the 540,000 are refused before they
// are decoded, over the elements a request may hold, naming the field;
// 60,000 (within that cap) and a Connect's 32,000 (its 64 KiB) are
// refused by validation, over alpn's cap of 16, before any entry is
// looked at. Twelve Fetches and Connects of each size at once, and two
// Sweeps (a caller runs four at once): every answer names tls.alpn in a
// few KiB, every log line is a few KiB, and probed's peak RSS grows by
// less than maxGrowth.
func TestAttackALPNBomb(t *testing.T) {
	t.Parallel()
	v, probe := startDefault(t)
	tls := func(n int) *netprobev1.TlsOptions { return &netprobev1.TlsOptions{Alpn: make([]string, n)} }
	target := &netprobev1.Target{Host: "192.0.2.1", Port: 443}
	calls := []struct {
		name  string
		times int
		call  func() error
		code  codes.Code
		// says is what the answer's message holds.
		says string
	}{
		{"Fetch of 540,000", 12, func() error {
			return ended(probe.Fetch(probetest.Context(t), &netprobev1.FetchRequest{Target: target, Tls: tls(540000)}))
		}, codes.ResourceExhausted, "the cap is passed at netprobe.v1.TlsOptions.alpn"},
		{"Fetch of 60,000", 12, func() error {
			return ended(probe.Fetch(probetest.Context(t), &netprobev1.FetchRequest{Target: target, Tls: tls(60000)}))
		}, codes.InvalidArgument, "tls.alpn: 60000 protocols is over the cap of 16"},
		{"Connect of 32,000", 12, func() error {
			_, err := probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: target, Tls: tls(32000)})
			return err
		}, codes.InvalidArgument, "tls.alpn: 32000 protocols is over the cap of 16"},
		{"Sweep of 540,000", 2, func() error {
			return ended(probe.Sweep(probetest.Context(t), &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{{Target: target, Tls: tls(540000)}}}))
		}, codes.ResourceExhausted, "the cap is passed at netprobe.v1.TlsOptions.alpn"},
		{"Sweep of 60,000", 2, func() error {
			return ended(probe.Sweep(probetest.Context(t), &netprobev1.SweepRequest{Targets: []*netprobev1.SweepTarget{{Target: target, Tls: tls(60000)}}}))
		}, codes.InvalidArgument, "targets[0].tls.alpn: 60000 protocols is over the cap of 16"},
	}
	base := v.footprint(t)
	resetPeak(t, v.Cmd.Process.Pid)
	logged := v.Logged("finished call")
	var wg sync.WaitGroup
	total := 0
	for _, c := range calls {
		for range c.times {
			total++
			wg.Go(func() {
				err := c.call()
				st := status.Convert(err)
				size := proto.Size(st.Proto())
				if st.Code() != c.code || !strings.Contains(st.Message(), c.says) || size > maxRefusalBytes {
					t.Errorf("%s: %v, %.200q, %d bytes; want %v saying %q in at most %d bytes", c.name, st.Code(), st.Message(), size, c.code, c.says, maxRefusalBytes)
				}
				if c.code == codes.InvalidArgument && !namesField(st, "tls.alpn") {
					t.Errorf("%s: details %v do not name tls.alpn", c.name, st.Details())
				}
			})
		}
	}
	wg.Wait()
	peak, err := probetest.PeakRSS(v.Cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("peak RSS %.1f MiB, from %v", float64(peak)/(1<<20), base)
	if peak-base.rss >= maxGrowth {
		t.Errorf("peak RSS grew by %.1f MiB under %d calls, want less than %d MiB", float64(peak-base.rss)/(1<<20), total, maxGrowth>>20)
	}
	probetest.Eventually(t, func() bool { return v.Logged("finished call") >= logged+total }, func() string {
		return fmt.Sprintf("%d calls logged of %d (a line over 1 MiB stops the log's reading); longest line %d bytes", v.Logged("finished call")-logged, total, v.LongestLine())
	})
	if n := v.LongestLine(); n > maxLogLine {
		t.Errorf("a log line of %d bytes, want at most %d", n, maxLogLine)
	}
	v.grew(t, base)
}

// namesField reports whether st's BadRequest detail names a field that
// ends with field.
func namesField(st *status.Status, field string) bool {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, fv := range br.GetFieldViolations() {
				if strings.HasSuffix(fv.GetField(), field) {
					return true
				}
			}
		}
	}
	return false
}

// ended receives what a stream sends until it ends, and returns the
// error it ends with (nil for a clean end).
func ended[T any](stream interface{ Recv() (T, error) }, err error) error {
	for err == nil {
		_, err = stream.Recv()
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// resetPeak makes process pid's peak RSS (VmHWM) its RSS now
// (proc(5), clear_refs).
func resetPeak(t *testing.T, pid int) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
}
