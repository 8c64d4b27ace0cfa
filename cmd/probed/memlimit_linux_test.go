package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/probetest"
)

// memoryCgroup makes a memory cgroup limited to limit bytes, removed when
// the test ends, and returns its directory: under cgroup v1's memory
// hierarchy, or cgroup v2's. It needs root, and fails under CI without it.
func memoryCgroup(t *testing.T, limit int64) string {
	t.Helper()
	name := fmt.Sprintf("netprobe-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	var dir, limitFile string
	switch {
	case fileExists("/sys/fs/cgroup/memory/cgroup.procs"):
		dir, limitFile = filepath.Join("/sys/fs/cgroup/memory", name), "memory.limit_in_bytes"
	case fileExists("/sys/fs/cgroup/cgroup.controllers"):
		dir, limitFile = filepath.Join("/sys/fs/cgroup", name), "memory.max"
	}
	if dir == "" || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("a memory cgroup needs root and a cgroup file system, and CI=true forbids skipping")
		}
		t.Skip("a memory cgroup needs root and a cgroup file system; skipped outside CI")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("removing the cgroup: %v", err)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(fmt.Sprint(limit)), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// inCgroup runs probed with args in the cgroup dir, from its first
// instruction on.
func inCgroup(dir string, args ...string) *exec.Cmd {
	return exec.Command("sh", append([]string{"-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, dir, probedBin}, args...)...)
}

// TestMemoryLimit runs probed in a cgroup limited to 256 MiB: it holds
// its Go heap to 90% of that (GOMEMLIMIT, go_gc_gomemlimit_bytes), and
// says so; GOMEMLIMIT given in the environment wins.
func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	const limit = 256 << 20
	for _, tc := range []struct {
		name string
		env  []string
		want float64
	}{
		{"from the cgroup", nil, limit * 0.9},
		{"GOMEMLIMIT", []string{"GOMEMLIMIT=100MiB"}, 100 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := inCgroup(memoryCgroup(t, limit), "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0")
			cmd.Env = append(os.Environ(), tc.env...)
			p := probetest.StartProbed(t, cmd)
			got, _ := metricValue(scrape(t, "http://"+p.MetricsAddr+"/metrics")["go_gc_gomemlimit_bytes"], nil)
			if int64(got) != int64(tc.want) {
				t.Errorf("go_gc_gomemlimit_bytes = %v, want %v", got, int64(tc.want))
			}
			if p.Logged("memory limit") != 1 {
				t.Errorf("probed did not log its memory limit")
			}
		})
	}
}
