package fleet

import (
	"net"
	"net/netip"
	"testing"
)

// TestIsLocal holds a peer to be this node only at an address of this
// machine: loopback, or an interface's; not one elsewhere.
func TestIsLocal(t *testing.T) {
	cases := map[string]bool{"127.0.0.9": true, "::1": true, "192.0.2.1": false, "2001:db8::77": false}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
			cases[n.IP.String()] = true
		}
	}
	for a, want := range cases {
		if got := isLocal(netip.MustParseAddr(a)); got != want {
			t.Errorf("isLocal(%s) = %v, want %v", a, got, want)
		}
	}
}
