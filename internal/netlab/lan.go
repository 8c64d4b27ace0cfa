//go:build linux

package netlab

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

// LAN is one Ethernet segment: a bridge in a namespace of its own, and hosts
// plugged into it, numbered from 1 in 198.18.0.0/24 and 2001:db8::/64.
// Addresses outside the LAN have no route from its hosts.
type LAN struct {
	sw    *Namespace
	hosts int
}

// LAN prefixes; every address a LAN uses is in the benchmarking and
// documentation ranges.
var (
	Prefix4 = netip.MustParsePrefix("198.18.0.0/24")
	Prefix6 = netip.MustParsePrefix("2001:db8::/64")
)

// NewLAN makes an empty LAN, torn down with its hosts when t ends.
func NewLAN(t testing.TB) *LAN {
	t.Helper()
	Require(t)
	// Registered first, so it runs last: after every namespace is gone.
	t.Cleanup(func() {
		if left := LinksLeft(t); len(left) > 0 {
			t.Errorf("netlab: links left on the machine: %v", left)
		}
	})
	sw := NewNamespace(t)
	sw.IP(t, "link", "add", "br0", "type", "bridge")
	sw.IP(t, "link", "set", "br0", "up")
	return &LAN{sw: sw}
}

// Host is a namespace with one interface, eth0, on a LAN.
type Host struct {
	*Namespace
	// V4 and V6 are the host's addresses.
	V4, V6 netip.Addr
}

// AddHost plugs a new host into the LAN. Its addresses end in the host's
// number: the first host added is 198.18.0.1 and 2001:db8::1. The host has
// no default route.
func (l *LAN) AddHost(t testing.TB) *Host {
	t.Helper()
	l.hosts++
	n := l.hosts
	h := &Host{Namespace: NewNamespace(t), V4: l.Addr4(n), V6: l.Addr6(n)}
	port := fmt.Sprintf("port%d", n)
	// Made inside the namespaces, the two ends never touch the machine's
	// own: nothing is left on it if the test dies.
	l.sw.IP(t, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.Name)
	l.sw.IP(t, "link", "set", port, "master", "br0", "up")
	h.IP(t, "addr", "add", fmt.Sprintf("%s/%d", h.V4, Prefix4.Bits()), "dev", "eth0")
	// nodad: the address is usable at once instead of after duplicate
	// address detection.
	h.IP(t, "addr", "add", fmt.Sprintf("%s/%d", h.V6, Prefix6.Bits()), "dev", "eth0", "nodad")
	h.IP(t, "link", "set", "eth0", "up")
	return h
}

// Addr4 is the IPv4 address of host number n, whether or not it exists.
func (l *LAN) Addr4(n int) netip.Addr {
	a := Prefix4.Addr().As4()
	a[3] = byte(n)
	return netip.AddrFrom4(a)
}

// Addr6 is the IPv6 address of host number n, whether or not it exists.
func (l *LAN) Addr6(n int) netip.Addr {
	a := Prefix6.Addr().As16()
	a[15] = byte(n)
	return netip.AddrFrom16(a)
}

// FastNeighbors makes the host give up on an address that does not answer
// ARP or neighbor discovery after two tries 100ms apart, instead of three
// a second apart, so that tests of a missing host are quick.
func (h *Host) FastNeighbors(t testing.TB) {
	t.Helper()
	for _, fam := range []string{"ipv4", "ipv6"} {
		h.Sysctl(t, "net."+fam+".neigh.eth0.mcast_solicit", "2")
		h.Sysctl(t, "net."+fam+".neigh.eth0.retrans_time_ms", "100")
	}
}

// LinksLeft lists the links in the machine's own namespace whose names a
// LAN uses; it should be empty at all times.
func LinksLeft(t testing.TB) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("netlab: ip link show: %v", err)
	}
	var left []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) > 1 && (strings.HasPrefix(f[1], "port") || f[1] == "br0:") {
			left = append(left, strings.TrimSuffix(f[1], ":"))
		}
	}
	return left
}
