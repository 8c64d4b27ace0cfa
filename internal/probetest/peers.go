package probetest

import (
	"net"
	"os"
	"os/exec"
	"testing"
)

// Program finds a program a test runs as a real peer (Prometheus, a
// browser). Without it, t is skipped with a line saying what to install,
// or fails under CI (CI=true), whose .ci/run installs it.
func Program(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (%s), and CI=true forbids skipping", name, install)
	}
	t.Skipf("%s is not installed: %s", name, install)
	return ""
}

// FreePort returns a loopback address with a port nothing listens on
// now, for a peer that takes its address on its command line.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
