package server

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/netprobe/netprobe/policy"
)

// targetPolicy builds the target policy from the policy file and rules,
// denying the server's own listening sockets.
func targetPolicy(cfg Config) (*policy.Policy, error) {
	var self []netip.AddrPort
	for _, a := range cfg.Self {
		tcp, ok := a.(*net.TCPAddr)
		if !ok {
			continue // a Unix socket is not reachable by a probe
		}
		own, err := ownAddrs(tcp)
		if err != nil {
			return nil, err
		}
		self = append(self, own...)
	}
	p := policy.New(self...)
	if cfg.PolicyFile != "" {
		if err := p.LoadFile(cfg.PolicyFile); err != nil {
			return nil, err
		}
	}
	for _, line := range cfg.PolicyRules {
		if err := p.AddLine(line); err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
	}
	return p, nil
}

// ownAddrs lists the addresses a probe could reach a listener on: its own
// address, or for a wildcard listener every address of this machine's
// interfaces.
func ownAddrs(lis *net.TCPAddr) ([]netip.AddrPort, error) {
	ap := lis.AddrPort()
	ip := ap.Addr().Unmap()
	if !ip.IsUnspecified() {
		return []netip.AddrPort{netip.AddrPortFrom(ip, ap.Port())}, nil
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("own addresses: %w", err)
	}
	var out []netip.AddrPort
	for _, a := range ifaddrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, netip.AddrPortFrom(p.Addr().Unmap(), ap.Port()))
		}
	}
	return out, nil
}
