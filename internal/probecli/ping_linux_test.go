package probecli

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// The echoes' payload sizes, one per behaviour, as cmd/probed's TestICMP
// has them: netlab.Chain.FilterEcho tells echoes apart by size.
const (
	echoDropped  = 101 // the target drops them
	echoRejected = 102 // r2 answers them administratively prohibited
)

// TestPingChain runs probe ping across a chain of namespaces, client -
// r1 - r2 - r3 - target, with the service in the CLI's process and in a
// probed beside it (both root: a new namespace's ping_group_range allows
// no group, so the echoes go out from raw sockets): replies, whose TTL
// counts the three routers and whose summary counts them all; a target
// that drops the echoes (100% loss, the timeout's exit code); r2 rejecting
// them (its unreachable in words, with its address); a TTL that runs out
// at r2 (its time exceeded).
func TestPingChain(t *testing.T) {
	t.Parallel()
	c := netlab.NewChain(t, 3)
	c.FilterEcho(t, 4, echoDropped, netlab.Drop)
	c.FilterEcho(t, 2, echoRejected, netlab.Reject)
	p := probetest.StartProbed(t, c.Client.Command(probedBin, "--listen=127.0.0.1:0"))
	timedOut := func(seq string) string {
		return "icmp_seq=" + seq + ": echo 198.18.4.1: timed out (stage ECHO, reason TIMEOUT)\n"
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // stdout, then stderr, as normalize leaves them
	}{
		{"replies", []string{"ping", "-c", "3", "-i", "10ms", "198.18.4.1"}, exitOK,
			"64 bytes from 198.18.4.1: icmp_seq=1 ttl=61 time=#\n" +
				"64 bytes from 198.18.4.1: icmp_seq=2 ttl=61 time=#\n" +
				"64 bytes from 198.18.4.1: icmp_seq=3 ttl=61 time=#\n" +
				"--- 198.18.4.1 ping statistics ---\n" +
				"3 packets transmitted, 3 received, 0% packet loss\n" +
				"rtt min/avg/max/mdev = #/#/#/#\n"},
		{"replies, IPv6, larger", []string{"ping", "-6", "-c", "1", "--size", "1000", "2001:db8:4::1"}, exitOK,
			"1008 bytes from 2001:db8:4::1: icmp_seq=1 ttl=61 time=#\n" +
				"--- 2001:db8:4::1 ping statistics ---\n" +
				"1 packets transmitted, 1 received, 0% packet loss\n" +
				"rtt min/avg/max/mdev = #/#/#/#\n"},
		{"dropped by the target", []string{"ping", "-c", "2", "-i", "10ms", "--timeout", "300ms", "--size", "101", "198.18.4.1"}, exitTimeout,
			timedOut("1") + timedOut("2") +
				"--- 198.18.4.1 ping statistics ---\n" +
				"2 packets transmitted, 0 received, 100% packet loss\n" +
				"probe: 2 of 2 probes failed, the last: " + timedOut("2")},
		{"rejected at r2", []string{"ping", "-c", "1", "--size", "102", "198.18.4.1"}, exitConnect,
			"icmp_seq=1: 198.18.2.1 answered unreachable: communication administratively prohibited (ICMP 3/13); echo 198.18.4.1: no route to host (stage ECHO, reason HOST_UNREACHABLE, errno EHOSTUNREACH)\n" +
				"--- 198.18.4.1 ping statistics ---\n" +
				"1 packets transmitted, 0 received, 100% packet loss\n" +
				"probe: 1 of 1 probe failed, the last: icmp_seq=1: 198.18.2.1 answered ...\n"},
		{"rejected at r2, IPv6", []string{"ping", "-c", "1", "--size", "102", "2001:db8:4::1"}, exitConnect,
			"icmp_seq=1: 2001:db8:2::1 answered unreachable: communication administratively prohibited (ICMPv6 1/1); echo 2001:db8:4::1: permission denied (stage ECHO, reason PROHIBITED, errno EACCES)\n" +
				"...\n"},
		{"TTL out at r2", []string{"ping", "-c", "1", "-t", "2", "198.18.4.1"}, exitConnect,
			"icmp_seq=1: 198.18.2.1 answered time exceeded (ICMP 11/0); echo 198.18.4.1: time to live exceeded in transit (stage ECHO, reason TTL_EXCEEDED)\n" +
				"...\n"},
	} {
		bothWays(t, c.Client, p.Addr, tc.name, tc.args, tc.code, tc.want)
	}
}

// TestPingSocketDenied runs probe ping, the service in its process, as
// uid 65532 with no capability in a namespace whose
// net.ipv4.ping_group_range is "1 0" (no group): it may have no ICMP
// socket of either kind, and says so with the service's message, which
// names the sysctl, the process's group and CAP_NET_RAW; it stops at the
// first echo, which the next would not change, and exits 7.
func TestPingSocketDenied(t *testing.T) {
	t.Parallel()
	host := &netlab.Host{Namespace: netlab.NewNamespace(t)}
	host.Sysctl(t, "net.ipv4.ping_group_range", "1 0")
	bin := probetest.SharedExecutable(t, probeBin)
	dir := filepath.Dir(bin)
	// Started from the namespace's thread (ip netns exec would run as
	// uid 65532 too, and may not).
	cmd := exec.Command(bin, "ping", "-c", "3", "-i", "10ms", "127.0.0.1")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65532, Gid: 65532, Groups: []uint32{}}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var exit *exec.ExitError
	if err := host.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); !errors.As(err, &exit) {
		t.Fatalf("probe ping: %v, want it to fail\n%s", err, stderr.String())
	}
	denied := "icmp_seq=1: socket 127.0.0.1: permission denied (stage SOCKET, reason PROHIBITED, errno EACCES): socket: permission denied: an ICMP echo needs a datagram ICMP socket, which the sysctl net.ipv4.ping_group_range (\"1 0\" here) must allow to the process's group (gid 65532), or a raw socket, which needs CAP_NET_RAW\n"
	want := denied + "--- 127.0.0.1 ping statistics ---\n1 packets transmitted, 0 received, 100% packet loss\n"
	if code := exit.ExitCode(); code != exitConnect || stdout.String() != want || !strings.Contains(stderr.String(), "ping_group_range") {
		t.Errorf("exit %d, stdout\n%s\nstderr\n%s\nwant exit %d and stdout\n%s", code, stdout.String(), stderr.String(), exitConnect, want)
	}
}
