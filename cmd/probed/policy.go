package main

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/netprobe/netprobe/policy"
)

// targetPolicy builds the target policy from the flags and the policy
// file, denying the server's own listening sockets.
func targetPolicy(cfg config, listeners ...net.Addr) (*policy.Policy, error) {
	var self []netip.AddrPort
	for _, a := range listeners {
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
	for _, r := range cfg.Deny {
		if err := p.AddLine("deny " + r); err != nil {
			return nil, fmt.Errorf("--deny: %w", err)
		}
	}
	for _, r := range cfg.Allow {
		if err := p.AddLine("allow " + r); err != nil {
			return nil, fmt.Errorf("--allow: %w", err)
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
