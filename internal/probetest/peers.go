package probetest

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/net/icmp"
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

// RequireEcho skips t unless probed, run by this test's user, can send
// ICMP echoes: on Linux, with an ICMP datagram socket
// (net.ipv4.ping_group_range allows the user's group) or a raw one
// (root). Under CI, whose tests run as root, it fails t instead.
func RequireEcho(t testing.TB) {
	t.Helper()
	why := "probed sends ICMP echoes on Linux only"
	if runtime.GOOS == "linux" {
		for _, network := range []string{"udp4", "ip4:icmp"} {
			c, err := icmp.ListenPacket(network, "127.0.0.1")
			if err == nil {
				c.Close()
				return
			}
		}
		why = "this user may have no ICMP socket: neither net.ipv4.ping_group_range nor root allows one"
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s, and CI=true forbids skipping", why)
	}
	t.Skipf("%s; skipped outside CI", why)
}
