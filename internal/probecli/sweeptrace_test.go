package probecli

import (
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/probetest"
)

// TestSweepTraceFlags: a sweep cannot trace UDP targets, and says so
// before any --server is asked.
func TestSweepTraceFlags(t *testing.T) {
	t.Parallel()
	server := probetest.Listen(t, "127.0.0.1:0", nil)
	r := probe(probetest.Context(t), nil, "--server", server.Addr(), "sweep", "--trace", "--udp", "127.0.0.1:53")
	if first, _, _ := strings.Cut(r.stderr, "\n"); r.code != exitUsage || first != "probe: --trace follows TCP targets only: leave out --udp" {
		t.Errorf("exit %d, stderr\n%s", r.code, r.stderr)
	}
	if !server.AcceptedNothing() {
		t.Error("the --server was reached for a command line that is refused")
	}
}
