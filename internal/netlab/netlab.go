//go:build linux

// Package netlab builds throwaway networks for tests out of Linux network
// namespaces, so that failures loopback cannot produce (no route, an
// unreachable host, a firewall) come from a real kernel. It needs root and
// the ip and nft commands; every namespace is deleted when its test ends,
// and with it every link, route and firewall rule made in it.
package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// Require skips t when this machine cannot build namespaces (not root, no
// ip command), and fails it instead under CI, where they must run.
func Require(t testing.TB) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "needs root to create network namespaces"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs the ip command (iproute2)"
	} else if _, err := exec.LookPath("nft"); err != nil {
		why = "needs the nft command (nftables)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("netlab: %s, and CI=true forbids skipping", why)
	}
	t.Skipf("netlab: %s; skipped outside CI", why)
}

// Namespace is a network namespace with only loopback up.
type Namespace struct {
	Name string
}

// NewNamespace creates a namespace that is deleted when t ends, and checks
// that it is gone.
func NewNamespace(t testing.TB) *Namespace {
	t.Helper()
	Require(t)
	b := make([]byte, 4)
	rand.Read(b)
	ns := &Namespace{Name: "netprobe-" + hex.EncodeToString(b)}
	run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() {
		run(t, "ip", "netns", "del", ns.Name)
		if slices.Contains(Namespaces(t), ns.Name) {
			t.Errorf("netlab: namespace %s left behind", ns.Name)
		}
	})
	ns.IP(t, "link", "set", "lo", "up")
	return ns
}

// IP runs "ip ARGS" inside the namespace.
func (ns *Namespace) IP(t testing.TB, args ...string) {
	t.Helper()
	run(t, "ip", append([]string{"-n", ns.Name}, args...)...)
}

// NFT loads an nftables ruleset (nft -f syntax) into the namespace.
func (ns *Namespace) NFT(t testing.TB, ruleset string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("netlab: nft in %s: %v\n%s\n%s", ns.Name, err, out, ruleset)
	}
}

// Sysctl sets a kernel setting, such as "net.ipv4.neigh.eth0.retrans_time_ms",
// for the namespace.
func (ns *Namespace) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	run(t, "ip", "netns", "exec", ns.Name, "sysctl", "-q", "-w", key+"="+value)
}

// Command returns a command that runs name inside the namespace.
func (ns *Namespace) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Namespaces lists the named network namespaces on the machine.
func Namespaces(t testing.TB) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("netlab: ip netns list: %v", err)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("netlab: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
