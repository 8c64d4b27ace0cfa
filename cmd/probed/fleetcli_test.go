package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/probetest"
)

// sweepCLI runs probe sweep -s entry args through the binary (probed
// called as probe) and returns its exit code, stdout and stderr.
func sweepCLI(t *testing.T, entry string, args ...string) (int, string, string) {
	t.Helper()
	probe := filepath.Join(t.TempDir(), "probe")
	if err := os.Symlink(probedBin, probe); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(probetest.Context(t), probe, append([]string{"sweep", "-s", entry}, args...)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), stdout.String(), stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

// TestFanoutCLISameName sweeps from a fleet of three whose nodes all kept
// one --node-name, as a fleet that kept the default (the host name) does:
// the CLI merged them into one column "vm", "reachable from 1 of 1 node",
// and with one of them down printed "1 of 3 nodes failed as a whole" yet
// exited 0. Each node is now a column, the entry vm and the others
// vm@ADDRESS; the counts are of the three; a node down fails the sweep
// without --quorum, and --quorum 2 lets it pass.
func TestFanoutCLISameName(t *testing.T) {
	t.Parallel()
	nodes := startFleet(t, 3, 80, func(int) []string { return []string{"--node-name=vm"} })
	_, port, _ := strings.Cut(nodes[0].Addr, ":")
	live := probetest.Listen(t, "127.0.0.1:0", nil).Addr()
	code, out, errOut := sweepCLI(t, nodes[0].Addr, "--from", "all", live)
	header := fmt.Sprintf("target +vm +vm@127\\.0\\.0\\.82:%[1]s +vm@127\\.0\\.0\\.83:%[1]s\n", port)
	if !regexp.MustCompile("^"+header+regexp.QuoteMeta(live)+` +ok \S+ +ok \S+ +ok \S+`+"\n$").MatchString(out) || code != 0 ||
		errOut != "probe: "+live+" reachable from 3 of 3 nodes\n" {
		t.Errorf("--from all: exit %d\n%s%s", code, out, errOut)
	}

	nodes[2].Stop()
	down := fmt.Sprintf("vm@127.0.0.83:%s", port)
	for _, tc := range []struct {
		flags []string
		code  int
		last  string
	}{
		{nil, 10, "probe: sweep: " + live + " not reached from every node\n"},
		{[]string{"--quorum", "2"}, 0, "probe: 1 of 3 nodes failed as a whole\n"},
		{[]string{"--quorum", "3"}, 10, "probe: sweep: " + live + " reached from fewer than 3 nodes (--quorum)\n"},
	} {
		code, out, errOut := sweepCLI(t, nodes[0].Addr, append([]string{"--from", "all", live}, tc.flags...)...)
		if code != tc.code || !regexp.MustCompile("^"+header+regexp.QuoteMeta(live)+` +ok \S+ +ok \S+ +UNAVAILABLE`+"\n$").MatchString(out) ||
			!strings.HasPrefix(errOut, "probe: node "+down+": UNAVAILABLE: ") ||
			!strings.Contains(errOut, "\nprobe: "+live+" reachable from 2 of 3 nodes\nprobe: 1 of 3 nodes failed as a whole\n") ||
			!strings.HasSuffix(errOut, tc.last) {
			t.Errorf("%s down, %v: exit %d, want %d\n%s%s", down, tc.flags, code, tc.code, out, errOut)
		}
	}
}
