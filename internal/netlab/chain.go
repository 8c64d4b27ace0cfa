//go:build linux

package netlab

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Chain is a routed path: a client, routers and a target in a line, each
// a namespace of its own, each joined to the next by a point-to-point
// link, with routes both ways. A trace from the client meets the routers
// in order: hop n is Routers[n-1], and the target is hop len(Routers)+1.
//
// Node n (the client is node 0, the target the last) and node n-1 share
// link n, whose prefixes are 198.18.n.0/24 and 2001:db8:n::/64: node n is
// .1 (::1) on it and node n-1 is .2 (::2). So each router and the target
// is known by its address on the link toward the client, 198.18.n.1 and
// 2001:db8:n::1, which is where its ICMP errors to the client come from.
type Chain struct {
	// Client is node 0, the one whose traces go out through the chain; its
	// addresses are 198.18.1.2 and 2001:db8:1::2.
	Client *Host
	// Routers forward between the client and the target; Routers[i] is
	// node i+1.
	Routers []*Host
	// Target is the last node.
	Target *Host
}

// NewChain builds a chain of the given number of routers (1 to 253),
// torn down with its namespaces when t ends. Routers forward IPv4 and
// IPv6 and send ICMP errors without the kernel's rate limit (one a second
// to a peer by default), so that hop after hop answers at once.
func NewChain(t testing.TB, routers int) *Chain {
	t.Helper()
	Require(t)
	if routers < 1 || routers > 253 {
		t.Fatalf("netlab: a chain has 1 to 253 routers, not %d", routers)
	}
	// Registered first, so it runs last: after every namespace is gone.
	t.Cleanup(func() {
		if left := LinksLeft(t); len(left) > 0 {
			t.Errorf("netlab: links left on the machine: %v", left)
		}
	})
	c := &Chain{}
	nodes := make([]*Host, routers+2)
	for n := range nodes {
		nodes[n] = &Host{Namespace: NewNamespace(t), V4: chainAddr4(n, 1), V6: chainAddr6(n, 1)}
		// No duplicate address detection, for the link-local addresses
		// too: an interface's IPv6 is usable as soon as its link is up.
		nodes[n].Sysctl(t, "net.ipv6.conf.default.accept_dad", "0")
	}
	nodes[0].V4, nodes[0].V6 = chainAddr4(1, 2), chainAddr6(1, 2)
	c.Client, c.Routers, c.Target = nodes[0], nodes[1:routers+1], nodes[routers+1]
	last := len(nodes) - 1

	// Link n joins node n-1's "next" to node n's "prev". Made inside the
	// namespaces, the two ends never touch the machine's own.
	for n := 1; n <= last; n++ {
		left, right := nodes[n-1], nodes[n]
		left.IP(t, "link", "add", "next", "type", "veth", "peer", "name", "prev", "netns", right.Name)
		left.addLinkAddrs(t, "next", n, 2)
		right.addLinkAddrs(t, "prev", n, 1)
	}
	for n, h := range nodes {
		// The chain's ICMP errors must not wait on the kernel's rate limit.
		h.Sysctl(t, "net.ipv4.icmp_ratelimit", "0")
		h.Sysctl(t, "net.ipv6.icmp.ratelimit", "0")
		switch n {
		case 0:
			h.IP(t, "route", "add", "default", "via", chainAddr4(1, 1).String())
			h.IP(t, "-6", "route", "add", "default", "via", chainAddr6(1, 1).String())
		case last:
			h.IP(t, "route", "add", "default", "via", chainAddr4(n, 2).String())
			h.IP(t, "-6", "route", "add", "default", "via", chainAddr6(n, 2).String())
		default:
			h.Sysctl(t, "net.ipv4.ip_forward", "1")
			h.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
			// The links beyond the next node's, through it; those before
			// the previous node's, through that one.
			for m := n + 2; m <= last; m++ {
				h.IP(t, "route", "add", chainPrefix4(m).String(), "via", chainAddr4(n+1, 1).String())
				h.IP(t, "-6", "route", "add", chainPrefix6(m).String(), "via", chainAddr6(n+1, 1).String())
			}
			for m := 1; m < n; m++ {
				h.IP(t, "route", "add", chainPrefix4(m).String(), "via", chainAddr4(n, 2).String())
				h.IP(t, "-6", "route", "add", chainPrefix6(m).String(), "via", chainAddr6(n, 2).String())
			}
		}
	}
	for _, h := range nodes {
		h.waitLinksUp(t)
	}
	return c
}

// waitLinksUp waits until every link of the host but loopback is up: a
// veth's carrier comes up a moment after both its ends are, and until it
// has, what is sent on it is lost (the first SYN of a test, retried only
// a second later).
func (h *Host) waitLinksUp(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("ip", "-n", h.Name, "-o", "link", "show").Output()
		if err != nil {
			t.Fatalf("netlab: ip -n %s link show: %v", h.Name, err)
		}
		down := ""
		for line := range strings.Lines(string(out)) {
			if f := strings.Fields(line); len(f) > 1 && f[1] != "lo:" && !strings.Contains(line, " state UP ") {
				down = f[1]
			}
		}
		if down == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("netlab: link %s of %s is not up after 5s", down, h.Name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// addLinkAddrs gives the host address number host of link n on dev, and
// brings dev up.
func (h *Host) addLinkAddrs(t testing.TB, dev string, n, host int) {
	t.Helper()
	h.IP(t, "addr", "add", fmt.Sprintf("%s/24", chainAddr4(n, host)), "dev", dev)
	// nodad: the address is usable at once instead of after duplicate
	// address detection.
	h.IP(t, "addr", "add", fmt.Sprintf("%s/64", chainAddr6(n, host)), "dev", dev, "nodad")
	h.IP(t, "link", "set", dev, "up")
}

// chainAddr4 is address number host of link n: 198.18.n.host.
func chainAddr4(n, host int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(n), byte(host)})
}

