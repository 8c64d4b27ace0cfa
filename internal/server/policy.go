package server

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/netprobe/netprobe/internal/reload"
	"github.com/netprobe/netprobe/policy"
)

// targetPolicy builds the target policy from the policy file and rules,
// denying every address and port the server answers on.
func targetPolicy(cfg Config) (*policy.Policy, error) {
	p := policy.New()
	for _, a := range cfg.Self {
		tcp, ok := a.(*net.TCPAddr)
		if !ok {
			continue // a Unix socket is not reachable by a probe
		}
		own, err := ownPrefixes(tcp)
		if err != nil {
			return nil, err
		}
		for _, prefix := range own {
			p.DenySelf(prefix, uint16(tcp.Port))
		}
	}
	if cfg.PolicyFile != "" {
		b, err := reload.ReadFile(cfg.PolicyFile)
		if err != nil {
			return nil, err
		}
		if err := p.Load(bytes.NewReader(b)); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.PolicyFile, err)
		}
	}
	for _, line := range cfg.PolicyRules {
		if err := p.AddLine(line); err != nil {
			return nil, fmt.Errorf("--allow/--deny: %w", err)
		}
	}
	return p, nil
}

// loopback is where a wildcard listener answers beside its interfaces'
// addresses: the whole of 127.0.0.0/8, not only 127.0.0.1.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// ownPrefixes lists the addresses a probe could reach a listener on: its
// own address, or for a wildcard listener the loopback ranges and every
// address of this machine's interfaces.
func ownPrefixes(lis *net.TCPAddr) ([]netip.Prefix, error) {
	ip := lis.AddrPort().Addr().Unmap()
	if !ip.IsUnspecified() {
		return []netip.Prefix{netip.PrefixFrom(ip, ip.BitLen())}, nil
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("own addresses: %w", err)
	}
	out := slices.Clone(loopback)
	for _, a := range ifaddrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			addr := p.Addr().Unmap().WithZone("")
			out = append(out, netip.PrefixFrom(addr, addr.BitLen()))
		}
	}
	return out, nil
}
