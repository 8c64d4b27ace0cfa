package client

import (
	"net"
	"strconv"
	"strings"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// target turns a network and "host:port" address, as net.Dial takes them,
// into the request's Target: for an ICMP network ("icmp", "icmp4",
// "icmp6") the address is a host alone, as net.Dial's "ip4:icmp" takes
// it. Only the syntax is checked here; the server judges the rest and
// names any bad field.
func target(network, address string) (*netprobev1.Target, error) {
	t := &netprobev1.Target{}
	switch network {
	case "tcp", "tcp4", "tcp6":
		t.Network = netprobev1.Network_NETWORK_TCP
	case "udp", "udp4", "udp6":
		t.Network = netprobev1.Network_NETWORK_UDP
	case "icmp", "icmp4", "icmp6":
		t.Network = netprobev1.Network_NETWORK_ICMP
	default:
		return nil, &net.OpError{Op: "probe", Net: network, Err: net.UnknownNetworkError(network)}
	}
	switch network[len(network)-1] {
	case '4':
		t.IpFamily = netprobev1.IpFamily_IP_FAMILY_IPV4
	case '6':
		t.IpFamily = netprobev1.IpFamily_IP_FAMILY_IPV6
	}
	if t.Network == netprobev1.Network_NETWORK_ICMP {
		t.Host = strings.TrimSuffix(strings.TrimPrefix(address, "["), "]")
		return t, nil
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "probe", Net: network, Err: err}
	}
	t.Host = host
	if n, err := strconv.ParseUint(port, 10, 16); err == nil && n > 0 {
		t.Port = uint32(n)
	} else if isDigits(port) {
		return nil, &net.OpError{Op: "probe", Net: network, Err: &net.AddrError{Err: "invalid port", Addr: address}}
	} else {
		t.Service = port
	}
	return t, nil
}

func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