// chainAddr6 is address number host of link n: 2001:db8:n::host.
func chainAddr6(n, host int) netip.Addr {
	a := netip.MustParseAddr("2001:db8::").As16()
	a[4], a[5] = byte(n>>8), byte(n)
	a[15] = byte(host)
	return netip.AddrFrom16(a)
}

func chainPrefix4(n int) netip.Prefix { return netip.PrefixFrom(chainAddr4(n, 0), 24) }
func chainPrefix6(n int) netip.Prefix { return netip.PrefixFrom(chainAddr6(n, 0), 64) }

// Filter is what a router does to the packets it would forward to the
// target.
type Filter string

// The filters of Chain.Filter.
const (
	// Drop drops them without a word.
	Drop Filter = "drop"
	// Reject answers each with an ICMP destination unreachable,
	// communication administratively prohibited (type 3, code 13), or for
	// IPv6 an ICMPv6 one (type 1, code 1).
	Reject Filter = "reject"
)

// Filter makes router number hop (1 for the first router) apply f to the
// TCP segments for the target's port that come in, both families. It is
// an ingress filter, as a router's access list is: it acts before the
// router looks at the TTL, so that the router does not answer time
// exceeded for them either, and a trace's last hop to answer is the one
// before it. Its firewall goes with its namespace.
func (c *Chain) Filter(t testing.TB, hop int, port uint16, f Filter) {
	t.Helper()
	c.filter(t, hop, "tcp", port, f)
}

// FilterUDP is Filter for the UDP datagrams to the target's port.
func (c *Chain) FilterUDP(t testing.TB, hop int, port uint16, f Filter) {
	t.Helper()
	c.filter(t, hop, "udp", port, f)
}

func (c *Chain) filter(t testing.TB, hop int, proto string, port uint16, f Filter) {
	t.Helper()
	r := c.router(t, hop)
	v4, v6 := "drop", "drop"
	if f == Reject {
		v4, v6 = "reject with icmp type admin-prohibited", "reject with icmpv6 type admin-prohibited"
	}
	r.NFT(t, fmt.Sprintf(`table inet netlab_chain {
	chain ingress {
		type filter hook prerouting priority 0;
		ip daddr %s %s dport %d %s
		ip6 daddr %s %s dport %d %s
	}
}
`, c.Target.V4, proto, port, v4, c.Target.V6, proto, port, v6))
}

// LoseEveryOther makes router number hop drop every other UDP datagram
// to the target's port whose TTL (IPv6 hop limit) runs out there, the
// first, third and so on, counted apart for each family (nft's numgen):
// the probes of a trace that this router would answer with time exceeded,
// half of them lost, as a lossy hop in mtr is, while those that go beyond
// it all pass. The loss is exact, where a random one would make a test
// flaky, and UDP sends nothing again that could shift the count.
func (c *Chain) LoseEveryOther(t testing.TB, hop int, port uint16) {
	t.Helper()
	r := c.router(t, hop)
	// A datagram comes in with the TTL the router before it left: 1 means
	// it runs out here.
	r.NFT(t, fmt.Sprintf(`table inet netlab_lossy {
	chain ingress {
		type filter hook prerouting priority 0;
		ip daddr %s udp dport %d ip ttl 1 numgen inc mod 2 == 0 drop
		ip6 daddr %s udp dport %d ip6 hoplimit 1 numgen inc mod 2 == 0 drop
	}
}
`, c.Target.V4, port, c.Target.V6, port))
}

// FilterEcho makes node number node apply f to the ICMP echo requests
// for the target with payload bytes of data that come in, both families:
// router 1 to n as Filter does, at its ingress, or the target itself
// (node n+1), before it answers them. The size stands for Filter's port:
// an echo of another size passes.
func (c *Chain) FilterEcho(t testing.TB, node, payload int, f Filter) {
	t.Helper()
	h := c.Target
	if node != len(c.Routers)+1 {
		h = c.router(t, node)
	}
	v4, v6 := "drop", "drop"
	if f == Reject {
		v4, v6 = "reject with icmp type admin-prohibited", "reject with icmpv6 type admin-prohibited"
	}
	// IPv4's length counts its header of 20 bytes and the ICMP header's 8;
	// IPv6's counts what follows its own header.
	h.NFT(t, fmt.Sprintf(`table inet netlab_chain {
	chain ingress {
		type filter hook prerouting priority 0;
		ip daddr %s ip length %d icmp type echo-request %s
		ip6 daddr %s ip6 length %d icmpv6 type echo-request %s
	}
}
`, c.Target.V4, 28+payload, v4, c.Target.V6, 8+payload, v6))
}

// NoRoute takes router number hop's routes to the target's link away, both
// families: it then answers what it would forward there with an ICMP
// network unreachable (ICMPv6 no route to destination).
func (c *Chain) NoRoute(t testing.TB, hop int) {
	t.Helper()
	r := c.router(t, hop)
	n := len(c.Routers) + 1
	r.IP(t, "route", "del", chainPrefix4(n).String())
	r.IP(t, "-6", "route", "del", chainPrefix6(n).String())
}

// router returns router number hop, counted from 1.
func (c *Chain) router(t testing.TB, hop int) *Host {
	t.Helper()
	if hop < 1 || hop > len(c.Routers) {
		t.Fatalf("netlab: the chain has routers 1 to %d, not %d", len(c.Routers), hop)
	}
	return c.Routers[hop-1]
}
