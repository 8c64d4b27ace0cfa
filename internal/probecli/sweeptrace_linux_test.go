package probecli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestSweepTraceChain sweeps three targets across traceChain's routers
// with --trace, in the CLI's process and through a probed: one reached
// (not traced: it did not fail), one that r2 drops (the last hop that
// answered, r1, then nothing), one that r2 rejects (its unreachable in
// words). After the matrix, a line for each failed one says where its
// path stopped, in the entries' order; with -o json each failed result's
// connect carries its path.
func TestSweepTraceChain(t *testing.T) {
	t.Parallel()
	c := traceChain(t)
	p := probetest.StartProbed(t, c.Client.Command(probedBin, "--listen=127.0.0.1:0"))
	args := []string{"sweep", "--trace", "--timeout", "1s", "198.18.4.1:80", "198.18.4.1:82", "198.18.4.1:83"}
	for _, mode := range []struct {
		name   string
		flags  []string
		column string
	}{{"in-process", nil, "in-process"}, {"probed", []string{"--server", p.Addr}, p.Addr}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			r := probeOn(t, c.Client, append(mode.flags, args...)...)
			want := "target " + mode.column + "\n" +
				"198.18.4.1:80 ok #\n" +
				"198.18.4.1:82 TIMEOUT\n" +
				"198.18.4.1:83 HOST_UNREACHABLE\n" +
				"probe: 198.18.4.1:82: TIMEOUT at CONNECT; last hop that answered: 198.18.1.1 (hop 1); nothing beyond it\n" +
				"probe: 198.18.4.1:83: HOST_UNREACHABLE at CONNECT; 198.18.2.1 (hop 2) answered unreachable: communication administratively prohibited (ICMP 3/13)\n" +
				"probe: sweep: 2 of 3 probes failed (3 targets, 1 server)\n"
			if got := normalize(r.stdout + r.stderr); r.code != exitSweepFailed || !matches(got, normalize(want)) {
				t.Errorf("exit %d, printed\n%s%s\nwant exit %d and\n%s", r.code, r.stdout, r.stderr, exitSweepFailed, want)
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		r := probeOn(t, c.Client, append([]string{"-o", "json"}, args...)...)
		ends := map[string]netprobev1.PathEnd{}
		hops := map[string]int{}
		for line := range strings.Lines(r.stdout) {
			// Each line is {"server": ..., "result": SweepResponse}.
			var out struct {
				Result json.RawMessage `json:"result"`
			}
			var sr netprobev1.SweepResponse
			if err := json.Unmarshal([]byte(line), &out); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			if err := protojson.Unmarshal(out.Result, &sr); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			target := fmt.Sprintf("%s:%d", sr.GetTarget().GetHost(), sr.GetTarget().GetPort())
			ends[target] = sr.GetConnect().GetPath().GetEnd()
			hops[target] = len(sr.GetConnect().GetPath().GetHops())
		}
		want := map[string]netprobev1.PathEnd{
			"198.18.4.1:80": netprobev1.PathEnd_PATH_END_UNSPECIFIED, // reached: no trace
			"198.18.4.1:82": netprobev1.PathEnd_PATH_END_SILENCE,
			"198.18.4.1:83": netprobev1.PathEnd_PATH_END_UNREACHABLE,
		}
		for target, end := range want {
			if ends[target] != end {
				t.Errorf("%s: path end %v, want %v (exit %d)\n%s", target, ends[target], end, r.code, r.stdout)
			}
		}
		if hops["198.18.4.1:83"] != 2 || hops["198.18.4.1:82"] < 2 {
			t.Errorf("hops %v, want r1 and r2 for :83, r1 then silence for :82", hops)
		}
	})
}
