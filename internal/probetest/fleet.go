package probetest

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/netprobe/netprobe/internal/dnstest"
)

// FleetNode is one probed of a fleet StartFleet started.
type FleetNode struct {
	*Probed
	// Name is its --node-name, and Addr the address it listens on.
	Name string
	Addr netip.Addr
}

// StartFleet starts n probed (the binary bin), node i (from 1) named ni on
// 127.0.0.(base+i), all on one port, finding each other through the name
// fleet.test of the DNS server dns, as a headless Service's records list
// its pods; they resolve everything else through dns too, and args gives
// each node's extra flags (a later --node-name wins). It returns once
// every node has heard from every node.
func StartFleet(t testing.TB, bin string, dns *dnstest.Server, n, base int, args func(i int) []string) []*FleetNode {
	t.Helper()
	port := FreePort(t)
	_, p, _ := net.SplitHostPort(port)
	var addrs []netip.Addr
	for i := 1; i <= n; i++ {
		addrs = append(addrs, netip.AddrFrom4([4]byte{127, 0, 0, byte(base + i)}))
	}
	dns.SetAddrs("fleet.test", addrs...)
	var nodes []*FleetNode
	for i := 1; i <= n; i++ {
		a := []string{"--listen=" + net.JoinHostPort(addrs[i-1].String(), p), "--dns-server=" + dns.Addr,
			fmt.Sprintf("--node-name=n%d", i), "--peers=dns:///fleet.test:" + p}
		nodes = append(nodes, &FleetNode{Probed: StartProbed(t, exec.Command(bin, append(a, args(i)...)...)),
			Name: fmt.Sprintf("n%d", i), Addr: addrs[i-1]})
	}
	for _, nd := range nodes {
		Eventually(t, func() bool { return nd.Logged("peer up") >= n }, func() string {
			return fmt.Sprintf("%s heard from %d of %d nodes", nd.Name, nd.Logged("peer up"), n)
		})
	}
	return nodes
}
